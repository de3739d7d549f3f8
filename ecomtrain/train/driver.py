"""Driver: one fine-tuning run as a Ray Train `TorchTrainer`.

A sweep trial and a single run (`python -m ecomtrain.train`) go through the same `fit`; a
pack of trials (`sweep.pack`, ecomtrain.train.pack) through `fit_pack`.
"""

from __future__ import annotations

import dataclasses
import os

import ray
from ray.train import (
    CheckpointConfig,
    DataConfig,
    FailureConfig,
    LoggingConfig,
    RunConfig,
    ScalingConfig,
)
from ray.train.torch import TorchConfig, TorchTrainer

from ecomtrain.base_model import resolve_model
from ecomtrain.config import Config, ConfigError
from ecomtrain.console import log, progress_line, verbose
from ecomtrain.data.pipeline import (
    SMALL_TASK,
    checked_scan,
    mixture_stats,
    route_table,
    train_dataset,
)
from ecomtrain.data.scan import eval_rows
from ecomtrain.evaluate.held_out import held_out_rows
from ecomtrain.train.loop import HEALTH_CHECK_ENV, share_name, train_fn_per_worker
from ecomtrain.train.pack import MEMBER_TRAIN_KEYS, member_checkpoints, pack_key
from ecomtrain.train.trial import PackInputs, Prepared, TrialInputs, TrialMeta


def fit(
    cfg: Config,
    meta: TrialMeta,
    storage_path: str,
    callbacks: list = (),
    prepared: Prepared | None = None,
) -> ray.train.Result:
    """Fine-tune one adapter on `meta.tasks` with `cfg.train.num_workers` workers (or,
    elastic, between `min_workers` and that many), scored on the held-out sample; what a
    sweep `prepared` for all its trials is reused, the rest made here (`prepare`)."""
    check_room(cfg)
    inputs, shares = trial_inputs(cfg, meta, prepare(cfg, prepared))
    checkpoints = CheckpointConfig(
        num_to_keep=cfg.train.keep_checkpoints,
        checkpoint_score_attribute=cfg.sweep.metric,
        checkpoint_score_order="max",
    )
    datasets = {share_name(r): share for r, share in enumerate(shares)}
    return run_trainer(cfg, meta.name, inputs, datasets, checkpoints, storage_path, callbacks)


def fit_pack(
    members: list[tuple[Config, TrialMeta]],
    name: str,
    storage_path: str,
    callbacks: list = (),
    prepared: Prepared | None = None,
    board=None,
) -> ray.train.Result:
    """Fine-tune a pack's adapters in one run (ecomtrain.train.pack): one copy of the base
    per worker, each member on its own records, scored on its own held-out sample, as it
    would be alone. The members must agree on `pack_key` (the first member's config sets
    the workers, ZeRO stage, precision and steps). Each checkpoint holds every member that
    still trains; the latest `train.keep_checkpoints` are kept (a single run keeps its best
    by score, which a pack's members do not share). `board`: see PackInputs."""
    cfg = members[0][0]
    keys = {pack_key(c) for c, _ in members}
    if len(keys) > 1:
        raise ConfigError(
            f"pack {name}: its trials differ in keys a pack shares (model.*, train.* but "
            f"{', '.join(MEMBER_TRAIN_KEYS)}): pack them apart"
        )
    check_room(cfg)
    inputs, datasets = [], {}
    for m, (member_cfg, meta) in enumerate(members):
        member, shares = trial_inputs(member_cfg, meta, prepare(member_cfg, prepared))
        inputs.append(member)
        datasets |= {share_name(r, m): share for r, share in enumerate(shares)}
    resume = member_checkpoints(storage_path, [meta.name for _, meta in members])
    pack = PackInputs(name, inputs, board, resume)
    checkpoints = CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints)
    return run_trainer(cfg, name, pack, datasets, checkpoints, storage_path, callbacks)


