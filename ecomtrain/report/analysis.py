"""What the trials say: views of typed trials (ecomtrain.report.trials) and the interaction model.

The report answers the sweep's question: does task diversity need adapter capacity? It fits
score ~ b0 + b1*diversity + b2*capacity + b3*diversity*capacity by ordinary least squares
and reports only the uncertainty the trials can support. Capacity is log2 of the trainable
parameters (so rank, target modules and DoRA sit on one axis), or log2(rank)
for trials that did not record them.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from ecomtrain.report import statistics
from ecomtrain.report.trials import swept_keys
from ecomtrain.tasks import CAPABILITIES

SHORT = dict(zip(CAPABILITIES, ("concept", "knowledge", "behavior", "multilingual"), strict=True))


def capacity(rows: list[dict]) -> tuple[str, np.ndarray]:
    """(name, values) of the capacity axis: log2 of the trainable parameters when every trial
    has them, else log2(rank)."""
    if rows and all(r.get("trainable_params") for r in rows):
        return "log2(trainable params)", np.log2([float(r["trainable_params"]) for r in rows])
    return "log2(rank)", np.log2([float(r["rank"]) for r in rows])


def terms(axis: str) -> tuple[str, ...]:
    return ("b0 intercept", "b1 diversity", f"b2 {axis}", f"b3 diversity x {axis}")


# --- views of the trials -----------------------------------------------------------------------


def is_failed(row: dict) -> bool:
    """A trial without a score, or one Tune marked with an error."""
    return row["score"] is None or bool(row["error"])


def setting(row: dict) -> str:
    """The trial's values of the swept config paths (`sweep.params`), e.g. "train.lr=0.0001"."""
    return " ".join(f"{k}={row[k]}" for k in swept_keys(row))


def line_of(row: dict) -> str:
    """The row of the subset x rank table a trial belongs to: its subset, and its values of
    any other swept dimension (so trials that differ in them are never folded together)."""
    return " ".join(filter(None, (row["subset"], setting(row))))


def subsets(rows: list[dict]) -> list[str]:
    """Table lines (see `line`) in Table-2 order: ladder step, else capabilities covered,
    then tasks, then name."""

    def key(r: dict) -> tuple:
        return (r.get("ladder_step") or 0, r.get("n_capabilities") or 0, r.get("n_tasks") or 0)

    order = sorted(rows, key=lambda r: (*key(r), line_of(r)))
    return list(dict.fromkeys(line_of(r) for r in order))


def ranks(rows: list[dict]) -> list[int]:
    return sorted({r["rank"] for r in rows})


def cell(rows: list[dict], subset: str, rank: int) -> tuple[float | None, int]:
    """Best score of the scored trials at (table line, rank), and how many trials ran there."""
    here = [r for r in rows if line_of(r) == subset and r["rank"] == rank]
    scores = [r["score"] for r in here if not is_failed(r)]
    return (max(scores) if scores else None), len(here)


def tracks(rows: list[dict]) -> list[str]:
    """track/* columns: the four capabilities in canonical order, then any others."""
    present = {k for r in rows for k in r if k.startswith("track/")}
    known = [f"track/{c}" for c in CAPABILITIES if f"track/{c}" in present]
    return known + sorted(present - set(known))


def short(capability: str) -> str:
    return SHORT.get(capability.removeprefix("track/"), capability.removeprefix("track/"))


def label(row: dict) -> str:
    """A trial's name in tables and charts: subset and rank, alpha when known, and the values
    of any other swept dimension."""
    alpha = f" a{row['alpha']:g}" if row.get("alpha") is not None else ""
    seed = f" s{row['seed']}" if row.get("seed") is not None else ""
    rest = f" {setting(row)}" if setting(row) else ""
    return f"{row['subset']} r{row['rank']}{alpha}{seed}{rest}"


def diversity_lines(rows: list[dict]) -> dict[int, tuple[list[int], list[float]]]:
    """Per rank: capabilities covered and the mean score there (scored trials only)."""
    lines = {}
    for rank in ranks(rows):
        at = [r for r in rows if r["rank"] == rank and not is_failed(r)]
        xs = sorted({r["n_capabilities"] for r in at if r.get("n_capabilities") is not None})
        ys = [float(np.mean([r["score"] for r in at if r["n_capabilities"] == x])) for x in xs]
        if xs:
            lines[rank] = (xs, ys)
    return lines


