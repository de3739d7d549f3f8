"""`python -m ecomtrain.train`: one fine-tuning run, through the same code a sweep trial uses."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ecomtrain.config import ConfigError, check_files, load_config
from ecomtrain.connect import connect
from ecomtrain.tasks import CAPABILITIES
from ecomtrain.train.driver import fit, trial_meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ecomtrain.train", description=__doc__)
    parser.add_argument("--config", help="YAML config (default: configs/demo.yaml)")
    parser.add_argument("--output", default="runs/train", help="directory for checkpoints")
    parser.add_argument("--address", help="Ray cluster (default: $RAY_ADDRESS, else a local one)")
    parser.add_argument("overrides", nargs="*", help="a.b=c config overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        check_files(cfg, args.config or "config")
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
