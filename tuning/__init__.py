"""Ray Tune over ecomtrain; only entry points (sweep, bench) import it.

space   the joint search space: task subsets x mixtures x LoRA rank x any config key
mixtures  mixtures as a dimension: the baselines, the given ones, Dirichlet draws
mixture_search  the mixture search: a searcher refitting the law's Gaussian process
run     the Tuner: one Ray Train run per point, early stopping, W&B, resume
rank_asha  ASHA within each LoRA rank
progress  the sweep's console: a line per trial per report
relay   a trial's Ray Train reports to Tune, from the trial's own thread
pack    packs of trials in one Ray Train run (sweep.pack): the board, the runs, the relay
"""
