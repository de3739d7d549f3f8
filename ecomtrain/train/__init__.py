"""Training: one LoRA fine-tuning run (or a pack of them) on Ray Train workers with DeepSpeed.

    trial    what a run is given: TrialMeta, the sweep's Prepared parts, TrialInputs, PackInputs
    driver   the run as a Ray Train `TorchTrainer` (what a sweep trial and `train` call)
    loop     the per-worker loop: shard, step, evaluate, checkpoint, report; its LoopState
    pack     trials that share the base: one tree per member over the base's parameters
    engine   DeepSpeed: its config, the engine, ZeRO-3 loading, checkpoint state
    inputs   packed rows as model inputs, attention inside each record, the loss

CLI: `python -m ecomtrain.train`.
"""
