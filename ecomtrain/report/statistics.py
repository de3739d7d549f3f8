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
  part of it that the bootstrap already counts (see `seed_variance`).

A statistic that is a weighted sum of trial scores, theta = sum_t w_t S_t (a cell mean, a
paired difference of cells, the interaction coefficient of a linear model), then has
variance V = var_boot(theta) + s2_seed * sum_t w_t^2, and its 95 % interval uses Student's t
with Welch-Satterthwaite degrees of freedom. Without replicates only the held-out part is
known, and results say so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ecomtrain.evaluate.metrics import f1_from_counts

POOLED = "micro f1"  # the one metric scored from pooled counts rather than a mean
LEVEL = 0.95


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
class Estimate:
    """A weighted sum of trial scores with its uncertainty."""

    estimate: float
    se: float
    ci: tuple[float, float]
    df: float  # degrees of freedom of the interval (inf: held-out sampling only)
    seed_noise: bool  # whether training noise (seed replicates) is in the interval

    @property
    def clear(self) -> bool:
        """The interval excludes zero (for differences)."""
        return bool(self.ci[0] > 0 or self.ci[1] < 0)

    def as_dict(self) -> dict:
        return {
            "estimate": self.estimate,
            "se": self.se,
            "ci": list(self.ci),
            "df": None if math.isinf(self.df) else self.df,
            "seed_noise": self.seed_noise,
        }


def seed_variance(point: np.ndarray, boot: np.ndarray, cells: list) -> tuple[float, int]:
    """Training noise: the variance of a trial's score from its seed alone, pooled over the
    cells with two or more scored seeds, and its degrees of freedom (0 without replicates).

    Seeds of one cell differ by a shift of the whole score (the training noise wanted here)
    and by record-level noise that the bootstrap already counts. The within-cell sum of
    squares SS has expectation (k - 1)(seed variance + v), and the bootstrap variance of the
    seeds' deviations from their cell mean sums to (k - 1) v, so their difference, pooled,
    estimates the seed variance alone (truncated at 0). `cells[t]` is trial t's cell."""
    ss, resid, df = 0.0, 0.0, 0
    for c in dict.fromkeys(cells):  # in first-seen order: a set's would vary by process
        members = [t for t, x in enumerate(cells) if x == c and not np.isnan(point[t])]
        if len(members) < 2:
            continue
        ys = point[members]
        ss += float(((ys - ys.mean()) ** 2).sum())
        dev = boot[:, members] - boot[:, members].mean(axis=1, keepdims=True)
        resid += float(dev.var(axis=0, ddof=1).sum()) if len(boot) > 1 else 0.0
        df += len(members) - 1
    return (max(0.0, ss - resid) / df if df else 0.0), df


def combine(
    weights: np.ndarray, point: np.ndarray, boot: np.ndarray, seed_var: float, seed_df: int
) -> Estimate:
    """theta = weights . scores: its estimate, SE and 95 % interval from the bootstrap
    (held-out sampling) plus the pooled seed variance (training noise)."""
    used = weights != 0
    theta = float(weights[used] @ point[used])
    v_boot = float(np.var(boot[:, used] @ weights[used], ddof=1)) if len(boot) > 1 else 0.0
    v_seed = seed_var * float((weights**2).sum()) if seed_df else 0.0
    total = v_boot + v_seed
    # Welch-Satterthwaite degrees of freedom; the bootstrap part counts as infinite.
    df = total**2 / (v_seed**2 / seed_df) if seed_df and v_seed > 0 else math.inf
    q = stats.norm.ppf(0.5 + LEVEL / 2) if math.isinf(df) else stats.t.ppf(0.5 + LEVEL / 2, df)
    se = math.sqrt(total)
    return Estimate(theta, se, (theta - q * se, theta + q * se), df, bool(seed_df))
