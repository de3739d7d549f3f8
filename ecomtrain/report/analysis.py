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

from ecomtrain.evaluate.answer import CONFIRM
from ecomtrain.evaluate.metrics import task_weights
from ecomtrain.report import statistics
from ecomtrain.report.findings import (
    Analysis,
    Cell,
    Comparison,
    Difference,
    Interaction,
    LinePoint,
    Noise,
    Part,
    Selected,
    Value,
    finite,
)
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
    """Mean score of the scored trials at (table line, rank), and how many trials ran there
    (the figure to show where the trials kept no per-record scores: no interval)."""
    here = [r for r in rows if line_of(r) == subset and r["rank"] == rank]
    scores = [r["score"] for r in here if not is_failed(r)]
    return (float(np.mean(scores)) if scores else None), len(here)


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

ADJUSTMENT = "holm"  # the multiplicity adjustment of the headline verdicts (statistics.adjust)


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


def split_parts(trials: list[dict[str, dict]]) -> tuple[list[dict], list[dict]]:
    """Each trial's per-record entries in the selection part and in the confirmation part of
    the held-out sample (evaluate.held_out.part_of). Entries without a part (a sweep from
    before the split, the extra eval files) are all selection."""
    select = [{k: e for k, e in t.items() if e.get("part") != CONFIRM} for t in trials]
    confirm = [{k: e for k, e in t.items() if e.get("part") == CONFIRM} for t in trials]
    return select, confirm


class Scored:
    """The trials (and the baseline, past `n_trials`) on one part's records: every family of
    statistics (overall, per track, per task) with the bootstrap behind its intervals."""

    def __init__(self, trials: list[dict], cells: list, n_trials: int, n_boot: int, seed: int):
        s = statistics.align(trials)
        self.s, self.cells, self.n_trials = s, cells, n_trials
        self.point_tasks = statistics.task_scores(s)
        boot_tasks = statistics.task_scores(s, statistics.draws(s, n_boot, seed))
        self.held = statistics.task_noise(s, boot_tasks)
        self.overall = self.family()
        self.tracks = {
            t: self.family(np.tile([x == t for x in s.track], (self.point_tasks.shape[1], 1)))
            for t in sorted(set(s.track))
        }
        self.tasks = {
            name: statistics.Family(
                self.point_tasks[0, :, k], statistics.one_task(self.held, k), cells, n_trials
            )
            for k, name in enumerate(s.tasks)
        }

    def family(self, mask: np.ndarray | None = None) -> statistics.Family:
        """The overall score over the tasks in `mask` [trials, tasks] (None: all)."""
        mask = np.ones(self.point_tasks.shape[1:], bool) if mask is None else mask
        point = statistics.overall(self.s, self.point_tasks, mask)[0]
        held = statistics.mixed(statistics.overall_weights(self.s, mask), self.held)
        return statistics.Family(point, held, self.cells, self.n_trials)

    def comparison(self, a: tuple, b: tuple, kind: str) -> Comparison | None:
        """Cell a against cell b: overall, per track and per task (raw verdicts)."""
        w = cell_mean(self.cells, a) - cell_mean(self.cells, b)
        e = self.overall.estimate(w)
        if e is None:
            return None
        return _diff(
            e,
            Comparison,
            a=_name(a),
            b=_name(b),
            kind=kind,
            tracks={t: _diff(f.estimate(w)) for t, f in self.tracks.items()},
            tasks={t: _diff(f.estimate(w)) for t, f in self.tasks.items()},
        )


