"""Training: one LoRA fine-tuning run on Ray Train workers with DeepSpeed.

    driver   the run as a Ray Train `TorchTrainer` (what a sweep trial and `train` call)
    loop     the per-worker loop: shard, step, evaluate, checkpoint, report
    engine   DeepSpeed: its config, the engine, ZeRO-3 loading, checkpoint state
    inputs   packed rows as model inputs, attention inside each record, the loss

CLI: `python -m ecomtrain.train`.
"""

from ecomtrain.train.driver import fit, trial_meta

__all__ = ["fit", "trial_meta"]
