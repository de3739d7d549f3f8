"""`python -m ecomtrain.report DIR`: the sweep report, from DIR/trials.csv.

Writes DIR/report.md (charts linked as the PNG files beside it) and DIR/report.html (the same
report in one file, charts embedded as base64), plus heatmap.png, capabilities.png and
diversity.png. The report answers the sweep's question: does task diversity need adapter
capacity? It fits score ~ b0 + b1*diversity + b2*log2(rank) + b3*diversity*log2(rank) by
ordinary least squares and reports only the uncertainty the trials can support.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np

from ecomtrain.tasks import CAPABILITIES, FAMILIES

REQUIRED = ("trial", "subset", "rank", "score")
INTS = ("rank", "n_tasks", "n_capabilities", "ladder_step", "trainable_params")
FLOATS = ("score", "loss", "wall_s", "alpha", "task_entropy")
LISTS = ("tasks", "capabilities")
SHORT = dict(zip(CAPABILITIES, ("concept", "knowledge", "behavior", "multilingual"), strict=True))
TERMS = ("b0 intercept", "b1 diversity", "b2 log2(rank)", "b3 diversity x log2(rank)")


class ReportError(ValueError):
    """trials.csv is missing or malformed; the message names the file, line and column."""


# --- reading trials.csv -------------------------------------------------------------------------


def load_trials(path: Path) -> list[dict]:
    """Typed rows of trials.csv: numbers parsed, lists split, failed trials kept (score None)."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise ReportError(f"{path}:1: missing column(s) {', '.join(missing)}")
            rows = [_parse_row(raw, f"{path}:{reader.line_num}") for raw in reader]
    except FileNotFoundError:
        raise ReportError(f"{path}: not found (run a sweep into this directory first)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ReportError(f"{path}: not a readable CSV file: {e}") from None
    if not rows:
        raise ReportError(f"{path}: no trials")
    return rows


def _parse_row(raw: dict, where: str) -> dict:
    if None in raw or None in raw.values():
        raise ReportError(f"{where}: wrong number of fields")
    row: dict = {k: v.strip() for k, v in raw.items()}
    for col in INTS + FLOATS:
        if col in row or col in REQUIRED:
            row[col] = _number(row.get(col, ""), col in INTS, f"{where}: column {col!r}")
    for col in row:
        if col.startswith(("track/", "task/")):
            row[col] = _number(row[col], False, f"{where}: column {col!r}")
    if row["rank"] is None or row["rank"] < 1:
        raise ReportError(f"{where}: column 'rank' must be a positive integer")
    for col in LISTS:
        row[col] = row.get(col, "").split()
    if not row["capabilities"] and all(t in FAMILIES for t in row["tasks"]):
        covered = {FAMILIES[t].capability for t in row["tasks"]}
        row["capabilities"] = [c for c in CAPABILITIES if c in covered]
    if row.get("n_capabilities") is None and row["capabilities"]:
        row["n_capabilities"] = len(row["capabilities"])
    if row.get("n_tasks") is None and row["tasks"]:
        row["n_tasks"] = len(row["tasks"])
    row["error"] = row.get("error", "")
    if row["score"] is not None and math.isnan(row["score"]):
        row["score"] = None
    return row


def _number(text: str, integer: bool, where: str) -> float | int | None:
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ReportError(f"{where}: {text!r} is not a number") from None
    if integer:
        if not value.is_integer():
            raise ReportError(f"{where}: {text!r} is not an integer")
        return int(value)
    return value


# --- views of the trials -----------------------------------------------------------------------


def is_failed(row: dict) -> bool:
    """A trial without a score, or one Tune marked with an error."""
    return row["score"] is None or bool(row["error"])


def subsets(rows: list[dict]) -> list[str]:
    """Subsets in Table-2 order: ladder step, else capabilities covered, then tasks, then name."""

    def key(r: dict) -> tuple:
        return (r.get("ladder_step") or 0, r.get("n_capabilities") or 0, r.get("n_tasks") or 0)

    order = sorted(rows, key=lambda r: (*key(r), r["subset"]))
    return list(dict.fromkeys(r["subset"] for r in order))


def ranks(rows: list[dict]) -> list[int]:
    return sorted({r["rank"] for r in rows})


def cell(rows: list[dict], subset: str, rank: int) -> tuple[float | None, int]:
    """Best score of the scored trials at (subset, rank), and how many trials ran there."""
    here = [r for r in rows if r["subset"] == subset and r["rank"] == rank]
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
    """A trial's name in tables and charts: subset and rank (and alpha when it is swept)."""
    alpha = f" a{row['alpha']:g}" if row.get("alpha") is not None else ""
    return f"{row['subset']} r{row['rank']}{alpha}"


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
    fit: dict = {"diversity": dkey, "n": len(ok), "notes": [], "terms": []}
    if len(ok) < len(rows):
        fit["notes"].append(f"{len(rows) - len(ok)} trial(s) left out: failed or no {dkey}.")
    if not ok:
        fit["notes"].append("No scored trials: nothing to fit.")
        return fit
    d = np.array([r[dkey] for r in ok], float)
    lr = np.log2([float(r["rank"]) for r in ok])
    x = np.column_stack([np.ones_like(d), d, lr, d * lr])
    keep = _identifiable(x)
    n, p = len(ok), len(keep)
    if n <= 4:
        fit["notes"].append(
            f"Only {n} scored trial(s) for the 4-parameter model: no residual degrees of "
            "freedom, so no standard errors or confidence intervals are reported."
        )
    if p < 4:
        dropped = ", ".join(TERMS[i] for i in range(4) if i not in keep)
        fit["notes"].append(f"Not identifiable from these trials, left out: {dropped}.")
    elif n == 4:
        fit["notes"].append("Four trials, four parameters: the fit is exact (saturated).")
    fit |= ols(x[:, keep], np.array([r["score"] for r in ok], float))
    fit["terms"] = [TERMS[i] for i in keep]
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
    half = t_quantile(0.975, n - p) * se
    tss = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(resid @ resid) / tss if tss > 0 else None
    ci = np.column_stack([beta - half, beta + half])
    return out | {"se": se, "ci": ci, "sigma": s2**0.5, "r2": r2}


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t with integer df, by bisection on its exact finite-series CDF."""
    lo, hi = 0.0, 1e6
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 + _t_central(mid, df) / 2 < p else (lo, mid)
    return (lo + hi) / 2


def _t_central(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2 == 0:
        term = total = 1.0
        for k in range(1, df // 2):
            term *= c * c * (2 * k - 1) / (2 * k)
            total += term
        return s * total
    term, total = c, c if df > 1 else 0.0
    for k in range(1, (df - 1) // 2):
        term *= c * c * (2 * k) / (2 * k + 1)
        total += term
    return 2 / math.pi * (theta + s * total)


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


# --- CLI ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ecomtrain.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", help="a sweep's output directory (holds trials.csv)")
    out = Path(parser.parse_args(argv).dir)
    try:
        rows = load_trials(out / "trials.csv")
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from tuning.report import write_documents  # charts and pages: with the sweep's charts

    path = write_documents(rows, out)
    print(f"report: {path} and {path.with_suffix('.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
