"""Ray Tune over ecomtrain; only entry points (sweep, bench) import it.

space   the joint search space: task subsets x mixtures x LoRA rank x any config key
mixtures  mixtures as a dimension: the baselines, the given ones, Dirichlet draws
run     the Tuner: one Ray Train run per point, early stopping, W&B, resume
progress  the sweep's console: a line per trial per report
relay   a trial's Ray Train reports to Tune, from the trial's own thread
"""
