"""What a run is given: the contracts that cross from the driver to its workers.

A sweep works out once what every trial shares (`Prepared`: the base model's path, the
corpus scan, the held-out sample); the driver of each run builds its `TrialInputs` from it,
once, and every worker's loop reads them by attribute. All of it is plain data: it is
pickled to the workers as it is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ecomtrain.config import Config
from ecomtrain.tasks import capabilities_of, expand

TRIAL_FILE = "ecomtrain_trial.json"  # a checkpoint's `TrialMeta`, as JSON
STATE_FILE = "ecomtrain_state.json"  # a checkpoint's `LoopState` (ecomtrain.train.loop), as JSON


@dataclass
class TrialMeta:
    """What identifies a run: its tasks, their capabilities and the adapter's shape; with the
    diversity of its mixture and, for a label-routed adapter, its experts. Written into every
    checkpoint (TRIAL_FILE)."""

    name: str
    subset: str
    tasks: list[str]
    n_tasks: int
    n_capabilities: int
    rank: int
    alpha: float
    shape: str
    base_model: str
    mixture: dict = field(default_factory=dict)  # data.mixture.stats of what it trains on
    # the experts of a label-routed adapter ({"names", "of_family"}: data.pipeline.route_table)
    routes: dict | None = None

    @classmethod
    def of(cls, name: str, subset: str, tasks: list[str], cfg: Config) -> TrialMeta:
        families = expand(tasks)
        return cls(
            name=name,
            subset=subset,
            tasks=families,
            n_tasks=len(families),
            n_capabilities=len(capabilities_of(families)),
            rank=cfg.lora.rank,
            alpha=cfg.lora.alpha,
            shape=cfg.lora.shape,
            base_model=cfg.model.name_or_path,
        )

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Prepared:
    """What a sweep works out once and every trial reuses: the base model's path (a tiny model
    is built once), the corpus scan (`data.scan.scan_corpus`) and the held-out sample every
    trial is scored on. A sweep that varies data.* or eval.* keys shares neither the scan nor
    the sample (None): each run then makes its own."""

    model_path: str
    scan: dict | None = None
    held_out: list[dict] | None = None


@dataclass
class TrialInputs:
    """Everything every worker of a run is given, built once by the driver (train.driver)."""

    cfg: Config
    model_path: str
    trial: TrialMeta
    mult: dict[str, float]  # expected copies of each task's records per epoch (data.mixture)
    held_out: list[dict]  # the sample every evaluation scores
    extra_eval: list[dict] = field(default_factory=list)  # eval.extra_files' rows


@dataclass
class PackInputs:
    """Several trials trained in one run (`sweep.pack`): one copy of the base model per
    worker and an adapter per member, each trained as it would be alone (ecomtrain.train.pack).
    The members share the keys of `pack_key`; everything else is their own."""

    name: str  # the run's name
    members: list[TrialInputs]
    # asked by rank 0 which members left the pack (a Tune scheduler stopped them): an object
    # with a Ray actor method `left.remote(name)` (tuning.pack.PackBoard); None: none leave
    board: Any = None
    # a member's checkpoint to start from when the run has none of its own (a resumed sweep
    # whose packs formed anew): trial name -> checkpoint folder or URI
    resume: dict[str, str] = field(default_factory=dict)
