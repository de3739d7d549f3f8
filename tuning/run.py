"""The Tuner: one Ray Train run per point of the space, early stopping, W&B, resume."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import ray
from ray import tune
from ray.air.integrations.wandb import WANDB_ENV_VAR, WandbLoggerCallback, _WandbLoggingActor
from ray.air.util.node import _force_on_current_node

from ecomtrain.config import Config, to_dict
from ecomtrain.console import quiet, verbose
from ecomtrain.tracking import predictions_table, resolve_mode
from ecomtrain.train.driver import fit
from ecomtrain.train.trial import Prepared, TrialMeta
from tuning.mixture_search import MixtureSearch
from tuning.pack import PackLeaves, board_name, join_pack, start_board
from tuning.progress import Progress, status_table
from tuning.rank_asha import RankASHA
from tuning.relay import relay_to_tune
from tuning.space import grid_points, optuna_search, param_space, trial_config


class TrialLogger(_WandbLoggingActor):
    """Ray's W&B logging actor, plus each evaluation's sample answers as a table; it also
    waits for W&B's own process to write everything before the actor ends (Tune kills the
    actor, and that process with it, as soon as `run` returns), and removes the temporary
    files W&B wrote (a folder per table logged, its media and artifact staging folders),
    which a killed process never would."""

    def run(self):
        own = tempfile.mkdtemp(prefix="ecomtrain-wandb-")
        tempfile.tempdir = os.environ["TMPDIR"] = own  # this process (and W&B's) is the actor's
        try:
            super().run()
        finally:
            self._wandb.teardown()
            shutil.rmtree(own, ignore_errors=True)
            for folder in wandb_temp_folders():
                folder.cleanup()

    def _handle_result(self, result: dict) -> tuple[dict, dict]:
        log, config_update = super()._handle_result(result)
        if result.get("predictions"):
            log["predictions"] = predictions_table(result["predictions"])
        return log, config_update


def wandb_temp_folders() -> list[tempfile.TemporaryDirectory]:
    """W&B's own process-wide temporary folders (media, artifact staging), where this
    version of wandb has them; removed only at a normal exit."""
    folders = []
    with contextlib.suppress(ImportError):
        from wandb.sdk.data_types._private import MEDIA_TMP

        folders.append(MEDIA_TMP)
    with contextlib.suppress(ImportError):
        from wandb.sdk.artifacts.artifact import Artifact

        folders.append(getattr(Artifact, "_TMP_DIR", None))
    return [f for f in folders if isinstance(f, tempfile.TemporaryDirectory)]


class TrialRuns(WandbLoggerCallback):
    """A W&B run per trial, grouped by sweep: job_type "trial", tags (sweep, subset), the
    trial's full resolved config beside its point (subset, rank, alpha, seed, ...)."""

    _logger_actor_cls = TrialLogger

    def __init__(self, cfg: Config, mode: str, local_dir: str):
        self.base = cfg
        super().__init__(
            project=cfg.wandb.project,
            group=cfg.sweep.name,
            entity=cfg.wandb.entity or None,
            mode=mode,
            dir=local_dir,
            excludes=["checkpoint_path"],
        )

    def _start_logging_actor(self, trial, exclude_results: list, **wandb_init_kwargs):
        if not self._remote_logger_class:
            # Ray would start it restartable (max_restarts=-1), but its constructor takes
            # the trial's queue (an actor handle, so an argument in the object store), and
            # Ray warns that such an actor cannot be restarted. A restarted logger would
            # begin the trial's W&B run again anyway: one that dies is not restarted.
            key = {WANDB_ENV_VAR: os.environ[WANDB_ENV_VAR]} if WANDB_ENV_VAR in os.environ else {}
            self._remote_logger_class = ray.remote(
                num_cpus=0, **_force_on_current_node(), runtime_env={"env_vars": key}
            )(self._logger_actor_cls)
        point = trial.config
        full = to_dict(trial_config(self.base, point))
        # a mixture's shares as flat keys, for W&B's parallel coordinates and scatter plots
        full |= {f"mix/{k}": v for k, v in point.get("mixture", {}).get("shares", {}).items()}
        wandb_init_kwargs["config"] = full | wandb_init_kwargs.get("config", {})
        wandb_init_kwargs["job_type"] = "trial"
        wandb_init_kwargs["tags"] = [self.group, point["subset"]["id"]]
        super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)


