"""Benchmarks that print figures and ratios (not tests: timings flake on busy machines).

    python -m ecomtrain.bench asha [--config FILE] [--grid DIR] [a.b=c ...]
    python -m ecomtrain.bench throughput [--shape tiny|smol135m|qwen0.5b] [--repeats N]
                                         [a.b=c ...]
    python -m ecomtrain.bench ablation [--shape ...] [--steps N] [a.b=c ...]
    python -m ecomtrain.bench raytax [--shape ...] [--repeats N] [a.b=c ...]
    python -m ecomtrain.bench mfu --shape 1b|7b [--matrix [DIMS]] [--config FILE]
                                  [a.b=c ...]   (CUDA GPU)
    python -m ecomtrain.bench data --workers 1 2 4 8 [a.b=c ...]
    python -m ecomtrain.bench eval [--workers 2] [--config FILE] [a.b=c ...]
    python -m ecomtrain.bench scale [--trials 500] [--gpus 64] [--nodes 4] [a.b=c ...]
    python -m ecomtrain.bench corpus [--records 10000000] [--files 100] [--ranks 2]
                                     [--words W] [--object-store-mib M] [a.b=c ...]
    python -m ecomtrain.bench mixture [--seeds 5] [--noise 0.02] [--world 0] [--grid DIR]
                                      [a.b=c ...]
    python -m ecomtrain.bench pack [--pack 4] [--repeats 3] [--config FILE] [a.b=c ...]

Every benchmark also writes its figures as JSON with `--json FILE`; `python -m
ecomtrain.bench NAME --help` says what NAME runs and prints (the doc of its module,
ecomtrain/bench/<module>.py) and its own flags.
"""

from __future__ import annotations

import argparse
import json
import sys

from ecomtrain import console
from ecomtrain.bench import (
    ablation,
    asha,
    corpus,
    data,
    evaluation,
    mfu,
    mixture,
    pack,
    raytax,
    scale,
    throughput,
)
from ecomtrain.config import OVERRIDES_HELP, ConfigError, load_config
from ecomtrain.files import atomic_write

# benchmark -> its module: its doc, its flags (add_arguments), the config overrides it
# starts from (SPACE; CONFIG: another default config) and what it runs (run)
BENCHMARKS = {
    "asha": asha,
    "throughput": throughput,
    "ablation": ablation,
    "raytax": raytax,
    "mfu": mfu,
    "data": data,
    "eval": evaluation,
    "scale": scale,
    "corpus": corpus,
    "mixture": mixture,
    "pack": pack,
}


def parser_of(name: str) -> argparse.ArgumentParser:
    """The parser of one benchmark: its module's flags, then the flags every one takes."""
    module = BENCHMARKS[name]
    parser = argparse.ArgumentParser(
        prog=f"python -m ecomtrain.bench {name}",
        description=module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    default = getattr(module, "CONFIG", None) or "configs/demo.yaml"
    parser.add_argument("--config", help=f"YAML config (default: {default})")
    parser.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    console.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in BENCHMARKS:
        print(__doc__.strip())
        if argv and argv[0] in ("-h", "--help"):
            sys.exit(0)  # as argparse's --help does
        if argv:
            print(f"\nerror: unknown benchmark {argv[0]!r}", file=sys.stderr)
        return 2
    name = argv[0]
    module = BENCHMARKS[name]
    args = parser_of(name).parse_intermixed_args(argv[1:])
    console.setup(args)

    def config():
        default = getattr(module, "CONFIG", None)
        return load_config(args.config or default, module.SPACE + args.overrides)

    try:
        figures = module.run(args, config)
    except ConfigError as e:  # a bad flag, override or --grid
        print(f"error: {e}", file=sys.stderr)
        return 2
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
