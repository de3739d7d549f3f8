"""Training: one LoRA fine-tuning run on Ray Train workers with DeepSpeed.

    trial    what a run is given: TrialMeta, the sweep's Prepared parts, TrialInputs
    driver   the run as a Ray Train `TorchTrainer` (what a sweep trial and `train` call)
    loop     the per-worker loop: shard, step, evaluate, checkpoint, report; its LoopState
    engine   DeepSpeed: its config, the engine, ZeRO-3 loading, checkpoint state
    inputs   packed rows as model inputs, attention inside each record, the loss

CLI: `python -m ecomtrain.train`.
"""
