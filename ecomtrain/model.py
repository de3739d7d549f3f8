"""Base models, tokenizers, LoRA adapters, and what an adapter directory says about itself.

The one place a causal LM is loaded (`load_model`), prepared for training (gradient
checkpointing + PEFT LoRA, or the routed shapes of ecomtrain.experts: `training_model`), an
adapter saved and applied (`save_adapter`, `load_adapter`), and an adapter's base model is
read (`base_model_of`). A hub id and a local directory go through the same `from_pretrained`.
An adapter directory is a PEFT one (adapter_config.json) or a routed one
(routed_adapter.json); both hold safetensors weights and name their base model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ecomtrain import experts
from ecomtrain.config import LoraConfig, peft_targets

ADAPTER_CONFIG = "adapter_config.json"  # what makes a folder a PEFT adapter
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # the only adapter weights ecomtrain loads
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class ModelError(ValueError):
    """A model or adapter that cannot be used; the message names the path and why."""


def load_tokenizer(path: str):
    """The model's tokenizer, with a pad token (eos when the model has none)."""
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as e:  # no such folder or hub id, no network, ...
        raise ModelError(f"{path}: cannot load its tokenizer ({first_line(e)})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def trainable_count(model) -> int:
    """The model's trainable parameters (a ZeRO-3 partitioned one counted whole): what a
    trial reports as `trainable_params`, the report's capacity axis."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)


def check_model_folder(name: str, flag: str) -> None:
    """A model named as a path (starting with / . or ~) must be a folder here: else
    `from_pretrained` takes it for a hub id and fails deep inside with a traceback."""
    if name.startswith(("/", ".", "~")) and not Path(name).expanduser().is_dir():
        raise ModelError(
            f"{flag} {name}: no such folder (a local model is a folder holding its config.json "
            "and weights; a hub id starts with no / . or ~)"
        )


def require_chat_template(tok) -> None:
    """A chat prompt needs the tokenizer's chat template: a base model has none."""
    if tok.chat_template is None:
        raise ModelError(
            f"{tok.name_or_path}: tokenizer has no chat template; use an instruct/chat model, "
            "or model.prompt_format=raw (evaluate: --prompt-format raw) for a base model"
        )


def load_model(
    path: str,
    attn_implementation: str = "sdpa",
    precision: str = "fp32",
    quantization: str = "none",
):
    """The base causal LM from a local directory or hub id; with `quantization` "nf4", its
    linear layers in 4 bits (bitsandbytes; QLoRA), computing in `precision`."""
    extra = {}
    if quantization == "nf4":
        extra["quantization_config"] = nf4_config(DTYPES[precision])
    try:
        return AutoModelForCausalLM.from_pretrained(
            path, dtype=DTYPES[precision], attn_implementation=attn_implementation, **extra
        )
    except OSError as e:  # no such folder or hub id, no network, ...
        raise ModelError(f"{path}: cannot load the model ({first_line(e)})") from None


def first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def nf4_config(dtype: torch.dtype):
    """QLoRA's 4-bit NormalFloat with double quantisation, matmuls in `dtype`; a clear
    error where bitsandbytes is not installed."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise ModelError(
            f"model.quantization=nf4 needs bitsandbytes: pip install 'ecomtrain[qlora]' ({e})"
        ) from e
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_quant_storage=dtype,
    )


def add_lora(model, cfg: LoraConfig):
    """Wrap `model` with a PEFT LoRA adapter; only adapter weights stay trainable."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=peft_targets(cfg.target_modules),
        use_rslora=cfg.use_rslora,
        use_dora=cfg.use_dora,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg)


def training_model(base, lora: LoraConfig, gradient_checkpointing: bool, routes=None):
    """`base` ready for LoRA training: activations recomputed in backward when asked, and
    wrapped with the adapter of `lora.shape` (only its weights trainable). `routes`: the
    trial's expert labels, for the label-routed shapes (ecomtrain.experts.spec)."""
    if getattr(base, "is_loaded_in_4bit", False):  # QLoRA: norms in fp32, as PEFT prepares
        from peft import prepare_model_for_kbit_training

        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    if gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
    if lora.shape == "single":
        return add_lora(base, lora)
    return experts.add_experts(base, experts.spec(lora, routes))


def save_adapter(model, path: str | Path) -> None:
    """The adapter of a training model (PEFT or routed) in `path`, safetensors only."""
    if experts.config_of(model):
        experts.save(model, path)
    else:
        model.save_pretrained(path)