def analyze(
    rows: list[dict],
    per_record: dict[str, dict[str, dict]],
    baseline: dict[str, dict] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> Analysis | None:
    """Cells, paired comparisons (overall and per track and task, with adjusted verdicts),
    seen/unseen, the interaction, the baseline and the claims about the selected best, each
    with a 95 % interval (ecomtrain.report.statistics). `per_record` maps a trial to its
    per-record scores; trials without them (failed, or an older sweep) are left out. The
    figures rest on the selection records; the claims about the best on the confirmation
    records (`Selected`). None when no trial has per-record scores."""
    ok = [r for r in rows if not is_failed(r) and r["trial"] in per_record]
    if not ok:
        return None
    select, confirm = split_parts(
        [per_record[r["trial"]] for r in ok] + ([baseline] if baseline else [])
    )
    cells, n = [cell_key(r) for r in ok], len(ok)
    main = Scored(select, cells, n, n_boot, seed)
    conf, with_base = None, bool(baseline)
    if all(confirm[:n]) and set(confirm[0]).intersection(*confirm[1:n]):
        # a baseline scored before the split has no confirmation records: left out there
        with_base = bool(baseline) and bool(set(confirm[0]) & set(confirm[-1]))
        conf = Scored(confirm[: n + with_base], cells, n, n_boot, seed + 1)
    order = list(dict.fromkeys(cells))
    found = [c for c in (_cell(main, ok, cell) for cell in order) if c is not None]
    comparisons = [c for c in (main.comparison(*x) for x in _comparisons(ok, order)) if c]
    _adjust(list(comparisons))
    _adjust([d for c in comparisons for d in c.tracks.values()])
    _adjust([d for c in comparisons for d in c.tasks.values()])
    dkey = diversity_key(ok)
    w = interaction_weights(ok, dkey) if all(r.get(dkey) is not None for r in ok) else None
    e = main.overall.estimate(w) if w is not None else None
    interaction = None
    if e is not None:
        interaction = _diff(e, Interaction, diversity=dkey, capacity=capacity(ok)[0])
        interaction.adjusted = interaction.clear  # one test: nothing to adjust
    base = None
    if baseline:
        base = _value(main.overall.estimate(np.eye(n + 1)[n]))
    return Analysis(
        metric=metric_of(rows),
        records=len(main.s.ids) + (len(conf.s.ids) if conf else 0),
        selection_records=len(main.s.ids),
        confirmation_records=len(conf.s.ids) if conf else 0,
        tasks=len(set(main.s.tasks) | set(conf.s.tasks if conf else [])),
        bootstrap=n_boot,
        adjustment=ADJUSTMENT,
        noise=_noise(main),
        cells=found,
        comparisons=comparisons,
        interaction=interaction,
        baseline=base,
        seen_unseen=_seen_unseen(main, ok, order),
        lines=_lines(main, ok),
        selected=_selected(main, conf, found, ok, with_base),
        notes=[
            f"{', '.join(statistics.single(part.s))}: one record among the {name} records, "
            "whose noise cannot be measured: the intervals take it at the most a score in "
            "[0, 1] can vary (wide, not estimated)."
            for part, name in ((main, "selection"), (conf, "confirmation"))
            if part is not None and statistics.single(part.s)
        ],
    )


def _value(e: statistics.Estimate, cls=Value, **fields) -> Value:
    return cls(mean=e.estimate, ci=e.ci, se=e.se, df=finite(e.df), **fields)


def _diff(e: statistics.Estimate | None, cls=Difference, **fields) -> Difference | None:
    if e is None:
        return None
    return cls(diff=e.estimate, ci=e.ci, se=e.se, df=finite(e.df), p=e.p, clear=e.clear, **fields)


def _adjust(family: list[Difference | None]) -> None:
    """Each difference's verdict after the multiplicity adjustment over its family."""
    verdicts = statistics.adjust([d.p if d else None for d in family], ADJUSTMENT)
    for d, verdict in zip(family, verdicts, strict=True):
        if d is not None:
            d.adjusted = verdict


def _name(cell: tuple[str, int]) -> str:
    return f"{cell[0]} r{cell[1]}"


def _cell(main: Scored, rows: list[dict], cell: tuple) -> Cell | None:
    w = cell_mean(main.cells, cell)
    e = main.overall.estimate(w)
    if e is None:
        return None
    first = next(r for r in rows if cell_key(r) == cell)
    tracks = {t: f.estimate(w) for t, f in main.tracks.items()}
    return _value(
        e,
        Cell,
        subset=cell[0],
        rank=cell[1],
        n_seeds=main.cells.count(cell),
        ladder_step=first.get("ladder_step"),
        n_capabilities=first.get("n_capabilities"),
        tasks=list(first["tasks"]),
        tracks={t: _value(x) for t, x in tracks.items() if x is not None},
    )


def _comparisons(rows: list[dict], order: list) -> list[tuple]:
    """The comparisons a reader makes from the table, fixed before any score is seen:
    neighbouring ladder steps at one rank, each rank against the next one for the same
    subset, and each value of a swept setting (`sweep.params`) against its first one in an
    otherwise equal cell (kind: the setting's path, e.g. data.ood_fraction). The best cell
    against the runner-up is a claim about a selection: `_selected`."""
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
    return out


def _without(row: dict, key: str) -> tuple:
    return tuple((k, row[k]) for k in swept_keys(row) if k != key)


def _selected(
    main: Scored, conf: Scored | None, cells: list[Cell], rows: list[dict], baseline: bool
) -> Selected | None:
    """The best cell by its mean on the selection records, and the best trial by its score,
    then tested on the confirmation records: its mean, against the runner-up (overall, per
    track and task, each family adjusted) and against the untrained baseline (`baseline`:
    whether the records tested on have its scores)."""
    if not cells:
        return None
    ranked = sorted(cells, key=lambda c: -c.mean)
    top, runner = ranked[0], (ranked[1] if len(ranked) > 1 else None)
    on = conf or main
    w = cell_mean(main.cells, (top.subset, top.rank))
    vs = None
    if runner is not None:
        vs = on.comparison(
            (top.subset, top.rank), (runner.subset, runner.rank), "best vs runner-up"
        )
    if vs is not None and conf is not None:  # no verdict on the records that chose it
        vs.adjusted = vs.clear
        _adjust(list(vs.tracks.values()))
        _adjust(list(vs.tasks.values()))
    vs_base = None
    if baseline:
        vs_base = _diff(on.overall.estimate(np.append(w, -1.0)))
        if vs_base is not None:
            vs_base.adjusted = vs_base.clear if conf else None
    trial = best(rows)
    t = rows.index(trial) if trial is not None else None
    trial_score = None
    if t is not None:
        e = on.overall.estimate(np.eye(main.n_trials)[t], seeds=False)
        trial_score = _value(e) if e is not None else None
    score = on.overall.estimate(w)
    return Selected(
        best=top.name,
        chosen_mean=top.mean,
        runner_up=runner.name if runner else None,
        confirmed=conf is not None,
        records=len(on.s.ids),
        score=_value(score) if score is not None else None,
        vs_runner_up=vs,
        vs_baseline=vs_base,
        best_trial=trial["trial"] if trial else None,
        trial_score=trial_score,
    )


def _noise(main: Scored) -> Noise:
    """The overall score's seed noise, and its record noise as `sweep --plan` takes it."""
    fam, n = main.overall, main.n_trials
    var = np.diag(fam.cov)[:n]
    record_se = float(np.median(np.sqrt(var)))
    pairs = [var[i] + var[j] - 2 * fam.cov[i, j] for i in range(n) for j in range(i + 1, n)]
    correlation = 0.0
    if pairs and record_se > 0:
        pair_se = float(np.median(np.sqrt(np.maximum(pairs, 0.0))))
        correlation = float(np.clip(1 - pair_se**2 / (2 * record_se**2), 0.0, 1.0))
    s = main.s
    w = task_weights(dict(zip(s.tasks, s.track, strict=True)))
    spread = sum(w[t] ** 2 / int((s.task == k).sum()) for k, t in enumerate(s.tasks))
    task_sd = [float(f.seed.var) ** 0.5 for f in main.tasks.values() if f.seed.df]
    return Noise(
        seed_sd=float(fam.seed.var) ** 0.5,
        seed_var_raw=float(fam.seed.raw),
        seed_df=fam.seed.df,
        task_seed_sd=float(np.median(task_sd)) if task_sd else 0.0,
        record_se=record_se,
        record_sd=record_se / spread**0.5,
        correlation=correlation,
    )


def _lines(main: Scored, rows: list[dict]) -> list[LinePoint]:
    """Per rank and number of capabilities trained on: the mean of the cells there."""
    out = []
    for rank in ranks(rows):
        at = [r for r in rows if r["rank"] == rank and r.get("n_capabilities") is not None]
        for x in sorted({r["n_capabilities"] for r in at}):
            here = list(dict.fromkeys(cell_key(r) for r in at if r["n_capabilities"] == x))
            e = main.overall.estimate(sum(cell_mean(main.cells, c) for c in here) / len(here))
            if e is not None:
                out.append(_value(e, LinePoint, rank=rank, n_capabilities=x, cells=len(here)))
    return out


def _seen_unseen(main: Scored, rows: list[dict], order: list) -> list[Part]:
    """Per cell: the score on the tasks its trials trained on, and on the others."""
    out = []
    s = main.s
    extra = main.point_tasks.shape[1] - len(rows)  # the baseline, when there is one
    for part in ("seen", "unseen"):
        mask = np.array([[(t in r["tasks"]) == (part == "seen") for t in s.tasks] for r in rows])
        fam = main.family(np.vstack([mask, np.ones((extra, len(s.tasks)), bool)]))
        for cell in order:
            e = fam.estimate(cell_mean(main.cells, cell))
            if e is not None:
                out.append(_value(e, Part, subset=cell[0], rank=cell[1], part=part))
    return out
