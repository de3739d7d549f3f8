"""Uncertainty of sweep scores: a stratified, paired bootstrap over held-out records, combined
with the spread over training seeds.

Every trial of a sweep is scored on the same held-out records, and every evaluation keeps
each record's score (`scores.jsonl` beside the checkpoint). A score is aggregated as
ShopBench does: a task's score is the mean of its records' scores (micro F1: the F1 of the
pooled counts), a track's the mean of its tasks', the overall score the mean of its tracks'.

Two sources of noise make a number move between runs:

- **held-out sampling**: the records are a sample of each task. The bootstrap resamples the
  records of every task with replacement (stratified by task, so each task keeps its size
  and the task -> track -> overall weights are respected) and recomputes every trial's score
  on the *same* resample, so differences between trials are paired;
- **training noise**: the same configuration trained with another seed (LoRA initialisation
  and data order) scores differently on the same records. Replicates (`sweep.seeds`) measure
  it: the within-cell variance of per-seed scores, pooled over cells, less the record-level
  part of it that the bootstrap already counts (see `seed_noise`).

A statistic that is a weighted sum of trial scores, theta = sum_t w_t S_t (a cell mean, a
paired difference of cells, the interaction coefficient of a linear model), then has
variance V = var_boot(theta) + s2_seed * sum_t w_t^2, and its 95 % interval uses Student's t.
The seed variance rests on the seeds' within-cell mean square, which holds the seed and the
within-cell record noise alike, so its degrees of freedom (Welch-Satterthwaite, taken at an
upper bound of that mean square) never become infinite because the estimate came out at 0:
`interval`. Without replicates only the held-out part is known, and results say so.
docs/statistics-method.md gives the method and the simulations that chose it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

from ecomtrain.evaluate.metrics import f1_from_counts

POOLED = "micro f1"  # the one metric scored from pooled counts rather than a mean
LEVEL = 0.95
# The degrees of freedom of an interval are computed at this lower quantile's upper bound of
# the seeds' mean square (a 75 % upper confidence bound), not at the estimate itself: with
# two or three seeds the estimate is often small by chance, and Welch-Satterthwaite's plug-in
# degrees of freedom would then be far too many (docs/statistics-method.md, "Calibration").
DF_BOUND = 0.25
# multipletests' methods the report uses, and what each holds at 5 %
ADJUSTMENTS = {
    "holm": "Holm's (family-wise error)",
    "fdr_bh": "Benjamini-Hochberg's (false discovery rate)",
}


@dataclass
class Scores:
    """Per-record scores of several trials on the records they share.

    `value[t, i]` is trial t's score on record i; `counts[t, i]` its (TP, FP, FN) for
    records of pooled (micro F1) tasks, zeros elsewhere. Records are grouped by `task`."""

    ids: list[str]
    task: np.ndarray  # [R] task index of each record
    tasks: list[str]  # task names
    track: list[str]  # track of each task
    pooled: np.ndarray  # [K] bool: task scored by pooled F1
    value: np.ndarray  # [T, R]
    counts: np.ndarray  # [T, R, 3]


def read_scores(lines: Iterable[str]) -> dict[str, dict]:
    """Per-record scores of one evaluation (JSON Lines, one object per record), by id."""
    out = {}
    for line in lines:
        if line.strip():
            r = json.loads(line)
            out[r["id"]] = r
    return out


def align(trials: list[dict[str, dict]]) -> Scores:
    """The records every trial was scored on, as arrays (ids sorted, grouped by task)."""
    if not trials:
        raise ValueError("no trials to align")
    shared = set(trials[0]).intersection(*trials[1:])
    if not shared:
        raise ValueError("the trials share no scored record")
    first = trials[0]
    ids = sorted(shared, key=lambda i: (first[i]["task"], i))
    tasks = list(dict.fromkeys(first[i]["task"] for i in ids))
    index = {t: k for k, t in enumerate(tasks)}
    track = [next(first[i]["track"] for i in ids if first[i]["task"] == t) for t in tasks]
    pooled = np.array(
        [next(first[i]["metric"] for i in ids if first[i]["task"] == t) == POOLED for t in tasks]
    )
    value = np.array([[float(tr[i]["score"]) for i in ids] for tr in trials])
    counts = np.array(
        [[[tr[i].get(k, 0) for k in ("tp", "fp", "fn")] for i in ids] for tr in trials], float
    ).reshape(len(trials), len(ids), 3)
    return Scores(
        ids, np.array([index[first[i]["task"]] for i in ids]), tasks, track, pooled, value, counts
    )


def task_scores(s: Scores, weights: list[np.ndarray] | None = None) -> np.ndarray:
    """Task scores [B, T, K] of every trial, each record counted `weights[k][b, i]` times
    (the bootstrap's draw counts; None: once, B = 1)."""
    out = []
    for k in range(len(s.tasks)):
        rec = np.flatnonzero(s.task == k)
        w = np.ones((1, len(rec))) if weights is None else weights[k]
        if s.pooled[k]:
            tp, fp, fn = (w @ s.counts[:, rec, j].T for j in range(3))  # [B, T]
            out.append(f1_from_counts(tp, fp, fn))
        else:
            out.append(w @ s.value[:, rec].T / len(rec))
    return np.stack(out, axis=-1)


def overall(s: Scores, per_task: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Overall scores [B, T] from task scores [B, T, K]: the mean over tracks of the mean
    over their tasks, using only the tasks where `mask[t, k]` (per trial; None: all).
    A trial with no task in its mask gets NaN."""
    mask = np.ones(per_task.shape[1:], bool) if mask is None else mask
    tracks = sorted(set(s.track))
    by_track = []
    for tr in tracks:
        cols = np.array([x == tr for x in s.track])
        m = mask & cols  # [T, K]
        n = m.sum(axis=1)  # [T]
        with np.errstate(invalid="ignore"):
            by_track.append(np.where(n > 0, (per_task * m).sum(axis=2) / np.maximum(n, 1), np.nan))
    stacked = np.stack(by_track, axis=-1)  # [B, T, tracks]
    present = ~np.isnan(stacked)
    with np.errstate(invalid="ignore"):
        return np.where(
            present.any(axis=-1),
            np.nansum(stacked, axis=-1) / np.maximum(present.sum(axis=-1), 1),
            np.nan,
        )


def draws(s: Scores, n_boot: int, seed: int = 0) -> list[np.ndarray]:
    """Bootstrap draw counts per task: for task k, [n_boot, n_k] multinomial counts, so each
    resample keeps every task's size (stratified) and is shared by all trials (paired)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(len(s.tasks)):
        n = int((s.task == k).sum())
        out.append(rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float))
    return out


@dataclass
class HeldOut:
    """Held-out sampling noise of one statistic of every trial: per task, its share of the
    bootstrap covariance of the trials' values (`parts` [..., K, T, T]) and the degrees of
    freedom of that share (`df` [K]: the task's records - 1). Arrays may lead with many
    simulated sweeps (the calibration tests)."""

    parts: np.ndarray
    df: np.ndarray

    @property
    def cov(self) -> np.ndarray:
        """The covariance [..., T, T] of the trials' values (the tasks are resampled apart)."""
        return self.parts.sum(axis=-3)


@dataclass
class SeedNoise:
    """Training noise of one statistic (the overall score, a track's, a task's) from the
    spread of its scores over seeds within cells. Fields are numbers, or arrays over many
    simulated sweeps."""

    var: float  # the seed variance: max(0, raw)
    raw: float  # mean_square - record: may come out below 0 by chance
    mean_square: float  # within-cell sum of squares / df: seed and record noise together
    record: float  # the within-cell record noise in mean_square (from the bootstrap)
    df: int  # its degrees of freedom: sum over cells of (seeds - 1); 0 without replicates


def within_cells(cells: list) -> np.ndarray:
    """P [T, T]: P @ scores are the trials' deviations from their cell's mean, over the cells
    with two or more trials (`cells[t]`: trial t's cell; None: left out). P is symmetric and
    idempotent; its trace is the seed degrees of freedom."""
    p = np.zeros((len(cells), len(cells)))
    for c in dict.fromkeys(cells):  # in first-seen order: a set's would vary by process
        members = [t for t, x in enumerate(cells) if x == c]
        if c is not None and len(members) > 1:
            p[np.ix_(members, members)] = np.eye(len(members)) - 1 / len(members)
    return p


def seed_noise(point: np.ndarray, cov: np.ndarray, cells: list) -> SeedNoise:
    """The seed variance of a statistic whose per-trial values are `point` [..., T] with
    bootstrap covariance `cov` [..., T, T] (held-out sampling), pooled over cells.

    Seeds of one cell differ by a shift of the whole score (the training noise wanted here)
    and by record-level noise that the bootstrap already counts. The within-cell sum of
    squares SS = point' P point has expectation df (seed variance + r), where df r =
    trace(P cov) is the bootstrap's share of it; so (SS - trace(P cov)) / df estimates the
    seed variance alone. It is reported at 0 when negative, never hidden: `raw` keeps it."""
    p = within_cells(cells)
    df = int(round(np.trace(p)))
    if df == 0:
        zero = np.zeros(np.shape(point)[:-1])
        return SeedNoise(zero, zero, zero, zero, 0)
    mean_square = np.einsum("...i,ij,...j->...", point, p, point) / df
    record = np.einsum("ij,...ji->...", p, cov) / df
    raw = mean_square - record
    return SeedNoise(np.maximum(raw, 0.0), raw, mean_square, record, df)


def interval(
    weights: np.ndarray,
    point: np.ndarray,
    held: HeldOut,
    seed: SeedNoise,
    seeded: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """theta = weights . point, its standard error and degrees of freedom (inf: normal).
    Weights [T] or, like the rest, with leading dimensions (many simulated sweeps).

    V = weights' cov weights (held-out sampling, B) + seed.var * sum of the seeded trials'
    weights^2 (`seeded`: trials with training noise, default all; a fixed model such as the
    untrained baseline has none). Degrees of freedom by Welch-Satterthwaite: B from its
    tasks' shares, each on its records - 1; the seed part from seed.mean_square on seed.df,
    taken at that mean square's upper bound (DF_BOUND) and less the within-cell record
    noise it holds (a share of B). So a seed variance estimate at or below 0 keeps the
    interval a t interval on about seed.df degrees of freedom: never a normal one with no
    seed term."""
    trained = weights if seeded is None else np.where(seeded, weights, 0.0)
    w2 = (trained**2).sum(axis=-1)
    theta = (point * weights).sum(axis=-1)
    shares = np.einsum("...i,...kij,...j->...k", weights, held.parts, weights)
    v_boot = shares.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = (shares**2 / np.where(held.df > 0, held.df, np.inf)).sum(axis=-1)
        df_boot = np.where(spread > 0, v_boot**2 / spread, math.inf)
    total = v_boot + seed.var * w2
    if seed.df == 0:
        return theta, np.sqrt(total), np.maximum(df_boot, 1.0)
    upper = np.maximum(seed.mean_square, seed.record) * seed.df / stats.chi2.ppf(DF_BOUND, seed.df)
    known = v_boot - seed.record * w2  # the held-out noise the seeds' spread does not hold
    at_upper = np.maximum(known + upper * w2, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = (upper * w2) ** 2 / seed.df + np.where(np.isinf(df_boot), 0.0, known**2 / df_boot)
        df = np.where(spread > 0, at_upper**2 / spread, df_boot)
    return theta, np.sqrt(total), np.maximum(df, 1.0)


def quantile(df: np.ndarray) -> np.ndarray:
    """The two-sided 95 % quantile of Student's t on `df` degrees of freedom (inf: normal)."""
    df = np.asarray(df, float)
    q = stats.t.ppf(0.5 + LEVEL / 2, np.where(np.isinf(df), 1.0, df))
    return np.where(np.isinf(df), stats.norm.ppf(0.5 + LEVEL / 2), q)


def p_value(theta: np.ndarray, se: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Two-sided p-value of theta = 0 on the interval's own t distribution (p < 0.05 exactly
    when the 95 % interval excludes 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, np.abs(theta) / se, np.where(theta == 0, 0.0, np.inf))
    df = np.asarray(df, float)
    t = 2 * stats.t.sf(z, np.where(np.isinf(df), 1.0, df))
    return np.where(np.isinf(df), 2 * stats.norm.sf(z), t)


@dataclass
class Estimate:
    """A weighted sum of trial scores with its uncertainty."""

    estimate: float
    se: float
    ci: tuple[float, float]
    df: float  # degrees of freedom of the interval (inf: normal)
    seed_noise: bool  # whether training noise (seed replicates) is in the interval
    p: float = 1.0  # two-sided p-value against 0 (for differences)

    @property
    def clear(self) -> bool:
        """The interval excludes zero (for differences)."""
        return bool(self.ci[0] > 0 or self.ci[1] < 0)


def combine(
    weights: np.ndarray,
    point: np.ndarray,
    held: HeldOut,
    seed: SeedNoise,
    seeded: np.ndarray | None = None,
) -> Estimate:
    """theta = weights . scores: its estimate, SE, 95 % interval and p-value (`interval`)."""
    theta, se, df = (float(x) for x in interval(weights, point, held, seed, seeded))
    half = float(quantile(df)) * se
    p = float(p_value(theta, se, df))
    trained = weights if seeded is None else weights[seeded]
    return Estimate(theta, se, (theta - half, theta + half), df, bool(seed.df and trained.any()), p)


def covariance(boot: np.ndarray) -> np.ndarray:
    """The bootstrap covariance [T, T] of the trials' scores from replicates [B, T]."""
    if len(boot) < 2:
        return np.zeros((boot.shape[1], boot.shape[1]))
    return np.atleast_2d(np.cov(boot, rowvar=False))


SINGLE_RECORD_VAR = 0.5  # a one-record task's variance bound per trial (task_noise)


def task_noise(s: Scores, boot_tasks: np.ndarray) -> HeldOut:
    """Per task, the covariance [K, T, T] of the trials' task scores over the bootstrap's
    resamples (`boot_tasks` [B, T, K], from `task_scores` with `draws`) times
    n_k / (n_k - 1), on n_k - 1 degrees of freedom. The bootstrap of a mean of n records
    has (n - 1) / n of its sampling variance: little for a task of 60 records, much for one
    of 4 (a confirmation part's small tasks). A task of one record has no spread to
    measure (`single`): its share is taken at the most a score in [0, 1] can vary,
    SINGLE_RECORD_VAR for each trial and none shared (so a difference of two trials on it
    gets twice that: the variance of a difference in [-1, 1] at most), a bound known
    without estimation (df 0: infinite)."""
    n = np.bincount(s.task, minlength=len(s.tasks))
    trials = boot_tasks.shape[1]
    parts = [
        covariance(np.nan_to_num(boot_tasks[:, :, k])) * (n[k] / (n[k] - 1))
        if n[k] > 1
        else np.eye(trials) * (SINGLE_RECORD_VAR if n[k] == 1 else 0.0)
        for k in range(len(s.tasks))
    ]
    return HeldOut(np.stack(parts), np.maximum(n - 1.0, 0.0))


def single(s: Scores) -> list[str]:
    """The tasks with one record only: their record noise is a bound, not an estimate."""
    n = np.bincount(s.task, minlength=len(s.tasks))
    return [t for t, m in zip(s.tasks, n, strict=True) if m == 1]


def overall_weights(s: Scores, mask: np.ndarray) -> np.ndarray:
    """[T, K]: each task's weight in each trial's overall score over the tasks in `mask`
    [T, K] (as `overall` computes it: the mean over tracks of the mean over their tasks)."""
    track = np.array(s.track)
    out = np.zeros(mask.shape)
    for t in range(mask.shape[0]):
        present = list(dict.fromkeys(track[mask[t]]))
        for name in present:
            cols = mask[t] & (track == name)
            out[t, cols] = 1 / (len(present) * cols.sum())
    return out


def mixed(weights: np.ndarray, tasks: HeldOut) -> HeldOut:
    """The held-out noise of sum_k weights[t, k] * task score k of every trial t [T, K]."""
    return HeldOut(np.einsum("tk,sk,kts->kts", weights, weights, tasks.parts), tasks.df)


def one_task(tasks: HeldOut, k: int) -> HeldOut:
    """The held-out noise of task k's score."""
    return HeldOut(tasks.parts[k : k + 1], tasks.df[k : k + 1])


class Family:
    """One statistic of every trial (the overall score, a track's, a task's): point values,
    its held-out noise and its seed noise, so any weighted sum gets an interval. Trials past
    `n_trials` (the untrained baseline) carry no training noise."""

    def __init__(self, point: np.ndarray, held: HeldOut, cells: list, n_trials: int):
        self.missing = np.isnan(point)
        self.point, self.held, self.cov = np.nan_to_num(point), held, held.cov
        members = [None if self.missing[t] else c for t, c in enumerate(cells[:n_trials])]
        members += [None] * (len(point) - len(members))
        self.seed = seed_noise(self.point, self.cov, members)
        self.seeded = np.arange(len(point)) < n_trials

    def estimate(self, w: np.ndarray, seeds: bool = True) -> Estimate | None:
        """The interval of w . scores; None when a weighted trial has no value here (e.g. a
        task it was not scored on). `seeds` False: a claim about these very adapters, with
        held-out noise only (training noise is what another seed would change)."""
        full = np.zeros(len(self.point))
        full[: len(w)] = w
        if self.missing[full != 0].any():
            return None
        seeded = self.seeded if seeds else np.zeros(len(full), bool)
        return combine(full, self.point, self.held, self.seed, seeded)


def adjust(p_values: list[float | None], method: str = "holm") -> list[bool | None]:
    """Verdicts of a family of comparisons at 5 % after a multiplicity adjustment
    (statsmodels' multipletests: "holm" for the family-wise error, "fdr_bh" for the false
    discovery rate); None stays None (a comparison that could not be made)."""
    given = [i for i, p in enumerate(p_values) if p is not None]
    out: list[bool | None] = [None] * len(p_values)
    if given:
        reject = multipletests([p_values[i] for i in given], alpha=1 - LEVEL, method=method)[0]
        for i, r in zip(given, reject, strict=True):
            out[i] = bool(r)
    return out