def best(rows: list[dict]) -> dict | None:
    ok = [r for r in rows if not is_failed(r)]
    return max(ok, key=lambda r: r["score"]) if ok else None


# --- the interaction model ---------------------------------------------------------------------


def diversity_key(rows: list[dict]) -> str:
    """Mixture entropy when every scored trial has one, else the number of capabilities."""
    ok = [r for r in rows if not is_failed(r)]
    if ok and all(r.get("task_entropy") is not None for r in ok):
        return "task_entropy"
    return "n_capabilities"


def fit_interaction(rows: list[dict]) -> dict:
    """OLS of score on diversity, log2(rank) and their product, reduced to what is identifiable.

    Returns the fitted terms, estimates, standard errors and 95% CIs (None without residual
    degrees of freedom), and notes that say what could not be estimated and why.
    """
    dkey = diversity_key(rows)
    ok = [r for r in rows if not is_failed(r) and r.get(dkey) is not None]
    axis, lr = capacity(ok)
    names = terms(axis)
    fit: dict = {"diversity": dkey, "capacity": axis, "n": len(ok), "notes": [], "terms": []}
    if len(ok) < len(rows):
        fit["notes"].append(f"{len(rows) - len(ok)} trial(s) left out: failed or no {dkey}.")
    if not ok:
        fit["notes"].append("No scored trials: nothing to fit.")
        return fit
    d = np.array([r[dkey] for r in ok], float)
    x = np.column_stack([np.ones_like(d), d, lr, d * lr])
    keep = _identifiable(x)
    n, p = len(ok), len(keep)
    if n <= 4:
        fit["notes"].append(
            f"Only {n} scored trial(s) for the 4-parameter model: no residual degrees of "
            "freedom, so no standard errors or confidence intervals are reported."
        )
    if p < 4:
        dropped = ", ".join(names[i] for i in range(4) if i not in keep)
        fit["notes"].append(f"Not identifiable from these trials, left out: {dropped}.")
    elif n == 4:
        fit["notes"].append("Four trials, four parameters: the fit is exact (saturated).")
    fit |= ols(x[:, keep], np.array([r["score"] for r in ok], float))
    fit["terms"] = [names[i] for i in keep]
    fit["did"] = diff_in_diff(ok, dkey)
    return fit


def _identifiable(x: np.ndarray) -> list[int]:
    """Columns kept in order while each one adds rank (an independent direction)."""
    keep: list[int] = []
    for j in range(x.shape[1]):
        if np.linalg.matrix_rank(x[:, keep + [j]]) == len(keep) + 1:
            keep.append(j)
    return keep


def ols(x: np.ndarray, y: np.ndarray) -> dict:
    """Estimates; SEs, t-based 95% CIs, residual SD and R^2 only when n > p."""
    n, p = x.shape
    beta = np.linalg.lstsq(x, y, rcond=None)[0]
    out: dict = {"beta": beta, "se": None, "ci": None, "df": n - p, "sigma": None, "r2": None}
    if n <= p:
        return out
    resid = y - x @ beta
    s2 = float(resid @ resid) / (n - p)
    se = np.sqrt(np.diag(s2 * np.linalg.inv(x.T @ x)))
    half = stats.t.ppf(0.975, n - p) * se
    tss = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(resid @ resid) / tss if tss > 0 else None
    ci = np.column_stack([beta - half, beta + half])
    return out | {"se": se, "ci": ci, "sigma": s2**0.5, "r2": r2}


def diff_in_diff(rows: list[dict], dkey: str) -> dict | None:
    """(hi-div, hi-rank - hi-div, lo-rank) - (lo-div, hi-rank - lo-div, lo-rank) at the corners."""
    ds, rs = sorted({r[dkey] for r in rows}), sorted({r["rank"] for r in rows})
    if len(ds) < 2 or len(rs) < 2:
        return None
    corner = {}
    for d in (ds[0], ds[-1]):
        for rank in (rs[0], rs[-1]):
            got = [r["score"] for r in rows if r[dkey] == d and r["rank"] == rank]
            if not got:
                return None
            corner[d, rank] = sum(got) / len(got)
    lo, hi = ds[0], ds[-1]
    value = (corner[hi, rs[-1]] - corner[hi, rs[0]]) - (corner[lo, rs[-1]] - corner[lo, rs[0]])
    return {"div": (lo, hi), "rank": (rs[0], rs[-1]), "corners": corner, "value": value}


