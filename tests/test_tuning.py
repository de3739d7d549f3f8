"""The search space, without running Ray."""

import pytest

from ecomtrain.config import load_config
from tuning.space import param_space, subsets, trial_config


def test_demo_space_is_subsets_times_ranks():
    cfg = load_config()
    space = param_space(cfg)
    points = space["subset"]["grid_search"]
    assert [p["id"] for p in points] == ["concept+behavior", "all-4"]
    assert space["rank"]["grid_search"] == [4, 16]
    all4 = points[1]
    assert all4["n_tasks"] == 10 and all4["n_capabilities"] == 4
    assert points[0]["n_capabilities"] == 2


def test_capability_names_expand_in_subsets():
    cfg = load_config(None, ["sweep.subsets={multi: [multi-lingual-abilities]}"])
    (point,) = subsets(cfg)
    assert point["n_capabilities"] == 1
    assert "title_translation" in point["tasks"]


def test_unknown_task_in_subset_is_rejected():
    cfg = load_config(None, ["sweep.subsets={bad: [no_such_task]}"])
    with pytest.raises(KeyError, match="no_such_task"):
        subsets(cfg)


def test_trial_config_sets_tasks_rank_alpha():
    base = load_config()
    point = {"subset": subsets(base)[0], "rank": 32}
    cfg = trial_config(base, point)
    assert cfg.lora.rank == 32 and cfg.lora.alpha == 64.0
    assert cfg.data.tasks == point["subset"]["tasks"]
    assert base.lora.rank == 8  # the base config is not modified
