"""Benchmarks that print figures and ratios (not tests: timings flake on busy machines).

    python -m ecomtrain.bench asha [--config FILE] [--grid DIR] [a.b=c ...]
    python -m ecomtrain.bench throughput [--shape tiny|smol135m|qwen0.5b] [--repeats N]
                                         [a.b=c ...]
    python -m ecomtrain.bench ablation [--shape ...] [--steps N] [a.b=c ...]
    python -m ecomtrain.bench raytax [--shape ...] [--repeats N] [a.b=c ...]
    python -m ecomtrain.bench mfu --shape 1b|7b [--matrix [DIMS]] [--config FILE]
                                  [a.b=c ...]   (CUDA GPU)
    python -m ecomtrain.bench data --workers 1 2 4 8 [--json FILE] [a.b=c ...]
    python -m ecomtrain.bench eval [--workers 2] [--config FILE] [a.b=c ...]
    python -m ecomtrain.bench scale [--trials 500] [--gpus 64] [--nodes 4] [a.b=c ...]
    python -m ecomtrain.bench corpus [--records 10000000] [--files 100] [--world 2]
                                     [--words W] [--object-store-mib M] [a.b=c ...]

Every benchmark also writes its figures as JSON with `--json FILE`. What each runs and
prints (the docs of its module, ecomtrain/bench/<name>.py) follows.
"""

from __future__ import annotations

import argparse
import json
import sys

from ecomtrain import console
from ecomtrain.bench.ablation import ablation
from ecomtrain.bench.asha import ASHA_GRID, ASHA_RULE, asha_payoff, asha_replay
from ecomtrain.bench.corpus import CORPUS_SPACE, corpus_path
from ecomtrain.bench.data import DATA_SPACE, data_work
from ecomtrain.bench.evaluation import eval_work
from ecomtrain.bench.mfu import MFU_DIMENSIONS, mfu, mfu_matrix, mfu_variants
from ecomtrain.bench.models import SHAPES
from ecomtrain.bench.raytax import RAYTAX_SPACE, raytax
from ecomtrain.bench.scale import SCALE_SPACE, scale
from ecomtrain.bench.throughput import THROUGHPUT_SPACE, throughput
from ecomtrain.config import ConfigError, load_config
from ecomtrain.connect import connect
from ecomtrain.files import atomic_write

