"""`python -m ecomtrain.sweep`: sweep task subsets x LoRA rank on a Ray cluster.

    python -m ecomtrain.sweep [--config configs/demo.yaml] [--output DIR] [a.b=c ...]

Joins the Ray cluster at --address or $RAY_ADDRESS (as under `ray job submit`) or
starts a local one, runs one trial per (subset, rank), and writes trials.csv, scores.png, the Tune
experiment and the W&B runs under DIR.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ecomtrain.config import ConfigError, load_config
from ecomtrain.model import resolve_model
from ecomtrain.train import connect


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ecomtrain.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML config (default: configs/demo.yaml)")
    parser.add_argument("--output", help="directory for everything the sweep writes")
    parser.add_argument("--address", help="Ray cluster (default: $RAY_ADDRESS, else a local one)")
    parser.add_argument("overrides", nargs="*", help="a.b=c config overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        from tuning.space import subsets

        subsets(cfg)  # reject unknown task names before starting Ray
    except (ConfigError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    output = Path(args.output or cfg.sweep.output).resolve()
    output.mkdir(parents=True, exist_ok=True)

    from ecomtrain.report import load_trials
    from tuning.report import write_full_report, write_report
    from tuning.run import run_sweep, wandb_mode
    from tuning.wandb_summary import log_summary

    connect(args.address)
    t0 = time.time()
    resolve_model(cfg.model)  # build the tiny model once here, not in every trial
    results = run_sweep(cfg, output)
    print(write_report(results, output))
    report = write_full_report(output)
    log_summary(
        load_trials(output / "trials.csv"),
        cfg.wandb.project,
        cfg.sweep.name,
        wandb_mode(cfg),
        output,
        cfg.wandb.entity or None,
    )
    print(f"\nsweep {cfg.sweep.name!r}: {len(results)} trials in {time.time() - t0:.0f} s")
    print(f"results: {output / 'trials.csv'}  report: {report} (and .html)")
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