# --- uncertainty from per-record scores and seeds ----------------------------------------------


def metric_of(rows: list[dict]) -> str:
    """The objective the trials' `score` column holds (trials.csv's `metric`)."""
    return rows[0].get("metric") or "score"


def cell_key(row: dict) -> tuple[str, int]:
    """A cell of the sweep: its table line (subset and other swept values) and rank; the
    trials of a cell are its seed replicates."""
    return line_of(row), row["rank"]


def cell_mean(cells: list, cell) -> np.ndarray:
    """Weights over the trials (by their cell) whose sum with the scores is `cell`'s mean."""
    return np.array([c == cell for c in cells], float) / cells.count(cell)


def interaction_weights(rows: list[dict], dkey: str) -> np.ndarray | None:
    """Weights w such that w . scores is the OLS interaction coefficient b3 of
    score ~ b0 + b1 d + b2 c + b3 d c (c: `capacity`); None when b3 is not identifiable."""
    d = np.array([r[dkey] for r in rows], float)
    lr = capacity(rows)[1]
    x = np.column_stack([np.ones_like(d), d, lr, d * lr])
    if _identifiable(x) != [0, 1, 2, 3]:
        return None
    return np.linalg.pinv(x)[3]


class _Family:
    """One statistic of every trial (the overall score, a track's, a task's): point values,
    bootstrap replicates and its seed variance, so any weighted sum gets an interval."""

    def __init__(self, point: np.ndarray, boot: np.ndarray, cells: list, n_trials: int):
        self.point, self.boot = np.nan_to_num(point), np.nan_to_num(boot)
        self.missing = np.isnan(point[:n_trials])
        self.var, self.df = statistics.seed_variance(point[:n_trials], boot[:, :n_trials], cells)

    def estimate(self, w: np.ndarray) -> statistics.Estimate | None:
        full = np.zeros(len(self.point))
        full[: len(w)] = w
        if self.missing[w != 0].any():
            return None
        return statistics.combine(full, self.point, self.boot, self.var, self.df)