def wandb_callbacks(cfg: Config, local_dir: str) -> list:
    """A W&B run per trial (TrialRuns); nothing when W&B is disabled."""
    mode = resolve_mode(cfg.wandb.mode)
    if mode == "disabled":
        return []
    os.environ["WANDB_MODE"] = mode  # read by Ray's key check and by wandb itself
    os.makedirs(os.path.join(local_dir, "wandb"), exist_ok=True)
    return [TrialRuns(cfg, mode, local_dir)]


def trial_key(config: dict) -> tuple[str, str]:
    """A trial's grid point (<subset>[-<mixture>]-r<rank>) and the trial itself (with
    -s<seed> when the sweep has replicates)."""
    mixture = f"-{config['mixture']['id']}" if "mixture" in config else ""
    cell = f"{config['subset']['id']}{mixture}-r{config['rank']}"
    return cell, (f"{cell}-s{config['seed']}" if "seed" in config else cell)


def trial_name(trial) -> str:
    """Short, readable trial names: <subset>[-<mixture>]-r<rank>[-s<seed>]-<id>."""
    return f"{trial_key(trial.config)[1]}-{trial.trial_id}"


def concurrency(cfg: Config) -> int:
    """Trials at once: as configured, else what the cluster holds (GPUs / workers per trial)."""
    if cfg.sweep.max_concurrent_trials > 0:
        return cfg.sweep.max_concurrent_trials
    resources = ray.cluster_resources()
    if cfg.train.use_gpu:
        return max(1, int(resources.get("GPU", 0)) // cfg.train.num_workers)
    per_trial = cfg.train.num_workers * cfg.train.cpus_per_worker + 0.5  # + data tasks
    return max(1, int(resources.get("CPU", 1) // per_trial))


def stop_metric(cfg: Config) -> tuple[str, str]:
    """The reported metric ASHA decides on (`sweep.stop_metric`) and its direction."""
    stop = cfg.sweep.stop_metric
    return (cfg.sweep.metric if stop == "metric" else stop), (
        "min" if stop == "eval_loss" else "max"
    )


def scheduler(cfg: Config):
    """ASHA on the held-out score, with rungs in training steps (one ASHA per LoRA rank under
    "asha-by-rank"); else run every trial out."""
    if cfg.sweep.scheduler == "fifo":
        return None
    metric, mode = stop_metric(cfg)
    asha = {
        "metric": metric,
        "mode": mode,
        "time_attr": "step",
        "max_t": cfg.train.max_steps,
        "grace_period": cfg.sweep.grace_period,
        "reduction_factor": cfg.sweep.reduction_factor,
    }
    if cfg.sweep.scheduler == "asha-by-rank":
        return RankASHA(**asha)
    return tune.schedulers.ASHAScheduler(**asha)


def search_alg(cfg: Config):
    """The searcher that holds the space (Optuna's, the mixture search), else None."""
    if cfg.sweep.search == "optuna":
        return optuna_search(cfg)
    if cfg.sweep.search == "mixture":
        return MixtureSearch.of(cfg)
    return None


def n_trials(cfg: Config) -> int:
    """The trials the sweep runs: every grid point (and seed) `num_samples` times, else
    `num_samples` drawn points, each once per seed."""
    if cfg.sweep.search == "grid":
        return cfg.sweep.num_samples * len(grid_points(cfg))
    return cfg.sweep.num_samples * max(1, len(cfg.sweep.seeds))


def shared_parts(cfg: Config, prepared: Prepared) -> Prepared:
    """What every trial reuses of what the sweep `prepared`: the base model's path always,
    the corpus scan unless the sweep varies data.* keys, and the held-out sample unless it
    varies data.* or eval.* keys (then each trial makes its own)."""
    varied = {key.split(".")[0] for key in cfg.sweep.params}
    return Prepared(
        prepared.model_path,
        scan=None if "data" in varied else prepared.scan,
        held_out=None if varied & {"data", "eval"} else prepared.held_out,
    )


def trainable(cfg: Config, storage: str, prepared: Prepared):
    """The per-trial driver: resolve the point's config and fit through Ray Train, reusing
    what the sweep `prepared` (put in the object store once: `shared_parts`); with
    `sweep.pack`, join the sweep's pack board instead, whose pack runs train it
    (tuning.pack)."""

    def trial(point: dict, prepared: Prepared) -> None:
        run_cfg = trial_config(cfg, point)
        name = tune.get_context().get_trial_name()  # stable across a resumed sweep
        meta = TrialMeta.of(name, point["subset"]["id"], point["subset"]["tasks"], run_cfg)
        if cfg.sweep.pack > 1:
            join_pack(cfg, run_cfg, meta)
            return
        storage_path = f"{storage}/train"
        relay_to_tune(lambda callbacks: fit(run_cfg, meta, storage_path, callbacks, prepared))

    fn = tune.with_parameters(trial, prepared=shared_parts(cfg, prepared))
    return tune.with_resources(fn, {"CPU": 0.01, **cfg.sweep.driver_resources})


def run_sweep(
    cfg: Config,
    storage: str,
    local_dir: str,
    resume: bool = False,
    fn=None,
    prepared: Prepared | None = None,
):
    """Run (or resume) the sweep; checkpoints under `storage`, W&B files under `local_dir`.
    `fn`: another trainable for each point (`ecomtrain.bench scale` simulates trials);
    `prepared`: what every trial reuses (train.driver.prepare; needed without `fn`).

    Training steps report loss only and evaluations add `score` and `eval_loss`; Tune's
    strict check that every result holds the metric is off, and ASHA decides at the
    evaluations (on `sweep.stop_metric`).
    """
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    board = None
    if fn is None and cfg.sweep.pack > 1:  # the trials' pack runs (tuning.pack)
        expected = None if resume else n_trials(cfg)
        shared = shared_parts(cfg, prepared)
        board = start_board(cfg, f"{storage}/train", shared, expected)
    fn = fn or trainable(cfg, storage, prepared)
    run_config = tune.RunConfig(
        name=cfg.sweep.name,
        storage_path=storage,
        callbacks=[Progress(cfg.train.max_steps, cfg.sweep.metric, n_trials(cfg))]
        + wandb_callbacks(cfg, local_dir)
        + ([PackLeaves(board_name(cfg))] if board else []),
        # Tune's newer output (trial boxes, every metric) under --verbose; else its classic
        # status table with readable columns, every few minutes (none under --quiet)
        verbose=2 if verbose() else 0 if quiet() else 1,
        progress_reporter=None if verbose() else status_table(cfg),
    )
    try:
        return tune_fit(cfg, fn, run_config, storage, resume)
    finally:
        if board is not None:
            ray.kill(board)


def tune_fit(cfg: Config, fn, run_config, storage: str, resume: bool):
    """The Tuner, fresh or restored, fitted."""
    if resume:
        path = f"{storage}/{cfg.sweep.name}"
        # The same param_space again: it resolves the per-trial values (alpha) of the
        # trials the interrupted sweep had not created yet.
        tuner = tune.Tuner.restore(
            path,
            trainable=fn,
            param_space=param_space(cfg),
            resume_unfinished=True,
            resume_errored=True,
        )
        return tuner.fit()
    tuner = tune.Tuner(
        fn,
        param_space=param_space(cfg),
        tune_config=tune.TuneConfig(  # the scheduler and the searcher name their own metric
            scheduler=scheduler(cfg),
            search_alg=search_alg(cfg),
            num_samples=cfg.sweep.num_samples,
            max_concurrent_trials=concurrency(cfg) * cfg.sweep.pack,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
            # A trial's process (and its imports) serves the next trial when trials end on
            # their own; a trial ASHA stops is still inside its Ray Train run, so its
            # process cannot be reset for another and is ended instead.
            reuse_actors=cfg.sweep.scheduler == "fifo",
        ),
        run_config=run_config,
    )
    return tuner.fit()
