"""`python -m ecomtrain.export --adapter DIR --out DIR2 [--adapter-only]`: ship an adapter.

Without `--adapter-only` the LoRA update is merged into its base: a standard Hugging Face
model directory (safetensors weights, config, tokenizer) that any inference stack loads
without PEFT. With it, the adapter alone: its safetensors weights, config and tokenizer,
without the DeepSpeed optimizer state and random generators a checkpoint also holds, and a
model card (README.md: base model, tasks, rank, scores) ready for `push_to_hub`. It loads
with `PeftModel.from_pretrained(base, DIR2)`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ecomtrain import console
from ecomtrain.model import (
    ModelError,
    base_model_of,
    find_adapter,
    load_adapter,
    load_model,
    load_tokenizer,
)
from ecomtrain.report.card import adapter_only


def merge(adapter: Path, out: Path, base: str | None = None) -> Path:
    """Load base + adapter, fold the LoRA update into the base weights, save to `out`."""
    base = base or base_model_of(adapter)
    merged = load_adapter(load_model(base), adapter)
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer_dir = adapter if (adapter / "tokenizer_config.json").is_file() else base
    load_tokenizer(str(tokenizer_dir)).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ecomtrain.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--adapter", required=True, help="PEFT adapter (checkpoint) directory")
    parser.add_argument("--out", required=True, type=Path, help="directory to write")
    parser.add_argument("--base", help="base model to merge into (default: the adapter's own)")
    parser.add_argument(
        "--adapter-only",
        action="store_true",
        help="ship the adapter and a model card instead of a merged model",
    )
    console.add_arguments(parser)
    args = parser.parse_args(argv)
    console.setup(args)
    try:
        adapter = find_adapter(args.adapter)
        if args.adapter_only:
            out = adapter_only(adapter, args.out)
        else:
            out = merge(adapter, args.out, args.base)
    except (ModelError, OSError, ValueError) as e:
        console.log.error("error: %s", e)
        return 2
    print(f"{'adapter' if args.adapter_only else 'merged model'}: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
