"""DeepSpeed: the config ecomtrain generates and the engine around a PEFT model.

The only module that imports deepspeed. The optimizer (AdamW over the adapter's
parameters) and the warmup+cosine schedule are plain torch objects handed to
DeepSpeed, so the same code runs on CPU (gloo) and GPU (NCCL).
"""

from __future__ import annotations

import math

import torch

from ecomtrain.config import TrainConfig


def deepspeed_config(cfg: TrainConfig, world_size: int) -> dict:
    """The DeepSpeed JSON config for this run."""
    bf16 = cfg.use_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.micro_batch_size * cfg.grad_accum * world_size,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": bf16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,  # ecomtrain reports its own metrics
        "wall_clock_breakdown": False,
    }


def warmup_cosine(step: int, warmup: int, total: int, floor: float = 0.1) -> float:
    """LR multiplier: linear warmup to 1, then cosine decay to `floor`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def initialize(model, cfg: TrainConfig, world_size: int):
    """Wrap `model` in a DeepSpeed engine with AdamW and warmup+cosine."""
    import deepspeed

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, cfg.warmup_steps, cfg.max_steps)
    )
    engine, optimizer, _, schedule = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=schedule,
        config=deepspeed_config(cfg, world_size),
        dist_init_required=False,
    )
    return engine, optimizer, schedule
