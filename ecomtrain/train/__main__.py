"""`python -m ecomtrain.train`: one fine-tuning run, through the same code a sweep trial uses."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ecomtrain import console, tracking
from ecomtrain.base_model import resolve_model
from ecomtrain.config import OVERRIDES_HELP, ConfigError, load_config, to_dict
from ecomtrain.connect import connect
from ecomtrain.data.corpus import check_files
from ecomtrain.data.pipeline import check_names, checked_scan, corpus_tasks
from ecomtrain.data.records import CorpusError
from ecomtrain.train.driver import ReportProgress, fit
from ecomtrain.train.loop import STATE_FILE, LoopState
from ecomtrain.train.trial import Prepared, TrialMeta


def log_run(cfg, result, output: Path) -> None:
    """The run as a W&B run (job_type "train"): its full config, the loss of every step, and
    the metrics and sample answers of each kept evaluation."""
    with tracking.wandb_run(
        "train",
        project=cfg.wandb.project,
        mode=cfg.wandb.mode,
        dir=output,
        entity=cfg.wandb.entity,
        tags=["train"],
        config=to_dict(cfg),
    ) as run:
        if run is None:
            return
        state = LoopState.from_json(Path(result.checkpoint.path, STATE_FILE).read_text())
        logged = {step: {"loss": loss} for step, loss in state.history}
        for _, metrics in result.best_checkpoints or []:
            logged.setdefault(metrics["step"], {}).update(tracking.scalars(metrics))
            if metrics.get("predictions"):
                table = tracking.predictions_table(metrics["predictions"])
                logged[metrics["step"]]["predictions"] = table
        for step in sorted(logged):
            run.log(logged[step], step=step)
        run.summary.update(tracking.scalars(result.metrics or {}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ecomtrain.train", description=__doc__)
    parser.add_argument("--config", help="YAML config (default: configs/demo.yaml)")
    parser.add_argument("--output", default="runs/train", help="directory for checkpoints")
    parser.add_argument("--address", help="Ray cluster (default: $RAY_ADDRESS, else a local one)")
    parser.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    console.add_arguments(parser)
    args = parser.parse_args(argv)
    console.setup(args)
    try:
        cfg = load_config(args.config, args.overrides)
        check_files(cfg, args.config or "config")
        check_names(cfg, args.config or "config")
    except (ConfigError, CorpusError) as e:
        console.log.error("error: %s", e)
        return 2
    connect(args.address)
    prepared = Prepared(resolve_model(cfg.model), checked_scan(cfg.data))
    tasks = cfg.data.tasks or corpus_tasks(prepared.scan)  # empty: every task of the corpus
    meta = TrialMeta.of("train", "config", tasks, cfg)
    callback = ReportProgress(meta.name, cfg.train.max_steps)
    storage = str(Path(args.output).resolve())
    result = fit(cfg, meta, storage, callbacks=[callback], prepared=prepared)
    log_run(cfg, result, Path(args.output))
    print(f"score {result.metrics.get('score')}  adapter {result.checkpoint.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
