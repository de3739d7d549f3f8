"""`python -m ecomtrain.export --adapter DIR --out DIR2`: merge a LoRA adapter into its base.

The result is a standard Hugging Face model directory (safetensors weights, config,
tokenizer) that any inference stack loads without PEFT.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ecomtrain.model import load_model, load_tokenizer


def base_of(adapter: Path) -> str:
    """The base model an adapter was trained on (from its adapter_config.json)."""
    config = adapter / "adapter_config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config}: not found; is {adapter} a PEFT adapter directory?")
    return json.loads(config.read_text())["base_model_name_or_path"]


def merge(adapter: Path, out: Path, base: str | None = None) -> Path:
    """Load base + adapter, fold the LoRA update into the base weights, save to `out`."""
    from peft import PeftModel

    base = base or base_of(adapter)
    model = PeftModel.from_pretrained(load_model(base), adapter)
    merged = model.merge_and_unload()
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
    except (FileNotFoundError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"merged model: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
