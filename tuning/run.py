"""The Tuner: one Ray Train run per (subset, rank) point, W&B logging, results."""

from __future__ import annotations

import os
from pathlib import Path

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from ecomtrain.config import Config, from_dict, to_dict
from ecomtrain.train import fit, trial_meta
from tuning.space import param_space, trial_config


def wandb_mode(cfg: Config) -> str:
    """Online when the mode is "auto" and an API key is set; offline without one."""
    if cfg.wandb.mode != "auto":
        return cfg.wandb.mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def wandb_callbacks(cfg: Config, output: Path) -> list:
    """A W&B run per trial, grouped by sweep name; nothing when W&B is disabled."""
    mode = wandb_mode(cfg)
    if mode == "disabled":
        return []
    from ray.air.integrations.wandb import WandbLoggerCallback

    os.environ["WANDB_MODE"] = mode  # read by Ray's key check and by wandb itself
    (output / "wandb").mkdir(parents=True, exist_ok=True)
    return [
        WandbLoggerCallback(
            project=cfg.wandb.project,
            group=cfg.sweep.name,
            entity=cfg.wandb.entity or None,
            mode=mode,
            dir=str(output),
            excludes=["checkpoint_path"],
        )
    ]


def trial_name(trial) -> str:
    """Short, readable trial names: <subset>-r<rank>-<id>."""
    return f"{trial.config['subset']['id']}-r{trial.config['rank']}-{trial.trial_id}"


def run_sweep(cfg: Config, output: Path) -> tune.ResultGrid:
    """Run every (subset, rank) trial of the sweep; all files land under `output`."""
    output = output.resolve()
    base = to_dict(cfg)

    def trial(point: dict) -> None:
        run_cfg = trial_config(from_dict(base), point)
        name = tune.get_context().get_trial_name()
        meta = trial_meta(name, point["subset"]["id"], point["subset"]["tasks"], run_cfg)
        fit(run_cfg, meta, str(output / "train"), callbacks=[TuneReportCallback()])

    tuner = tune.Tuner(
        tune.with_resources(trial, {"CPU": 0.01}),
        param_space=param_space(cfg),
        # No metric here: training steps report loss only, evaluations add `score`, and Tune
        # rejects results without its metric. The report ranks trials by their final score.
        tune_config=tune.TuneConfig(
            max_concurrent_trials=cfg.sweep.max_concurrent_trials or None,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=cfg.sweep.name,
            storage_path=str(output),
            callbacks=wandb_callbacks(cfg, output),
        ),
    )
    return tuner.fit()
