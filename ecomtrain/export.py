"""`python -m ecomtrain.export --adapter DIR --out DIR2 [--adapter-only]`: ship an adapter.

Without `--adapter-only` the LoRA update is merged into its base: a standard Hugging Face
model directory (safetensors weights, config, tokenizer) that any inference stack loads
without PEFT. With it, the adapter alone: its safetensors weights, config and tokenizer,
without the DeepSpeed optimizer and scheduler state a checkpoint also holds, and a
model card (README.md: base model, tasks, rank, scores) ready for `push_to_hub`. It loads
with `PeftModel.from_pretrained(base, DIR2)`.

Routed adapters (`lora.shape`, ecomtrain.experts): a per-capability (per-task) adapter is
one standard LoRA per expert, so DIR2 gets one folder per capability, each a merged model
(or, with `--adapter-only`, a PEFT adapter: serve them side by side with a multi-LoRA
server and pick one per request by its capability). A mixture of experts mixes its LoRAs
per token, which no single merged weight can do: it is shipped as the adapter (config,
safetensors, tokenizer, model card), loaded with `ecomtrain.model.load_adapter`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from ecomtrain import console, experts
from ecomtrain.files import OutputError, check_output
from ecomtrain.model import (
    ModelError,
    adapter_config,
    base_model_of,
    find_adapter,
    is_routed,
    load_adapter,
    load_model,
    load_tokenizer,
)
from ecomtrain.report.card import adapter_only
from ecomtrain.train.trial import TRIAL_FILE


def merge(adapter: Path, out: Path, base: str | None = None) -> Path:
    """Load base + adapter, fold the LoRA update into the base weights, save to `out`."""
    base = base or base_model_of(adapter)
    merged = load_adapter(load_model(base), adapter)
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer_dir = adapter if (adapter / "tokenizer_config.json").is_file() else base
    load_tokenizer(str(tokenizer_dir)).save_pretrained(out)
    return out


def export(adapter: Path, out: Path, base: str | None, only_adapter: bool) -> list[str]:
    """Write the adapter as this module describes; returns a line per folder written."""
    kind = "adapter" if only_adapter else "merged model"

    def ship(source: Path, to: Path) -> Path:
        return adapter_only(source, to) if only_adapter else merge(source, to, base)

    if not is_routed(adapter):
        return [f"{kind}: {ship(adapter, out)}"]
    config = adapter_config(adapter)
    if config["route_by"] == "token":
        note = "" if only_adapter else " (a per-token mixture of experts cannot be merged)"
        return [f"adapter{note}: {adapter_only(adapter, out)}"]
    lines = []
    for route in config["routes"]:
        with tempfile.TemporaryDirectory(prefix="ecomtrain-expert-") as tmp:
            expert = experts.peft_adapter(adapter, route, Path(tmp))
            if (adapter / TRIAL_FILE).is_file():
                shutil.copy2(adapter / TRIAL_FILE, expert / TRIAL_FILE)
            if (adapter / "tokenizer_config.json").is_file():
                load_tokenizer(str(adapter)).save_pretrained(expert)
            lines.append(f"{kind} of expert {route}: {ship(expert, out / route)}")
    return lines


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
        check_output(args.out, "--out", {"--adapter": adapter}, folder=True)
        lines = export(adapter, args.out, args.base, args.adapter_only)
    except (ModelError, OSError, OutputError, ValueError) as e:
        console.log.error("error: %s", e)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