def find_adapter(path: str | Path) -> Path:
    """The adapter directory `path` (PEFT or routed), or an error listing the adapters found
    below it."""
    root = Path(path)
    if is_routed(root) or (root / ADAPTER_CONFIG).is_file():
        return root
    if not root.is_dir():
        raise ModelError(f"{path}: adapter directory not found")
    found = sorted(
        p.parent
        for name in (ADAPTER_CONFIG, experts.ROUTED_CONFIG)
        for p in root.glob(f"**/{name}")
    )
    if not found:
        raise ModelError(
            f"{path}: no {ADAPTER_CONFIG} or {experts.ROUTED_CONFIG} in or below it; not an adapter"
        )
    listed = "\n  ".join(str(p) for p in found[:10])
    more = f"\n  ... and {len(found) - 10} more" if len(found) > 10 else ""
    raise ModelError(
        f"{path}: not an adapter directory; pass one of the {len(found)} below it:\n  {listed}{more}"
    )


def is_routed(adapter: str | Path) -> bool:
    """Whether `adapter` is a routed adapter (ecomtrain.experts), not a PEFT one."""
    return (Path(adapter) / experts.ROUTED_CONFIG).is_file()


def adapter_files(adapter: str | Path) -> tuple[str, str]:
    """The names of the adapter's config and weights files."""
    if is_routed(adapter):
        return experts.ROUTED_CONFIG, experts.ROUTED_WEIGHTS
    return ADAPTER_CONFIG, ADAPTER_WEIGHTS


def adapter_config(adapter: str | Path) -> dict:
    """The adapter's config (adapter_config.json, or a routed adapter's), with a clear error
    when it is missing or unreadable."""
    path = Path(adapter) / adapter_files(adapter)[0]
    if not path.is_file():
        raise ModelError(f"{path}: not found; is {adapter} a PEFT adapter directory?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot read adapter config: {e}") from None


def load_adapter(model, adapter: str | Path):
    """`model` with the adapter in `adapter` applied: a PEFT adapter merged into it, a routed
    one wrapped around it (its gates depend on each record or token; route its inputs with
    ecomtrain.experts.route_rows). Only safetensors weights are loaded: a pickled
    adapter_model.bin could run code."""
    from peft import PeftModel

    require_safetensors(adapter)
    if is_routed(adapter):
        try:
            return experts.load(model, adapter)
        except (KeyError, ValueError) as e:
            raise ModelError(f"{adapter}: cannot load the routed adapter: {e}") from None
    try:
        peft = PeftModel.from_pretrained(model, adapter, use_safetensors=True)
    except (KeyError, RuntimeError, ValueError) as e:  # e.g. modules the base lacks
        raise ModelError(f"{adapter}: does not fit the base model: {e}") from None
    return peft.merge_and_unload()


def require_safetensors(adapter: str | Path) -> Path:
    """The adapter's safetensors weights, read whole and checked against its config (see
    `check_weights`); ecomtrain neither loads nor ships any other kind."""
    weights = adapter_files(adapter)[1]
    path = Path(adapter) / weights
    if not path.is_file():
        raise ModelError(
            f"{adapter}: no {weights}; only safetensors adapters are used (a pickled "
            "adapter_model.bin could run code)"
        )
    check_weights(path, adapter_config(adapter))
    return path


def check_weights(path: Path, config: dict) -> None:
    """A complete safetensors file (not empty, not cut short) whose LoRA matrices have the
    rank its config gives (a PEFT adapter's `r`, unless a rank_pattern varies it; a routed
    adapter's shapes are checked as it loads)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelError(f"{path}: not a complete safetensors file ({e})") from None
    if not tensors:
        raise ModelError(f"{path}: holds no tensors")
    if is_routed(path.parent):
        return
    pairs = sorted(k for k in tensors if k.endswith("lora_A.weight"))
    if not pairs:
        raise ModelError(f"{path}: no LoRA weights (no lora_A.weight tensor)")
    r = config.get("r")
    for a in pairs:
        b = a.replace("lora_A.weight", "lora_B.weight")
        rank = tensors[a].shape[0]
        if b not in tensors or tensors[b].shape[1] != rank:
            raise ModelError(f"{path}: {a} has no lora_B.weight of rank {rank} beside it")
        if not config.get("rank_pattern") and rank != r:
            raise ModelError(
                f"{path}: {a} has rank {rank}, but {ADAPTER_CONFIG} says r: {r}; "
                "the weights and the config are from different adapters"
            )


def base_model_of(adapter: str | Path) -> str:
    """The base model an adapter was trained on (its config's base_model_name_or_path)."""
    where = Path(adapter) / adapter_files(adapter)[0]
    base = adapter_config(adapter).get("base_model_name_or_path")
    if not base:
        raise ModelError(
            f"{where}: base_model_name_or_path: missing; pass the base model (evaluate: "
            "--model, export: --base)"
        )
    if base.startswith(("/", ".")) and not Path(base).is_dir():
        raise ModelError(
            f"{where}: base_model_name_or_path {base!r} does not exist here; pass the base "
            "model's path (evaluate: --model, export: --base)"
        )
    return base
