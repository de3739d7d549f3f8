"""DeepSpeed: the config ecomtrain generates, the engine, ZeRO-3 loading and checkpoints.

The only module that imports deepspeed. The optimizer (AdamW over the adapter's
parameters) and transformers' warmup+cosine schedule are plain torch objects handed to
DeepSpeed, so the same code runs on CPU (gloo) and GPU (NCCL).
"""

from __future__ import annotations

import contextlib
import io

import torch
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from ecomtrain.config import TrainConfig
from ecomtrain.console import verbose

STATE_TAG = "deepspeed"  # sub-directory of a checkpoint holding DeepSpeed's state


def deepspeed_config(cfg: TrainConfig) -> dict:
    """The DeepSpeed JSON config for this run (DeepSpeed derives the global batch size)."""
    zero: dict = {"stage": cfg.zero_stage}
    pin = cfg.use_gpu  # pinned host memory only helps host<->GPU copies
    if cfg.offload_optimizer and cfg.zero_stage > 0:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin}
    if cfg.offload_params and cfg.zero_stage == 3:
        zero["offload_param"] = {"device": "cpu", "pin_memory": pin}
    if cfg.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.precision == "bf16"},
        "fp16": {"enabled": cfg.precision == "fp16", "loss_scale": 0},  # 0: dynamic scaling
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,  # the torch AdamW also runs on offloaded states
        "steps_per_print": 10**9,  # ecomtrain reports its own metrics
        "wall_clock_breakdown": False,
    }


def schedule(optimizer, cfg: TrainConfig):
    """transformers' linear warmup then cosine decay to 10 % of the peak learning rate."""
    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, cfg.warmup_steps, cfg.max_steps, min_lr_rate=0.1
    )


def zero3_loading(cfg: TrainConfig):
    """Under ZeRO-3, the returned object makes `from_pretrained` load weights already
    partitioned (no rank holds the whole base model) and `generate` sync across ranks.
    Keep it referenced for as long as the model lives; None below ZeRO-3."""
    if cfg.zero_stage != 3:
        return None
    from transformers.integrations import HfDeepSpeedConfig

    return HfDeepSpeedConfig(deepspeed_config(cfg))


def initialize(model, cfg: TrainConfig):
    """Wrap `model` in a DeepSpeed engine with AdamW and warmup+cosine, its module compiled
    (torch.compile, in place) when `cfg.compile`."""
    import deepspeed

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # DeepSpeed prints (not logs) that its CPU communication op loaded, on every rank
    with contextlib.nullcontext() if verbose() else contextlib.redirect_stdout(io.StringIO()):
        engine, _, _, lr_schedule = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            lr_scheduler=schedule(optimizer, cfg),
            config=deepspeed_config(cfg),
            dist_init_required=False,
        )
    if cfg.compile:
        engine.compile()
    return engine, lr_schedule


@contextlib.contextmanager
def gathered(engine):
    """Full values of the trainable parameters inside the block (ZeRO-3 partitions them).

    Every rank must enter; a no-op below ZeRO-3."""
    import deepspeed

    params = [p for p in engine.module.parameters() if p.requires_grad]
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield


def save_state(engine, path: str, client_state: dict) -> None:
    """Adapter weights, optimizer and scheduler of every rank (frozen base excluded)."""
    engine.save_checkpoint(
        path, tag=STATE_TAG, client_state=client_state, exclude_frozen_parameters=True
    )


def load_state(engine, path: str) -> dict:
    """Restore what `save_state` wrote; returns its client state. The checkpoint must hold
    exactly the module's state less its frozen parameters (what `save_state` keeps): an
    adapter of other modules, or with more or fewer of them, is an error naming them."""

    def load(src: dict, dst) -> None:
        frozen = {n for n, p in dst.named_parameters() if not p.requires_grad}
        wanted = set(dst.state_dict()) - frozen
        missing, unexpected = sorted(wanted - set(src)), sorted(set(src) - wanted)
        if missing or unexpected:
            raise ValueError(
                f"{path}: the checkpoint does not fit this model's adapter: "
                f"{len(missing)} missing ({', '.join(missing[:3])}), {len(unexpected)} "
                f"unexpected ({', '.join(unexpected[:3])}); was it saved with another "
                "lora config?"
            )
        dst.load_state_dict(src, strict=False)  # the frozen base is not in the checkpoint

    _, client_state = engine.load_checkpoint(path, tag=STATE_TAG, custom_load_fn=load)
    return client_state or {}
