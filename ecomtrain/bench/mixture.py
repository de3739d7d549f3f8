"""`mixture` measures how close each way of choosing a mixture comes to the best one for the
compute it spends: regret (the best mixture and rank's true score less that of the one a
method recommends) against trial-steps, over `--seeds` seeds of the search, mean and worst.

The methods: "grid" (a simplex lattice of mixtures and the stratified and uniform ones, at
every rank, in a random order; it recommends its best trial), "random" (Dirichlet mixtures
at random ranks; its best trial), "law" (the one-shot mixture law, as RegMix: the baselines
and Dirichlet mixtures, then the law's predicted-best mixture at its best rank, trained once
more and counted), "adaptive" (the mixture search, tuning/mixture_search.py: its best trial)
and "adaptive+asha-by-rank" (the same under ASHA within each rank); "stratified" is the
stratified mixture at the best rank. Budgets are shares of the grid's trial-steps. A second
table runs random trials one at a time under no early stopping, ASHA and ASHA within each
rank (Tune's own schedulers as a sweep builds them): trial-steps spent, regret, and how often
the recommended trial has the best rank.

The objective is simulated (`Surface`): each of four tasks scores base + gain * (1 -
exp(-rate * exposure)), its exposure the shares that teach it (its own and some transfer
from the others) times the steps the rank's capacity makes count, C (1 - exp(-steps / C)) with
C = rank / 8 of the budget: a low rank follows a high one early and falls behind later. Its
best mixture lies inside the simplex and moves with the rank; every evaluation adds noise
(`--noise`) to each task's score. With `--grid DIR` it simulates nothing: the methods replay
a finished sweep of mixtures (its trials.csv), each choosing among the grid's own (mixture,
rank) cells (a proposal or suggestion takes the nearest untried one); with per-record scores
beside the trials' checkpoints, the methods choose on half of each task's records (a stable
hash of the record) and regret is measured on the other half, else both use trials.csv's
score (and the output says so). ASHA needs evaluation curves, so a replay has no ASHA table.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from ray.tune.schedulers import TrialScheduler

from ecomtrain.config import Config, ConfigError
from ecomtrain.data.mixture import STRATIFIED, UNIFORM
from ecomtrain.evaluate.answer import SCORES_FILE
from ecomtrain.files import read_text
from ecomtrain.report import statistics
from ecomtrain.report.mixture_law import fit_law
from ecomtrain.report.trials import load_trials
from tuning.mixture_search import MixtureSearch
from tuning.run import scheduler

SPACE = [  # the simulated sweep: steps, ranks, ASHA's rule, the search's exploration
    "train.max_steps=600",
    "train.eval_every=60",
    "sweep.ranks=[2, 8, 32]",
    "sweep.grace_period=60",
    "sweep.reduction_factor=3",
    "sweep.mixtures.explore=2.0",
]
TASKS = ["query_ner", "numeric_reasoning", "review_rating", "title_translation"]  # 4 tracks
BUDGETS = (0.2, 0.3, 0.5, 1.0)  # shares of the grid's trial-steps: the goals are 0.2 and 0.3
DRAWS = 2  # the mixture search's Dirichlet draws beside the two baselines
ASHA_TRIALS = 27  # random trials the early-stopping table launches


class Surface:
    """A simulated mixture response (see the module's doc), seeded."""

    def __init__(self, seed: int, max_steps: int, noise: float):
        k = len(TASKS)
        # world 0 as designed: the largest task is learnt fastest and the smallest slowest,
        # so the stratified mixture spends most steps where they pay least; other worlds
        # scale each figure by a random factor in [0.7, 1.3]
        jitter = np.random.default_rng([seed, 7]).uniform(0.7, 1.3, (4, k)) if seed else 1.0
        design = np.array([[12, 4, 8, 2], [0.5, 0.6, 0.4, 0.7], [0.1] * 4, [5000, 1000, 2500, 500]])
        self.rate, self.gain, self.base, self.sizes = design * jitter  # sizes: records per task
        self.transfer = np.eye(k) + 0.05 * (1 - np.eye(k))  # exposure of task i from share j
        self.transfer[0, 2] = self.transfer[2, 0] = 0.3  # two tasks that teach each other
        self.max_steps, self.noise, self.k = max_steps, noise, k

    def tasks(self, shares: np.ndarray, rank: int, step: int) -> np.ndarray:
        capacity = rank / 8 * self.max_steps
        counted = capacity * (1 - math.exp(-step / capacity)) / self.max_steps
        exposure = np.atleast_2d(shares) @ self.transfer.T * counted
        return self.base + self.gain * (1 - np.exp(-self.rate * exposure))

    def score(self, shares: np.ndarray, rank: int, step: int | None = None) -> np.ndarray:
        """The true (noise-free) score, one per row of `shares`."""
        return self.tasks(shares, rank, step or self.max_steps).mean(axis=1)

    def observe(self, shares: np.ndarray, rank: int, step: int, rng) -> np.ndarray:
        """One evaluation: each task's score with noise."""
        return self.tasks(shares, rank, step)[0] + rng.normal(0, self.noise, self.k)

    def stratified(self) -> np.ndarray:
        return self.sizes / self.sizes.sum()

    def best(self, ranks: list[int]) -> tuple[float, int, np.ndarray]:
        """The true best (score, rank, mixture), by dense search polished by Nelder-Mead."""
        from scipy import optimize

        rng = np.random.default_rng(0)
        top = (-np.inf, 0, None)
        for rank in ranks:
            cand = rng.dirichlet(np.ones(self.k), 20000)
            start = cand[int(np.argmax(self.score(cand, rank)))]
            res = optimize.minimize(
                lambda th, r=rank: -self.score(_softmax(th), r)[0],
                np.log(np.maximum(start, 1e-9)),
                method="Nelder-Mead",
                options={"maxiter": 4000, "xatol": 1e-8, "fatol": 1e-10},
            )
            x = _softmax(res.x)
            if self.score(x, rank)[0] > top[0]:
                top = (float(self.score(x, rank)[0]), rank, x)
        return top


def _softmax(theta: np.ndarray) -> np.ndarray:
    e = np.exp(theta - theta.max())
    return e / e.sum()


# --- a search: trials in order, each with what it spent and what it found ---------------------------


class Run:
    """One search's trials: (shares, rank, steps trained, observed per-task scores at the end
    or where stopped), and what it recommends after each."""

    def __init__(self, truth, max_steps: int):
        self.truth, self.max_steps = truth, max_steps  # truth(shares, rank) -> true score
        self.trials: list[tuple[np.ndarray, int, int, np.ndarray]] = []
        self.curve: list[tuple[int, float]] = []  # (trial-steps so far, regret-free true value)

    def add(self, shares, rank: int, steps: int, observed: np.ndarray, pick=None) -> None:
        """A trial; `pick`: the (shares, rank) recommended now, else the best finished trial."""
        self.trials.append((np.asarray(shares, float), rank, steps, observed))
        if pick is None:
            done = [t for t in self.trials if t[2] >= self.max_steps]
            if not done:
                return
            shares, rank = max(done, key=lambda t: t[3].mean())[:2]
        else:
            shares, rank = pick
        self.curve.append((self.spent, float(self.truth(shares, rank))))

    @property
    def spent(self) -> int:
        return sum(t[2] for t in self.trials)

    def value_at(self, budget: int) -> float | None:
        """The true value of what it recommended having spent at most `budget` steps."""
        within = [v for steps, v in self.curve if steps <= budget]
        return within[-1] if within else None


def lattice(k: int, count: int) -> list[np.ndarray]:
    """Simplex lattice points (shares in steps of 1/m), m the largest with at most `count`."""
    m = 1
    while math.comb(m + 1 + k - 1, k - 1) <= count:
        m += 1
    points = [np.array(c) / m for c in itertools.product(range(m + 1), repeat=k) if sum(c) == m]
    return points


def rows_of(run: Run, mixtures: list[str]) -> list[dict]:
    """A search's finished trials as the law reads them (trials.csv's columns)."""
    rows = []
    for i, ((shares, rank, steps, observed), mid) in enumerate(
        zip(run.trials, mixtures, strict=True)
    ):
        if steps < run.max_steps:
            continue
        row = {"trial": f"t{i}", "mixture": mid, "rank": rank, "metric": "score", "error": ""}
        row |= {"score": float(observed.mean())}
        row |= {f"mix/{t}": float(s) for t, s in zip(TASKS, shares, strict=True)}
        row |= {f"task/{t}": float(v) for t, v in zip(TASKS, observed, strict=True)}
        rows.append(row)
    return rows


# --- the methods on the simulated surface ---------------------------------------------------------


def trial(
    surface: Surface, shares, rank: int, rng, every: int, stop=None
) -> tuple[int, np.ndarray]:
    """Train one simulated trial: its evaluations every `every` steps, `stop(step, observed)`
    told of each and deciding whether to stop (a scheduler: never at the last step);
    (steps trained, last observation)."""
    seed_effect = rng.normal(0, surface.noise, surface.k)  # the trial's own seed
    for step in range(every, surface.max_steps + 1, every):
        observed = surface.observe(shares, rank, step, rng) + seed_effect
        if stop is not None and stop(step, observed) and step < surface.max_steps:
            return step, observed
    return surface.max_steps, observed


def stopper(sched, trial_id: str, rank: int, search=None, shares: dict | None = None):
    """What `trial` asks after each evaluation: the search (when there is one) is told of it,
    then the scheduler (when there is one) decides; `shares`: what the evaluation reports of
    the mixture."""
    handle = SimpleNamespace(trial_id=trial_id, config={"rank": rank})
    if sched is not None:
        sched.on_trial_add(None, handle)
    open_ = [sched is not None]

    def stop(step: int, observed: np.ndarray) -> bool:
        result = {"step": step, "score": float(observed.mean())} | (shares or {})
        if search is not None:
            search.on_trial_result(trial_id, result)
        if not open_[0]:
            return False
        verdict = sched.on_trial_result(None, handle, result) == TrialScheduler.STOP
        if verdict or step >= handle_max(sched):
            sched.on_trial_remove(None, handle)
            open_[0] = False
        return verdict

    return stop


def handle_max(sched) -> int:
    """The last step of a scheduler's trials (ASHA's max_t)."""
    return sched.asha["max_t"] if hasattr(sched, "asha") else sched._max_t


def baselines(surface: Surface) -> list[tuple[str, np.ndarray]]:
    k = surface.k
    return [(STRATIFIED, surface.stratified()), (UNIFORM, np.full(k, 1 / k))]


def run_grid(surface: Surface, ranks, total_mixtures: int, seed: int, every: int, truth) -> Run:
    rng = np.random.default_rng([seed, 1])
    mixes = [s for _, s in baselines(surface)] + lattice(surface.k, total_mixtures - 2)
    order = [(s, r) for s in mixes for r in ranks]
    run = Run(truth, surface.max_steps)
    for i in rng.permutation(len(order)):
        shares, rank = order[i]
        steps, observed = trial(surface, shares, rank, rng, every)
        run.add(shares, rank, steps, observed)
    return run


def run_random(surface: Surface, ranks, n: int, seed: int, every: int, truth) -> Run:
    rng = np.random.default_rng([seed, 2])
    run = Run(truth, surface.max_steps)
    for _ in range(n):
        shares, rank = rng.dirichlet(np.ones(surface.k)), int(rng.choice(ranks))
        steps, observed = trial(surface, shares, rank, rng, every)
        run.add(shares, rank, steps, observed)
    return run


def run_law(surface: Surface, ranks, budget: int, seed: int, every: int, truth) -> tuple[Run, dict]:
    """The one-shot law with `budget` trials: the baselines and Dirichlet mixtures at the
    ranks in turn for all but one, then its proposal at its best rank (that last trial
    counted); its best trial when the law has no proposal."""
    rng = np.random.default_rng([seed, 3])
    run, names = Run(truth, surface.max_steps), []
    mixes = baselines(surface)
    while len(mixes) * len(ranks) < budget - 1:
        mixes.append((f"dirichlet-{len(mixes) - 1}", rng.dirichlet(np.ones(surface.k))))
    order = [(m, r) for m in mixes for r in ranks][: budget - 1]
    for (mid, shares), rank in order:
        steps, observed = trial(surface, shares, rank, rng, every)
        run.add(shares, rank, steps, observed)
        names.append(mid)
    law = fit_law(rows_of(run, names), boot=10, seed=seed)
    if not law.ok:
        return run, {"proposed": False, "message": law.message}
    top = max(law.proposals, key=lambda p: p.predicted)
    shares = np.array([top.shares[t] for t in TASKS])
    steps, observed = trial(surface, shares, top.rank, rng, every)
    run.add(shares, top.rank, steps, observed, pick=(shares, top.rank))
    return run, {"proposed": True, "family": law.chosen}


def run_adaptive(
    cfg: Config, surface: Surface, ranks, n: int, seed: int, every: int, truth, kind: str
) -> Run:
    """The mixture search for `n` trials, one at a time, under scheduler `kind` ("fifo",
    "asha", "asha-by-rank": Tune's own, as the sweep builds them), told of every evaluation."""
    rng = np.random.default_rng([seed, 4])
    start = [
        {"id": mid, "over": "tasks", "shares": dict(zip(TASKS, s.tolist(), strict=True))}
        for mid, s in baselines(surface)
    ]
    start += [
        {"id": f"dirichlet-{i + 1}", "over": "tasks",
         "shares": dict(zip(TASKS, d.tolist(), strict=True))}
        for i, d in enumerate(rng.dirichlet(np.ones(surface.k), DRAWS))
    ]  # fmt: skip
    search = MixtureSearch(
        "score", {"id": "sim", "tasks": TASKS}, TASKS, "tasks", start, dict.fromkeys(ranks, 1.0),
        cfg.sweep.mixtures.explore, seed, surface.max_steps,
    )  # fmt: skip
    sched = scheduler(with_scheduler(cfg, kind))
    run = Run(truth, surface.max_steps)
    for i in range(n):
        point = search.suggest(f"t{i}")
        shares, rank = np.array([point["mixture"]["shares"][t] for t in TASKS]), point["rank"]
        reported = {f"mixture/share/{t}": float(s) for t, s in zip(TASKS, shares, strict=True)}
        stop = stopper(sched, f"t{i}", rank, search, reported)
        steps, observed = trial(surface, shares, rank, rng, every, stop)
        last = {"score": float(observed.mean()), "step": steps} | reported
        search.on_trial_complete(f"t{i}", last)
        run.add(shares, rank, steps, observed)
    return run


def run_scheduled(
    cfg: Config, surface: Surface, ranks, kind: str, seed: int, every: int, truth
) -> Run:
    """ASHA_TRIALS random trials one at a time under scheduler `kind` (see `with_scheduler`)."""
    rng = np.random.default_rng([seed, 5])
    sched = scheduler(with_scheduler(cfg, kind))
    run = Run(truth, surface.max_steps)
    for i in range(ASHA_TRIALS):
        shares, rank = rng.dirichlet(np.ones(surface.k)), int(ranks[i % len(ranks)])
        steps, observed = trial(surface, shares, rank, rng, every, stopper(sched, f"t{i}", rank))
        run.add(shares, rank, steps, observed)
    return run


def with_scheduler(cfg: Config, kind: str) -> Config:
    """`cfg` under scheduler `kind`; "asha, grace N" is ASHA with its first rung at step N."""
    name, _, grace = kind.partition(", grace ")
    sweep = dataclasses.replace(cfg.sweep, scheduler=name)
    if grace:
        sweep = dataclasses.replace(sweep, grace_period=int(grace))
    return dataclasses.replace(cfg, sweep=sweep)


def summary(runs: list[Run], best: float, budget: int) -> dict:
    """Regret at `budget` trial-steps over the seeds' runs: mean and worst (a run that had
    nothing to recommend yet counts the worst regret of any)."""
    values = [r.value_at(budget) for r in runs]
    regrets = [best - v for v in values if v is not None]
    worst = max(regrets) if regrets else None
    if worst is not None and len(regrets) < len(values):
        regrets += [worst] * (len(values) - len(regrets))
    if not regrets:
        return {"regret_mean": None, "regret_worst": None}
    return {"regret_mean": round(float(np.mean(regrets)), 4), "regret_worst": round(worst, 4)}


def simulate(cfg: Config, seeds: int, noise: float, world: int) -> dict:
    ranks, steps, every = list(cfg.sweep.ranks), cfg.train.max_steps, cfg.train.eval_every
    surface = Surface(world, steps, noise)
    best, best_rank, best_shares = surface.best(ranks)

    def truth(shares, rank):
        return surface.score(np.asarray(shares), rank)[0]

    grid_mixtures = 12
    grid_trials = grid_mixtures * len(ranks)
    budgets = [max(1, round(b * grid_trials)) for b in BUDGETS]
    strat = max(truth(surface.stratified(), r) for r in ranks)
    searched = {
        "adaptive": "fifo",
        "adaptive+asha": "asha",
        "adaptive+asha-by-rank": "asha-by-rank",
    }
    methods: dict[str, list[Run]] = {name: [] for name in ["grid", "random", *searched]}
    laws: dict[int, list[Run]] = {b: [] for b in budgets}
    notes: list[str] = []
    for seed in range(seeds):
        methods["grid"].append(run_grid(surface, ranks, grid_mixtures, seed, every, truth))
        methods["random"].append(run_random(surface, ranks, grid_trials, seed, every, truth))
        for name, kind in searched.items():
            run = run_adaptive(cfg, surface, ranks, grid_trials, seed, every, truth, kind)
            methods[name].append(run)
        for b in budgets:
            run, info = run_law(surface, ranks, b, seed, every, truth)
            laws[b].append(run)
            if not info["proposed"]:
                notes.append(f"law, {b} trials, seed {seed}: {info['message']}")
    rows = []
    for b, share in zip(budgets, BUDGETS, strict=True):
        at = b * steps
        for name, runs in methods.items():
            rows.append(
                {"method": name, "budget": share, "trial_steps": at, **summary(runs, best, at)}
            )
        rows.append(
            {"method": "law", "budget": share, "trial_steps": at, **summary(laws[b], best, at)}
        )
        rows.append(
            {"method": "stratified", "budget": share, "trial_steps": len(ranks) * steps,
             "regret_mean": round(best - strat, 4), "regret_worst": round(best - strat, 4)}
        )  # fmt: skip
    early = []
    late = f"asha, grace {steps // 2 // every * every}"  # the first rung past the divergence
    for kind in ("fifo", "asha", "asha-by-rank", late):
        runs = [run_scheduled(cfg, surface, ranks, kind, s, every, truth) for s in range(seeds)]
        spent = [r.spent for r in runs]
        regrets = [best - r.curve[-1][1] for r in runs if r.curve]
        right_rank = 0
        for r in runs:
            done = [t for t in r.trials if t[2] >= steps]
            right_rank += bool(done) and max(done, key=lambda t: t[3].mean())[1] == best_rank
        early.append(
            {
                "scheduler": kind,
                "trials": ASHA_TRIALS,
                "trial_steps_mean": round(float(np.mean(spent))),
                "regret_mean": round(float(np.mean(regrets)), 4),
                "regret_worst": round(float(np.max(regrets)), 4),
                "best_rank_picked": f"{right_rank} of {seeds}",
            }
        )
    return {
        "objective": "simulated",
        "seeds": seeds,
        "noise": noise,
        "world": world,
        "ranks": ranks,
        "max_steps": steps,
        "eval_every": every,
        "best": {"score": round(best, 4), "rank": best_rank,
                 "shares": {t: round(float(s), 3) for t, s in zip(TASKS, best_shares, strict=True)}},
        "grid_trial_steps": grid_trials * steps,
        "regret": rows,
        "early_stopping": early,
        "notes": notes,
    }  # fmt: skip


# --- replaying a finished sweep of mixtures -------------------------------------------------------


def half_of(record_id: str) -> int:
    """A record's half (0 or 1) by a stable hash of its id."""
    return hashlib.blake2b(record_id.encode(), digest_size=1).digest()[0] & 1


def replay_cells(folder: str) -> tuple[list[dict], str]:
    """A finished sweep's (mixture, rank) cells: realised shares, the score the methods choose
    on and the score regret is measured on (halves of each task's records when per-record
    scores are there), averaged over seeds; and how the two were split."""
    rows = [r for r in load_trials(Path(folder) / "trials.csv") if r.get("score") is not None]
    if not rows or not any(r.get("mixture") for r in rows):
        raise ValueError(f"{folder}/trials.csv: no scored trials with a mixture column")
    names = sorted({k[4:] for r in rows for k in r if k.startswith("mix/")})
    halves, split = {}, "records halved by a hash: choose on one half, regret on the other"
    for r in rows:
        try:
            entries = statistics.read_scores(
                read_text(f"{r['checkpoint']}/{SCORES_FILE}").splitlines()
            )
        except (OSError, TypeError, KeyError):
            halves = None
            break
        scores = []
        for half in (0, 1):
            part = {k: e for k, e in entries.items() if half_of(k) == half}
            s = statistics.align([part])
            scores.append(float(statistics.overall(s, statistics.task_scores(s))[0, 0]))
        halves[r["trial"]] = scores
    if halves is None:
        split = (
            "trials.csv's score for both (no per-record scores): regret on the records that chose"
        )
    cells: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        cells.setdefault((r["mixture"], r["rank"]), []).append(r)
    out = []
    for (mid, rank), members in cells.items():
        choose = [halves[m["trial"]][0] if halves else m["score"] for m in members]
        truth = [halves[m["trial"]][1] if halves else m["score"] for m in members]
        shares = np.mean([[m.get(f"mix/{n}") or 0.0 for n in names] for m in members], axis=0)
        out.append(
            {"mixture": mid, "rank": rank, "shares": shares, "choose": float(np.mean(choose)),
             "truth": float(np.mean(truth)), "rows": members}
        )  # fmt: skip
    return out, split


def replay(cfg: Config, folder: str, seeds: int) -> dict:
    """The methods over a finished sweep's cells (see the module's doc)."""
    cells, split = replay_cells(folder)
    names = sorted({k[4:] for c in cells for r in c["rows"] for k in r if k.startswith("mix/")})
    best = max(c["truth"] for c in cells)
    ranks = sorted({c["rank"] for c in cells})
    n = len(cells)
    budgets = [max(1, round(b * n)) for b in BUDGETS]

    def nearest(shares, rank, used):
        free = [c for c in cells if c["rank"] == rank and id(c) not in used] or [
            c for c in cells if id(c) not in used
        ]
        return min(free, key=lambda c: (c["rank"] != rank, np.abs(c["shares"] - shares).sum()))

    rows = []
    for b, share in zip(budgets, BUDGETS, strict=True):
        grid, law, adaptive = [], [], []
        for seed in range(seeds):
            rng = np.random.default_rng([seed, 9])
            order = [cells[i] for i in rng.permutation(n)[:b]]
            grid.append(best - max(order, key=lambda c: c["choose"])["truth"])
            # the law: fitted on b - 1 cells' trials, its proposal's nearest untried cell
            seen = order[: max(b - 1, 1)]
            fitted = fit_law([r for c in seen for r in c["rows"]], boot=10, seed=seed)
            pick = max(seen, key=lambda c: c["choose"])
            if fitted.ok and b > 1:
                top = max(fitted.proposals, key=lambda p: p.predicted)
                used = {id(c) for c in seen}
                shares = np.array([top.shares.get(x, 0.0) for x in names])
                proposed = nearest(shares, top.rank, used)
                pick = max([pick, proposed], key=lambda c: c["choose"])
            law.append(best - pick["truth"])
            adaptive.append(best - _replay_search(cfg, cells, names, ranks, b, seed, nearest))
        for name, regrets in (("grid", grid), ("law", law), ("adaptive", adaptive)):
            rows.append({"method": name, "budget": share, "cells": b,
                         "regret_mean": round(float(np.mean(regrets)), 4),
                         "regret_worst": round(float(np.max(regrets)), 4)})  # fmt: skip
    strat = [c for c in cells if c["mixture"] == STRATIFIED]
    if strat:
        rows.append({"method": "stratified", "budget": None, "cells": len(strat),
                     "regret_mean": round(best - max(c["truth"] for c in strat), 4),
                     "regret_worst": round(best - max(c["truth"] for c in strat), 4)})  # fmt: skip
    return {"objective": f"replay of {folder}", "cells": n, "split": split, "seeds": seeds,
            "best": best, "regret": rows}  # fmt: skip


def _replay_search(cfg: Config, cells, names, ranks, budget: int, seed: int, nearest) -> float:
    """The mixture search over the grid's cells: each suggestion takes its nearest untried
    cell; the true score of the best chosen."""
    start_cells = [c for c in cells if c["mixture"] in (STRATIFIED, UNIFORM)]
    start = [
        {
            "id": c["mixture"],
            "over": "tasks",
            "shares": dict(zip(names, c["shares"].tolist(), strict=True)),
        }
        for c in {c["mixture"]: c for c in start_cells}.values()
    ]
    search = MixtureSearch(
        "score", {"id": "replay", "tasks": names}, names, "tasks", start, dict.fromkeys(ranks, 1.0),
        cfg.sweep.mixtures.explore, seed, cfg.train.max_steps,
    )  # fmt: skip
    used, chosen = set(), []
    for i in range(budget):
        point = search.suggest(f"t{i}")
        shares = np.array([point["mixture"]["shares"].get(x, 0.0) for x in names])
        cell = nearest(shares, point["rank"], used)
        used.add(id(cell))
        chosen.append(cell)
        result = {"score": cell["choose"]} | {
            f"mixture/share/{x}": float(s) for x, s in zip(names, cell["shares"], strict=True)
        }
        search.on_trial_complete(f"t{i}", result)
    return max(chosen, key=lambda c: c["choose"])["truth"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the search (default 5)")
    parser.add_argument(
        "--noise", type=float, default=0.02, help="each evaluation's noise on a task (default 0.02)"
    )
    parser.add_argument("--world", type=int, default=0, help="seed of the simulated surface")
    parser.add_argument(
        "--grid", metavar="DIR", help="replay a finished sweep of mixtures instead of simulating"
    )


def run(args: argparse.Namespace, config) -> dict:
    """`bench mixture`: regret against trial-steps, simulated or over `--grid`'s sweep."""
    if args.seeds < 1:
        raise ConfigError(f"--seeds: {args.seeds} must be >= 1")
    cfg = config()
    if args.grid:
        try:
            return replay(cfg, args.grid, args.seeds)
        except (ValueError, OSError) as e:
            raise ConfigError(f"--grid {args.grid}: {e}") from None
    return simulate(cfg, args.seeds, args.noise, args.world)
