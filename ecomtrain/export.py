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
import json
import shutil
import sys
from pathlib import Path

from ecomtrain.evaluate.answer import SCORES_FILE
from ecomtrain.evaluate.metrics import standard_error
from ecomtrain.files import atomic_write
from ecomtrain.model import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    ModelError,
    adapter_config,
    base_model_of,
    find_adapter,
    load_adapter,
    load_model,
    load_tokenizer,
    require_safetensors,
)
from ecomtrain.train.loop import TRIAL_FILE


def merge(adapter: Path, out: Path, base: str | None = None) -> Path:
    """Load base + adapter, fold the LoRA update into the base weights, save to `out`."""
    base = base or base_model_of(adapter)
    merged = load_adapter(load_model(base), adapter)
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer_dir = adapter if (adapter / "tokenizer_config.json").is_file() else base
    load_tokenizer(str(tokenizer_dir)).save_pretrained(out)
    return out


def adapter_only(adapter: Path, out: Path) -> Path:
    """The adapter's weights, config and tokenizer, its trial's metadata, and a model card."""
    config = adapter_config(adapter)
    require_safetensors(adapter)
    out.mkdir(parents=True, exist_ok=True)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, TRIAL_FILE):
        if (adapter / name).is_file():
            shutil.copy2(adapter / name, out / name)
    if (adapter / "tokenizer_config.json").is_file():
        load_tokenizer(str(adapter)).save_pretrained(out)
    atomic_write(out / "README.md", model_card(adapter, config))
    return out


def model_card(adapter: Path, config: dict) -> str:
    """A Hugging Face model card: what the adapter was trained on and how it scored."""
    trial = (
        json.loads((adapter / TRIAL_FILE).read_text()) if (adapter / TRIAL_FILE).is_file() else {}
    )
    base = config.get("base_model_name_or_path", "?")
    lines = [
        "---",
        f"base_model: {base}",
        "library_name: peft",
        "tags: [lora, ecomtrain, e-commerce, shopbench]",
        "---",
        "",
        f"# {trial.get('name') or adapter.name}",
        "",
        f"A LoRA adapter (rank {config.get('r')}, alpha {config.get('lora_alpha')}, modules "
        f"{', '.join(sorted(config.get('target_modules') or []))}) for `{base}`, trained with "
        "ecomtrain.",
        "",
    ]
    if trial.get("tasks"):
        lines += [
            f"Trained on {len(trial['tasks'])} task families: {', '.join(trial['tasks'])}.",
            "",
        ]
    if (adapter / SCORES_FILE).is_file():
        entries = [json.loads(x) for x in (adapter / SCORES_FILE).read_text().splitlines() if x]
        tasks: dict[str, list[float]] = {}
        for e in entries:
            tasks.setdefault(e["task"], []).append(e["score"])
        lines += [
            f"Held-out ShopBench-rule scores ({len(entries)} records; per-record means, the "
            f"standard error of the overall score {standard_error(entries):.4f}):",
            "",
            "| task | records | mean score |",
            "| --- | --- | --- |",
            *[f"| {t} | {len(v)} | {sum(v) / len(v):.4f} |" for t, v in sorted(tasks.items())],
            "",
        ]
    lines += [
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM",
        f'model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base}"), '
        '"PATH_OR_HUB_ID")',
        "```",
    ]
    return "\n".join(lines) + "\n"


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
    args = parser.parse_args(argv)
    try:
        adapter = find_adapter(args.adapter)
        if args.adapter_only:
            out = adapter_only(adapter, args.out)
        else:
            out = merge(adapter, args.out, args.base)
    except (ModelError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{'adapter' if args.adapter_only else 'merged model'}: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
