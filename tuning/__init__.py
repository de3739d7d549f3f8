"""Ray Tune over ecomtrain; only entry points (sweep, bench) import it.

space   the joint search space: task subsets x LoRA rank x any config key
run     the Tuner: one Ray Train run per point, early stopping, W&B, resume
progress  the sweep's console: a line per trial per report
relay   a trial's Ray Train reports to Tune, from the trial's own thread
pack    packs of trials in one Ray Train run (sweep.pack): the board, the runs, the relay
"""