def run_trainer(
    cfg: Config,
    name: str,
    inputs: TrialInputs | PackInputs,
    datasets: dict,
    checkpoints: CheckpointConfig,
    storage_path: str,
    callbacks: list,
) -> ray.train.Result:
    """The run as a Ray Train `TorchTrainer` over `cfg.train`'s workers, fitted."""
    # Ray Train's controller polls the workers every 2 s by default, so it sees a report
    # and a run's end up to that much late. The variable reaches the controller and
    # workers (Ray Train passes it on).
    os.environ.setdefault(HEALTH_CHECK_ENV, "0.5")
    train = cfg.train
    trainer = TorchTrainer(
        train_fn_per_worker,
        train_loop_config={"inputs": inputs},
        scaling_config=ScalingConfig(
            num_workers=(train.min_workers, train.num_workers)
            if train.elastic
            else train.num_workers,
            elastic_resize_monitor_interval_s=train.resize_check_s,
            use_gpu=cfg.train.use_gpu,
            resources_per_worker={"CPU": cfg.train.cpus_per_worker, **cfg.train.worker_resources},
            placement_strategy=cfg.train.placement_strategy,
        ),
        torch_config=TorchConfig(backend="nccl" if cfg.train.use_gpu else "gloo"),
        # Each rank reads only its shares (loop.shares_of, loop.share_name); Ray Train
        # splits none.
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=[]),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            checkpoint_config=checkpoints,
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
            callbacks=list(callbacks),
            # Ray Train's own INFO lines (worker group, every report's metrics) under -v only
            logging_config=LoggingConfig(log_level="INFO" if verbose() else "WARNING"),
        ),
    )
    return trainer.fit()


def prepare(cfg: Config, shared: Prepared | None = None) -> Prepared:
    """What a run needs besides its own records: the base model's path (a tiny model is built
    on first use), the corpus scan (bad records checked, rejects written) and the held-out
    sample; the parts a sweep shares (`shared`) are taken as they are."""
    shared = shared or Prepared(resolve_model(cfg.model))
    scan, held_out = shared.scan, shared.held_out
    if scan is None:
        scan = checked_scan(cfg.data)
    if held_out is None:
        held_out, sample = held_out_rows(cfg)
        log.info(sample)
    return Prepared(shared.model_path, scan, held_out)


def trial_inputs(cfg: Config, meta: TrialMeta, prepared: Prepared) -> tuple[TrialInputs, list]:
    """What every worker's loop is given and the trial's shares (Ray Datasets, one per worker
    of its largest world: a smaller, elastic world deals them out), tokenised here once."""
    # Same seed, same shares: the pipeline keeps its order, so runs and resumes are exact.
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    scan = prepared.scan
    shares, mult = train_dataset(cfg, prepared.model_path, meta.tasks, cfg.train.num_workers, scan)
    meta = dataclasses.replace(
        meta,
        mixture=mixture_stats(cfg, meta.tasks, scan),  # logged with every evaluation
        routes=route_table(cfg, meta.tasks, scan),  # a label-routed adapter's experts
    )
    inputs = TrialInputs(
        cfg=cfg,
        model_path=prepared.model_path,
        trial=meta,
        mult=mult,
        held_out=prepared.held_out,
        extra_eval=extra_eval_rows(cfg),
    )
    return inputs, shares


class ReportProgress(ray.train.UserCallback):
    """A line per report of a single run (`ecomtrain.train`; a sweep has its own, on the
    driver). Runs in the Ray Train controller, whose output reaches the console."""

    def __init__(self, name: str, max_steps: int):
        self.name, self.max_steps = name, max_steps

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        log.info(progress_line(self.name, metrics[0], self.max_steps))


def check_room(cfg: Config) -> None:
    """Fail now, not hang later: the trial's Ray Data tasks need a little CPU beside the
    training workers, which hold theirs for the whole run, and every custom resource the
    workers take must be there for all of them."""
    have = ray.cluster_resources()
    cpus, workers = have.get("CPU", 0.0), cfg.train.min_workers or cfg.train.num_workers
    need = workers * cfg.train.cpus_per_worker + SMALL_TASK["num_cpus"]
    if need > cpus:
        raise ConfigError(
            f"train.num_workers ({workers}) x train.cpus_per_worker "
            f"({cfg.train.cpus_per_worker}) leaves no room for the data tasks "
            f"({SMALL_TASK['num_cpus']} CPU) on a cluster of {cpus:g} CPUs: lower "
            "train.cpus_per_worker (e.g. 0.5) or train.num_workers, or add CPUs"
        )
    for name, each in cfg.train.worker_resources.items():
        if workers * each > have.get(name, 0.0):
            raise ConfigError(
                f"train.worker_resources: {workers} workers x {each:g} {name!r} but the "
                f"cluster has {have.get(name, 0.0):g}; start nodes with --resources "
                f"'{{\"{name}\": N}}' or lower train.num_workers"
            )


def extra_eval_rows(cfg: Config) -> list[dict]:
    """Rows of the extra eval files and folders (small, e.g. the 96-record dev set, or
    Shopping MMLU); bad records stop."""
    return [row for path in cfg.eval.extra_files for row in eval_rows(path, cfg.data)]