# what each benchmark runs: the doc of its module, shown by --help
BENCHMARKS = (
    asha_payoff,
    throughput,
    ablation,
    raytax,
    mfu,
    data_work,
    eval_work,
    scale,
    corpus_path,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ecomtrain.bench",
        description="\n".join([__doc__, *(sys.modules[f.__module__].__doc__ for f in BENCHMARKS)]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "which",
        choices=[
            "asha",
            "throughput",
            "ablation",
            "raytax",
            "mfu",
            "data",
            "eval",
            "scale",
            "corpus",
        ],
    )
    parser.add_argument(
        "--shape",
        choices=["tiny", *sorted(SHAPES)],
        help="mfu's model (default 1b); throughput's, ablation's and raytax's (default "
        "tiny: the configured model)",
    )
    parser.add_argument(
        "--steps", type=int, default=10, help="mfu's timed steps (ablation's micro-batches)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        help="data's world sizes (default 1 2 4 8); eval's (default 2)",
    )
    parser.add_argument(
        "--repeats", type=int, help="raytax's runs of each side (default 2); throughput's (1)"
    )
    parser.add_argument("--trials", type=int, default=500, help="scale's simulated trials")
    parser.add_argument("--gpus", type=int, default=64, help="scale's simulated GPUs")
    parser.add_argument("--nodes", type=int, default=4, help="scale's simulated GPU nodes")
    parser.add_argument("--step-s", type=float, default=1.0, help="scale's sleep per interval")
    parser.add_argument("--records", type=int, default=10_000_000, help="corpus' records")
    parser.add_argument("--files", type=int, default=100, help="corpus' files")
    parser.add_argument("--world", type=int, default=2, help="corpus' ranks")
    parser.add_argument(
        "--object-store-mib", type=int, default=0, help="corpus' object store (default: Ray's)"
    )
    parser.add_argument("--words", type=int, default=0, help="corpus' words added to inputs")
    parser.add_argument(
        "--grid", metavar="DIR", help="asha: replay a finished full-grid sweep's output"
    )
    parser.add_argument(
        "--matrix",
        nargs="?",
        const=",".join(MFU_DIMENSIONS),
        metavar="DIMS",
        help="mfu: a row per attention kernel x gradient checkpointing x torch.compile "
        "(or only the DIMS given, e.g. attn,checkpointing; the others as configured)",
    )
    parser.add_argument(
        "--device",
        choices=["cuda", "cpu"],
        default="cuda",
        help="mfu's (cpu: the same step, to check it; no MFU without a GPU's peak)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--config", help="YAML config (default: configs/demo.yaml)")
    parser.add_argument("overrides", nargs="*", help="a.b=c config overrides")
    console.add_arguments(parser)
    args = parser.parse_intermixed_args(argv)
    console.setup(args)
    if args.grid and args.which != "asha":
        parser.error("--grid is asha's")
    if args.matrix and "=" in args.matrix:  # `--matrix a.b=c`: an override, not dimensions
        args.overrides.append(args.matrix)
        args.matrix = ",".join(MFU_DIMENSIONS)
    if args.which == "mfu" and args.shape == "tiny":
        parser.error("mfu measures a GPU on a real model's shape: --shape 1b, 7b, ...")
    spaces = {
        "asha": ASHA_GRID + ASHA_RULE,
        "throughput": THROUGHPUT_SPACE,
        "raytax": RAYTAX_SPACE,
        "data": DATA_SPACE,
        "scale": SCALE_SPACE,
        "corpus": CORPUS_SPACE,
    }
    space = spaces.get(args.which, [])
    config = args.config or ("world.yaml" if args.which == "asha" else None)
    cfg = None if args.grid else load_config(config, space + args.overrides)
    if args.grid:
        try:
            figures = asha_replay(args.grid, args.overrides)
        except (ValueError, OSError) as e:  # not a finished grid's output (ConfigError too)
            print(f"error: {e}", file=sys.stderr)
            return 2
    elif args.which == "mfu" and args.matrix:
        try:
            variants = mfu_variants(cfg, args.matrix.split(","))
        except ConfigError as e:
            parser.error(str(e))
        figures = mfu_matrix(
            args.config, args.overrides, args.shape or "1b", args.steps, args.device, variants
        )
    elif args.which == "mfu":
        figures = mfu(cfg, args.shape or "1b", args.steps, device=args.device)
    elif args.which == "scale":
        figures = scale(cfg, args.trials, args.gpus, args.nodes, args.step_s)
    elif args.which == "corpus":
        figures = corpus_path(
            cfg, args.records, args.files, args.world, args.object_store_mib, args.words
        )
    else:
        connect(log_to_driver=console.verbose())
        if args.which == "data":
            figures = data_work(cfg, args.workers or [1, 2, 4, 8])
        elif args.which == "eval":
            figures = eval_work(cfg, max(args.workers or [2]))
        elif args.which == "ablation":
            figures = ablation(cfg, args.shape or "tiny", args.steps)
        elif args.which == "raytax":
            figures = raytax(cfg, args.shape or "tiny", args.repeats or 2)
        elif args.which == "asha":
            figures = asha_payoff(cfg)
        else:
            figures = throughput(cfg, args.shape or "tiny", args.repeats or 1)
    for key, value in figures.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):  # one per line
            for row in value:
                print("  ".join(f"{k} {v}" for k, v in row.items() if k != "trials"))
        else:
            print(f"{key:>26}: {value}")
    if args.json:
        atomic_write(args.json, json.dumps(figures, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