def analyze(
    rows: list[dict],
    per_record: dict[str, dict[str, dict]],
    baseline: dict[str, dict] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """Cells, paired comparisons (overall and per track and task), seen/unseen, the
    interaction and the baseline, each with a 95 % interval (ecomtrain.report.statistics).
    `per_record` maps a trial to its per-record scores; trials without them (failed, or an
    older sweep) are left out. The result is JSON-able (analysis.json)."""
    ok = [r for r in rows if not is_failed(r) and r["trial"] in per_record]
    if not ok:
        return {}
    s = statistics.align([per_record[r["trial"]] for r in ok] + ([baseline] if baseline else []))
    weights = statistics.draws(s, n_boot, seed)
    point_tasks, boot_tasks = statistics.task_scores(s), statistics.task_scores(s, weights)
    cells = [cell_key(r) for r in ok]
    n = len(ok)

    def family(mask=None) -> _Family:
        point = statistics.overall(s, point_tasks, mask)[0]
        return _Family(point, statistics.overall(s, boot_tasks, mask), cells, n)

    overall = family()
    tracks = {
        t: family(np.tile([x == t for x in s.track], (point_tasks.shape[1], 1)))
        for t in sorted(set(s.track))
    }
    tasks = {
        name: _Family(point_tasks[0, :, k], boot_tasks[:, :, k], cells, n)
        for k, name in enumerate(s.tasks)
    }
    order = list(dict.fromkeys(cells))
    out: dict = {
        "metric": metric_of(rows),
        "records": len(s.ids),
        "tasks": len(s.tasks),
        "bootstrap": n_boot,
        "seed_noise": {"sd": overall.var**0.5, "df": overall.df},
        "trial_se": float(np.median(np.std(overall.boot[:, :n], axis=0, ddof=1))),
        "cells": [],
        "comparisons": [],
    }
    for cell in order:
        first = next(r for r in ok if cell_key(r) == cell)
        e = overall.estimate(cell_mean(cells, cell))
        out["cells"].append(
            {
                "subset": cell[0],
                "rank": cell[1],
                "n_seeds": cells.count(cell),
                "ladder_step": first.get("ladder_step"),
                "tasks": first["tasks"],
                "mean": e.estimate,
                "ci": list(e.ci),
                "se": e.se,
            }
        )
    by_cell = {(c["subset"], c["rank"]): c for c in out["cells"]}
    for a, b, kind in _comparisons(ok, order, by_cell):
        w = cell_mean(cells, a) - cell_mean(cells, b)
        e = overall.estimate(w)
        entry = {"a": _name(a), "b": _name(b), "kind": kind} | _diff(e)
        entry["tracks"] = {t: _diff(f.estimate(w)) for t, f in tracks.items()}
        entry["tasks"] = {t: _diff(f.estimate(w)) for t, f in tasks.items()}
        out["comparisons"].append(entry)
    dkey = diversity_key(ok)
    w = interaction_weights(ok, dkey) if all(r.get(dkey) is not None for r in ok) else None
    out["interaction"] = None
    if w is not None:
        e = overall.estimate(w)
        out["interaction"] = {
            "diversity": dkey,
            "capacity": capacity(ok)[0],
            "estimate": e.estimate,
            "ci": list(e.ci),
            "se": e.se,
            "clear": e.clear,
        }
    if baseline:
        e = statistics.combine(np.eye(len(overall.point))[-1], overall.point, overall.boot, 0, 0)
        out["baseline"] = {"mean": e.estimate, "ci": list(e.ci), "se": e.se}
    out["seen_unseen"] = _seen_unseen(s, ok, cells, order, point_tasks, boot_tasks)
    return out


def _diff(e: statistics.Estimate | None) -> dict | None:
    if e is None:
        return None
    return {"diff": e.estimate, "ci": list(e.ci), "se": e.se, "clear": e.clear}


def _name(cell: tuple[str, int]) -> str:
    return f"{cell[0]} r{cell[1]}"


def _comparisons(rows: list[dict], order: list, by_cell: dict) -> list[tuple]:
    """The comparisons a reader makes from the table: neighbouring ladder steps at one rank,
    each rank against the next one for the same subset, each value of a swept setting
    (`sweep.params`) against its first one in an otherwise equal cell (kind: the setting's
    path, e.g. data.ood_fraction), and the best cell against the runner-up."""
    out = []
    steps = {cell_key(r): r.get("ladder_step") for r in rows}
    settings = {cell_key(r): setting(r) for r in rows}
    for a in order:
        for b in order:
            if (
                steps[a] is not None
                and steps[b] == steps[a] - 1
                and a[1] == b[1]
                and settings[a] == settings[b]
            ):
                out.append((a, b, "ladder step"))
    for line in dict.fromkeys(c[0] for c in order):
        rks = sorted(c[1] for c in order if c[0] == line)
        out += [((line, hi), (line, lo), "rank") for lo, hi in zip(rks, rks[1:], strict=False)]
    for key in swept_keys(rows[0]):
        first = rows[0][key]  # the first value launched: the sweep.params list's first
        value = {cell_key(r): r[key] for r in rows}
        rest = {cell_key(r): (r["subset"], r["rank"], _without(r, key)) for r in rows}
        out += [
            (a, b, key)
            for a in order
            if value[a] != first
            for b in order
            if value[b] == first and rest[b] == rest[a]
        ]
    ranked = sorted(order, key=lambda c: -by_cell[c]["mean"])
    if len(ranked) > 1:
        out.append((ranked[0], ranked[1], "best vs runner-up"))
    return out


def _without(row: dict, key: str) -> tuple:
    return tuple((k, row[k]) for k in swept_keys(row) if k != key)


def _seen_unseen(s, rows, cells, order, point_tasks, boot_tasks) -> list[dict]:
    """Per cell: the score on the tasks its trials trained on, and on the others."""
    out = []
    extra = point_tasks.shape[1] - len(rows)  # the baseline, when there is one
    for part in ("seen", "unseen"):
        mask = np.array([[(t in r["tasks"]) == (part == "seen") for t in s.tasks] for r in rows])
        mask = np.vstack([mask, np.ones((extra, len(s.tasks)), bool)])
        point = statistics.overall(s, point_tasks, mask)[0]
        fam = _Family(point, statistics.overall(s, boot_tasks, mask), cells, len(rows))
        for cell in order:
            e = fam.estimate(cell_mean(cells, cell))
            if e is not None:
                key = {"subset": cell[0], "rank": cell[1], "part": part}
                out.append(key | {"mean": e.estimate, "ci": list(e.ci), "se": e.se})
    return out
