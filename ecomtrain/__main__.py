"""`ecomtrain COMMAND ...` (or `python -m ecomtrain COMMAND ...`): every entry point, one table.

sweep      sweep task subsets x LoRA rank on a Ray cluster      (python -m ecomtrain.sweep)
train      one fine-tuning run                                  (python -m ecomtrain.train)
evaluate   score, generate and run the ShopBench evaluator      (python -m ecomtrain.evaluate)
data       validate corpus files, packing statistics            (python -m ecomtrain.data)
generate   LLM data generation from a spec                      (python -m ecomtrain.generate)
report     rebuild a sweep's report from its trials.csv         (python -m ecomtrain.report)
export     merge an adapter into its base model                 (python -m ecomtrain.export)
bench      benchmarks that print figures                        (python -m ecomtrain.bench)
config     what each config key means: --explain [KEY]          (python -m ecomtrain.config)
"""

from __future__ import annotations

import importlib
import sys

# command -> the module whose `main(argv)` runs it
COMMANDS = {
    "sweep": "ecomtrain.sweep",
    "train": "ecomtrain.train.__main__",
    "evaluate": "ecomtrain.evaluate.__main__",
    "data": "ecomtrain.data.__main__",
    "generate": "ecomtrain.generate.__main__",
    "report": "ecomtrain.report.__main__",
    "export": "ecomtrain.export",
    "bench": "ecomtrain.bench.__main__",
    "config": "ecomtrain.config",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0 if argv else 2
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
