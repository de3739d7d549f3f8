"""The mixture search (`sweep.search: mixture`): a Ray Tune searcher that refits the mixture
law's Gaussian process as trials complete and suggests each next mixture where it expects
most.

It first suggests the sweep's own mixtures (the stratified and uniform baselines, the given
ones and `sweep.mixtures.draws` Dirichlet draws) at every rank. Every later trial takes the
(mixture, rank) of highest upper confidence bound, mean + explore * sd, over 2,000 Dirichlet
candidates and small moves from the best trial so far at every rank, under a Gaussian process
of the objective on the trials' realised shares and log2 rank; a trial still running counts
as its predicted end (a constant liar), so trials run at once spread out. Every evaluation a
trial reports counts, at its step (log2(step / max_steps) is an input when evaluations come
at several steps, and the search maximises the prediction at the last step), so a trial an
early-stopping scheduler stopped still tells what its curve was up to then.
"""

from __future__ import annotations

import pickle

import numpy as np
from ray.tune.search import Searcher

from ecomtrain.config import Config
from ecomtrain.report.mixture_law import GaussianProcess, NotConverged, inputs
from tuning.mixtures import mixtures, names, normalised
from tuning.space import alpha_for, mixture_subset

CANDIDATES = 2000  # Dirichlet candidates scored for each suggestion
MOVES = 200  # small moves from the best trial's mixture, scored beside them


class MixtureSearch(Searcher):
    """Suggests (mixture, rank) points shaped as the grid's (subset, mixture, rank, alpha):
    `start`, the mixtures it suggests first at every rank; `names`, what their shares are of;
    `alphas`, each rank's lora.alpha."""

    def __init__(
        self,
        metric: str,
        subset: dict,
        names: list[str],
        over: str,
        start: list[dict],
        alphas: dict[int, float],
        explore: float,
        seed: int,
        max_steps: int,
    ):
        super().__init__(metric=metric, mode="max")
        self.max_steps = max_steps
        self.subset, self.names, self.over = subset, names, over
        self.ranks, self.alphas, self.explore = list(alphas), alphas, explore
        self.rng = np.random.default_rng(seed)
        self.queue = [(m, r) for m in start for r in self.ranks]
        self.suggested = 0
        self.live: dict[str, tuple[np.ndarray | None, int]] = {}
        # (trial, step) -> (realised shares, rank, step, objective): every evaluation
        self.seen: dict[tuple[str, int], tuple[np.ndarray, int, int, float]] = {}
        self.kernels: list | None = None

    @classmethod
    def of(cls, cfg: Config) -> MixtureSearch:
        """The search of a sweep's config: its subset, mixtures, ranks and explore."""
        subset = mixture_subset(cfg)
        return cls(
            cfg.sweep.metric,
            subset,
            names(cfg, subset),
            cfg.sweep.mixtures.over,
            mixtures(cfg, subset),
            {r: alpha_for(cfg.sweep, r, cfg.lora.alpha) for r in cfg.sweep.ranks},
            cfg.sweep.mixtures.explore,
            cfg.sweep.mixtures.seed,
            cfg.train.max_steps,
        )

    def suggest(self, trial_id: str) -> dict:
        if self.queue:
            mixture, rank = self.queue.pop(0)
        else:
            shares, rank = self.next_point()
            chosen = dict(zip(self.names, shares.tolist(), strict=True))
            mixture = {"id": f"search-{self.suggested + 1}", "over": self.over}
            mixture["shares"] = normalised(chosen, self.names)
        self.suggested += 1
        shares = mixture["shares"]
        self.live[trial_id] = (np.array([shares[n] for n in self.names]) if shares else None, rank)
        return {"subset": self.subset, "mixture": mixture, "rank": rank, "alpha": self.alphas[rank]}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.record(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if not error and result:
            self.record(trial_id, result)
        self.live.pop(trial_id, None)

    def record(self, trial_id: str, result: dict) -> None:
        """An evaluation of a trial this search suggested: its realised shares (the
        stratified mixture's are known from its results only), rank, step and objective."""
        if trial_id not in self.live or self.metric not in result:
            return
        shares, rank = self.live[trial_id]
        realised = self.realised(result)
        shares = realised if realised is not None else shares
        if shares is not None:
            step = int(result.get("step", self.max_steps))
            self.seen[(trial_id, step)] = (shares, rank, step, float(result[self.metric]))

    def realised(self, result: dict) -> np.ndarray | None:
        """A trial's realised shares, from the mixture statistics its evaluations report."""
        prefix = "mixture/capability_share/" if self.over == "capabilities" else "mixture/share/"
        if not all(prefix + n in result for n in self.names):
            return None
        shares = np.array([float(result[prefix + n]) for n in self.names])
        return shares / shares.sum() if shares.sum() > 0 else None

    def features(self, shares: np.ndarray, rank: int, step, stepped: bool) -> np.ndarray:
        """The process's inputs: the law's (shares, log2 rank), and log2(step / max_steps)
        when evaluations come at several steps (an early stop's count where it stood)."""
        x = inputs(shares, rank, len(self.ranks) > 1)
        if not stepped:
            return x
        u = np.broadcast_to(np.log2(np.asarray(step, float) / self.max_steps), (len(x),))
        return np.column_stack([x, u])

    def next_point(self) -> tuple[np.ndarray, int]:
        """The (mixture, rank) of highest upper confidence bound at the last step (a
        Dirichlet draw at the next rank in turn while fewer than two evaluations are in, or
        the process does not converge)."""
        k = len(self.names)
        draw = self.rng.dirichlet(np.ones(k), CANDIDATES)
        fallback = draw[0], self.ranks[self.suggested % len(self.ranks)]
        seen = list(self.seen.values())
        if len(seen) < 2:
            return fallback
        stepped = len({step for _, _, step, _ in seen}) > 1
        x = np.vstack([self.features(s[None], r, step, stepped) for s, r, step, _ in seen])
        y = np.array([v for *_, v in seen])[:, None]
        if self.kernels and self.kernels[0].k1.k2.length_scale.size != x.shape[1]:
            self.kernels = None  # the inputs gained the step: start the kernel afresh
        pending = [(s, r) for s, r in self.live.values() if s is not None]
        try:
            model = GaussianProcess(k, self.kernels).fit(x, y)
            self.kernels = [m.kernel_ for m in model.models]
            if pending:  # constant liar: what runs counts as its predicted end
                xp = np.vstack(
                    [self.features(s[None], r, self.max_steps, stepped) for s, r in pending]
                )
                model = model.refit().fit(np.vstack([x, xp]), np.vstack([y, model.predict(xp)]))
        except NotConverged:
            return fallback
        ends = [(v, s) for s, _, step, v in seen if step >= self.max_steps] or [
            (v, s) for s, *_, v in seen
        ]
        best = max(ends, key=lambda e: e[0])[1]
        candidates = np.vstack([draw, self.rng.dirichlet(1 + 50 * best, MOVES)])
        top = (-np.inf, None, None)
        for rank in self.ranks:
            x = self.features(candidates, rank, self.max_steps, stepped)
            mean, sd = model.predict(x, return_std=True)
            ucb = mean[:, 0] + self.explore * sd[:, 0]
            i = int(np.argmax(ucb))
            if ucb[i] > top[0]:
                top = (ucb[i], candidates[i], rank)
        return top[1], top[2]

    def save(self, checkpoint_path: str):
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str):
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
