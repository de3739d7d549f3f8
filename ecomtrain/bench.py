"""Benchmarks that print figures and ratios (not tests: timings flake on busy machines).

    python -m ecomtrain.bench asha [--config FILE] [a.b=c ...]

`asha` runs the sweep twice on the same space, first the full grid, then with ASHA, one
trial at a time, and prints how many trial-steps each used and how many ASHA needed until
it had trained the grid's best (subset, rank) to the end.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile

from ecomtrain.config import Config, load_config
from ecomtrain.train import connect


def trial_steps(results) -> list[tuple[str, int, float]]:
    """(subset-rank key, steps trained, final score) per trial, in launch order."""
    rows = []
    for r in results:
        cfg, m = r.config, r.metrics or {}
        index = int(r.path.rsplit("_", 1)[-1])  # Tune numbers trials in launch order
        key = f"{cfg['subset']['id']}-r{cfg['rank']}"
        rows.append((index, key, int(m.get("step", 0)), float(m.get("score", float("nan")))))
    return [row[1:] for row in sorted(rows)]


def asha_payoff(cfg: Config) -> dict:
    """Trial-steps of the grid vs ASHA until ASHA has fully trained the grid's best point."""
    from tuning.run import run_sweep

    out = tempfile.mkdtemp(prefix="ecomtrain-bench-")
    grid_cfg, asha_cfg = copy.deepcopy(cfg), copy.deepcopy(cfg)
    for c, name in ((grid_cfg, "grid"), (asha_cfg, "asha")):
        c.sweep.name, c.sweep.max_concurrent_trials, c.wandb.mode = name, 1, "disabled"
    grid_cfg.sweep.scheduler, asha_cfg.sweep.scheduler = "fifo", "asha"
    grid = trial_steps(run_sweep(grid_cfg, out, out))
    asha = trial_steps(run_sweep(asha_cfg, out, out))
    best = max(grid, key=lambda row: row[2])[0]
    used, found = 0, False
    for key, steps, _ in asha:
        used += steps
        if key == best and steps >= cfg.train.max_steps:
            found = True
            break
    grid_total = sum(steps for _, steps, _ in grid)
    return {
        "grid_best": best,
        "grid_trial_steps": grid_total,
        "asha_trial_steps_total": sum(steps for _, steps, _ in asha),
        "asha_found_best": found,
        "asha_trial_steps_until_best": used if found else None,
        "ratio": used / grid_total if found else None,
        "asha_trials": asha,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ecomtrain.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("which", choices=["asha"])
    parser.add_argument("--config", help="YAML config (default: configs/demo.yaml)")
    parser.add_argument("overrides", nargs="*", help="a.b=c config overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    connect()
    figures = asha_payoff(cfg)
    for key, value in figures.items():
        print(f"{key:>26}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
