"""An adapter on its own: its weights, config and tokenizer without the DeepSpeed optimizer
and scheduler state a checkpoint also holds, and a Hugging Face model card (base
model, tasks, rank, held-out scores). `python -m ecomtrain.export --adapter-only` and the
sweep's `best-adapter/` both write it; it loads with `PeftModel.from_pretrained`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ecomtrain.evaluate.answer import SCORES_FILE
from ecomtrain.evaluate.metrics import standard_error
from ecomtrain.experts import ROUTED_SHAPES
from ecomtrain.files import atomic_write
from ecomtrain.model import (
    adapter_config,
    adapter_files,
    load_tokenizer,
    require_safetensors,
)
from ecomtrain.train.trial import TRIAL_FILE

PEFT_USAGE = """```python
from peft import PeftModel
from transformers import AutoModelForCausalLM
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base}"), "PATH_OR_HUB_ID")
```"""
ROUTED_USAGE = """```python
from ecomtrain.experts import route_rows
from ecomtrain.model import load_adapter, load_model
model = load_adapter(load_model("{base}"), "PATH")
route_rows(model, rows)  # before each batch: every row's capability / task_family
```"""


def adapter_only(adapter: Path, out: Path) -> Path:
    """The adapter's weights, config and tokenizer, its trial's metadata, and a model card."""
    config = adapter_config(adapter)
    require_safetensors(adapter)
    out.mkdir(parents=True, exist_ok=True)
    for name in (*adapter_files(adapter), TRIAL_FILE):
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
    routed = config.get("shape") in ROUTED_SHAPES
    modules = ", ".join(sorted(config.get("target_modules") or []))
    if not routed:
        what = f"A LoRA adapter (rank {config.get('r')}"
    elif config["route_by"] == "token":
        what = f"A mixture of {config['experts']} LoRA experts mixed per token by a learned "
        what += f"router (rank {config['r']} each"
    else:
        what = f"One LoRA expert per {config['route_by']} ({', '.join(config['routes'])}; "
        what += f"rank {config['r']} each, a record routed by its {config['route_by']}"
    lines = [
        "---",
        f"base_model: {base}",
        f"library_name: {'ecomtrain' if routed else 'peft'}",
        "tags: [lora, ecomtrain, e-commerce, shopbench]",
        "---",
        "",
        f"# {trial.get('name') or adapter.name}",
        "",
        f"{what}, alpha {config.get('lora_alpha')}, modules {modules}) for `{base}`, trained "
        "with ecomtrain.",
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
    lines += (ROUTED_USAGE if routed else PEFT_USAGE).format(base=base).splitlines()
    return "\n".join(lines) + "\n"
