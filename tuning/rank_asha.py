"""ASHA within each LoRA rank (`sweep.scheduler: asha-by-rank`).

A low rank follows a high rank's curve early and falls behind once the data exceed its
capacity, so at an early rung the ranks cannot be told apart, and plain ASHA stops trials of
the rank that wins later as readily as any. Here every rank has its own ASHA: a trial is
measured only against the trials of its own rank, so each rank keeps its best mixtures to
the end, and the ranks are compared on finished trials. `ecomtrain.bench mixture` measures
what it changes.
"""

from __future__ import annotations

import pickle

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler


class RankASHA(FIFOScheduler):
    """One ASHA (Tune's own, with `asha`'s settings) per LoRA rank, keyed by a trial's
    `rank` in its config."""

    def __init__(self, **asha):
        super().__init__()
        self.asha, self.by_rank = asha, {}
        self._metric = asha.get("metric")

    def of(self, trial) -> ASHAScheduler:
        """The ASHA of `trial`'s rank (made on its first trial)."""
        rank = trial.config["rank"]
        if rank not in self.by_rank:
            self.by_rank[rank] = ASHAScheduler(**self.asha)
        return self.by_rank[rank]

    def on_trial_add(self, tune_controller, trial):
        self.of(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self.of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict):
        self.of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        self.of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "ASHA by rank: " + "; ".join(
            f"rank {rank}: {asha.debug_string()}" for rank, asha in sorted(self.by_rank.items())
        )

    def save(self, checkpoint_path: str):
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str):
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
