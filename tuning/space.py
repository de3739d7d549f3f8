"""The joint search space: task subsets crossed with LoRA rank."""

from __future__ import annotations

import copy

from ray import tune

from ecomtrain.config import Config
from ecomtrain.tasks import capabilities_of, expand


def subsets(cfg: Config) -> list[dict]:
    """One point per configured subset: its id, families and coverage."""
    out = []
    for subset_id, names in cfg.sweep.subsets.items():
        families = expand(names)
        caps = capabilities_of(families)
        out.append(
            {
                "id": subset_id,
                "tasks": families,
                "n_tasks": len(families),
                "capabilities": caps,
                "n_capabilities": len(caps),
            }
        )
    return out


def param_space(cfg: Config) -> dict:
    """Tune's param_space: a grid over subset x rank."""
    return {
        "subset": tune.grid_search(subsets(cfg)),
        "rank": tune.grid_search(list(cfg.sweep.ranks)),
    }


def trial_config(base: Config, point: dict) -> Config:
    """The run config of one grid point: its tasks, its rank, alpha by the sweep's rule."""
    cfg = copy.deepcopy(base)
    cfg.data.tasks = list(point["subset"]["tasks"])
    cfg.lora.rank = int(point["rank"])
    cfg.lora.alpha = cfg.sweep.alpha_per_rank * cfg.lora.rank
    return cfg
