"""The search space and the sweep report, without running Ray."""

import csv
from types import SimpleNamespace

import pytest

from ecomtrain.config import load_config
from tuning.report import plot_scores, table, trial_rows, write_csv
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


def _result(subset, rank, score, error=None):
    return SimpleNamespace(
        config={
            "subset": {"id": subset, "tasks": ["a", "b"], "n_tasks": 2, "n_capabilities": 1},
            "rank": rank,
        },
        metrics={}
        if score is None
        else {
            "score": score,
            "loss": 1.5,
            "time_total_s": 12.34,
            "track/x": score,
            "task/a": score,
        },
        path=f"/x/{subset}-r{rank}",
        error=error,
    )


def test_report_files_and_table(tmp_path):
    results = [_result("s1", 4, 0.25), _result("s1", 16, 0.5), _result("s2", 4, None, "boom")]
    rows = trial_rows(results)
    write_csv(rows, tmp_path / "trials.csv")
    with open(tmp_path / "trials.csv") as f:
        read = list(csv.DictReader(f))
    assert [r["score"] for r in read] == ["0.25", "0.5", ""]
    assert read[2]["error"] == "boom" and read[0]["track/x"] == "0.25"
    assert {"subset", "tasks", "rank", "score", "loss", "wall_s"} <= set(read[0])
    png = plot_scores(rows, tmp_path / "scores.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    text = table(rows).splitlines()
    assert text[2].split()[:2] == ["s1", "16"]  # best first
    assert "failed" in text[-1]
