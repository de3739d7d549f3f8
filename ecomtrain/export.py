"""`python -m ecomtrain.export --adapter DIR --out DIR2`: merge a LoRA adapter into its base.

The result is a standard Hugging Face model directory (safetensors weights, config,
tokenizer) that any inference stack loads without PEFT.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ecomtrain.model import ModelError, base_model_of, load_adapter, load_model, load_tokenizer


def merge(adapter: Path, out: Path, base: str | None = None) -> Path:
    """Load base + adapter, fold the LoRA update into the base weights, save to `out`."""
    base = base or base_model_of(adapter)
    merged = load_adapter(load_model(base), adapter)
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer_dir = adapter if (adapter / "tokenizer_config.json").is_file() else base
    load_tokenizer(str(tokenizer_dir)).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ecomtrain.export", description=__doc__)
    parser.add_argument("--adapter", required=True, type=Path, help="PEFT adapter directory")
    parser.add_argument("--out", required=True, type=Path, help="merged model directory")
    parser.add_argument("--base", help="base model (default: the adapter's own)")
    args = parser.parse_args(argv)
    try:
        out = merge(args.adapter, args.out, args.base)
    except (ModelError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"merged model: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
