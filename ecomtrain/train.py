"""Driver: one fine-tuning run as a Ray Train `TorchTrainer`; also `python -m ecomtrain.train`.

A sweep trial and a single run go through the same `fit` function.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import ray
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from ecomtrain.config import Config, ConfigError, load_config, to_dict
from ecomtrain.connect import connect
from ecomtrain.data import mixture_stats, train_dataset
from ecomtrain.loop import train_fn_per_worker
from ecomtrain.model import resolve_model
from ecomtrain.tasks import CAPABILITIES, capabilities_of, expand


def trial_meta(name: str, subset: str, tasks: list[str], cfg: Config) -> dict:
    """What identifies a run: its tasks, their capabilities and the adapter's shape."""
    families = expand(tasks)
    return {
        "name": name,
        "subset": subset,
        "tasks": families,
        "n_tasks": len(families),
        "n_capabilities": len(capabilities_of(families)),
        "rank": cfg.lora.rank,
        "alpha": cfg.lora.alpha,
        "base_model": cfg.model.name_or_path,
    }


def fit(cfg: Config, meta: dict, storage_path: str, callbacks: list = ()) -> ray.train.Result:
    """Fine-tune one adapter on `meta["tasks"]` with `cfg.train.num_workers` workers."""
    model_path = resolve_model(cfg.model)
    # Each worker reads the whole stream in a fixed order and takes its stripe of it
    # (loop.striped): same step count on every rank, and exact resume.
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    train_ds, eval_ds = train_dataset(cfg, model_path, meta["tasks"])
    meta = {**meta, "mixture": mixture_stats(cfg, meta["tasks"])}  # logged with every evaluation
    trainer = TorchTrainer(
        train_fn_per_worker,
        train_loop_config={
            "cfg": to_dict(cfg),
            "model_path": model_path,
            "trial": meta,
            "extra_eval": extra_eval_rows(cfg),
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.train.num_workers,
            use_gpu=cfg.train.use_gpu,
            resources_per_worker={"CPU": cfg.train.cpus_per_worker},
        ),
        torch_config=TorchConfig(backend="nccl" if cfg.train.use_gpu else "gloo"),
        datasets={"train": train_ds, "eval": eval_ds},
        dataset_config=DataConfig(datasets_to_split=[]),
        run_config=RunConfig(
            name=meta["name"],
            storage_path=storage_path,
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.train.keep_checkpoints,
                checkpoint_score_attribute="score",
                checkpoint_score_order="max",
            ),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
            callbacks=list(callbacks),
        ),
    )
    return trainer.fit()


def extra_eval_rows(cfg: Config) -> list[dict]:
    """Rows of the extra eval files (small, e.g. the 96-record dev set); bad records stop."""
    from ecomtrain.corpus import CorpusError
    from ecomtrain.scan import parse_file

    rows = []
    for path in cfg.eval.extra_files:
        for row in parse_file(path, None, cfg.data, None):
            if not isinstance(row, dict):
                raise CorpusError(f"{row.path}:{row.line}: {row.field}: {row.reason}")
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ecomtrain.train", description=__doc__)
    parser.add_argument("--config", help="YAML config (default: configs/demo.yaml)")
    parser.add_argument("--output", default="runs/train", help="directory for checkpoints")
    parser.add_argument("--address", help="Ray cluster (default: $RAY_ADDRESS, else a local one)")
    parser.add_argument("overrides", nargs="*", help="a.b=c config overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        meta = trial_meta("train", "config", cfg.data.tasks or list(CAPABILITIES), cfg)
    except (ConfigError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    connect(args.address)
    result = fit(cfg, meta, str(Path(args.output).resolve()))
    print(f"score {result.metrics.get('score')}  adapter {result.checkpoint.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
