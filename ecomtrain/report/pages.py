"""report.md and report.html: the sweep report's text, tables and charts, from trials.csv.

`write_report(DIR)` reads DIR/trials.csv, draws the charts beside it and writes the pages.
The report is built once as a list of blocks, ("h1", text), ("p", text), ("table", head, rows),
("img", file, caption), and rendered twice: Markdown that links the PNG files beside it, and one
self-contained HTML page with the same charts embedded as base64.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from ecomtrain.evaluate.answer import EXTRA_SCORES_FILE, SCORES_FILE
from ecomtrain.files import atomic_write, read_text
from ecomtrain.report import findings, statistics
from ecomtrain.report.analysis import (
    analyze,
    best,
    cell,
    fit_interaction,
    is_failed,
    label,
    line_of,
    metric_of,
    ranks,
    short,
    subsets,
    tracks,
)
from ecomtrain.report.charts import (
    NO_INTERVALS,
    extra_charts,
    plot_capabilities,
    plot_diversity,
    plot_heatmap,
    plot_scores,
)
from ecomtrain.report.findings import Analysis, Difference, Value
from ecomtrain.report.trials import load_trials

CHARTS = {  # file -> (how it is drawn, its caption in the report)
    "heatmap.png": (
        plot_heatmap,
        "Mean of each cell over its seeds (rows: task subsets, fewest capabilities first; "
        "columns: LoRA rank), ± the half-width of its 95 % interval.",
    ),
    "capabilities.png": (
        plot_capabilities,
        "Per-capability (track) mean of each cell, 95 % intervals as error bars.",
    ),
    "diversity.png": (
        plot_diversity,
        "Score against the number of capabilities trained on, one line per rank: the mean of "
        "the cells there with its 95 % interval; dots: single trials.",
    ),
    "scores.png": (
        plot_scores,
        "Mean of each cell over its seeds, one bar per LoRA rank, 95 % intervals as error bars.",
    ),
}


ANALYSIS_FILE = findings.FILE
BASELINE_FILE = "baseline.jsonl"  # the untrained base model's per-record scores


def write_report(output: str | Path, rows: list[dict] | None = None) -> Path:
    """The charts, analysis.json, report.md (charts linked) and report.html (charts
    embedded) under `output`, from the typed trials (`rows`, else `output/trials.csv`) and
    the per-record scores of each trial's last checkpoint; returns report.md. A sweep
    without per-record scores gets no analysis.json (an older one is removed: it would
    describe other trials)."""
    output = Path(output)
    rows = rows if rows is not None else load_trials(output / "trials.csv")
    metric = metric_of(rows)
    baseline = output / BASELINE_FILE  # the base model on the held-out split
    found = analyze(
        rows,
        per_record_scores(rows, metric),
        only(metric, statistics.read_scores(baseline.read_text().splitlines()))
        if baseline.exists() and not metric.startswith("extra/")
        else None,
    )
    if found:
        findings.write(found, output)
    else:
        (output / ANALYSIS_FILE).unlink(missing_ok=True)
    for name, (draw, _) in CHARTS.items():
        draw(rows, found, output / name)
    charts = [
        (name, caption if found else f"{caption} Here: {NO_INTERVALS}.")
        for name, (_, caption) in CHARTS.items()
    ]
    return write_pages(rows, output, found, charts + extra_charts(rows, found, output))


def per_record_scores(rows: list[dict], metric: str) -> dict[str, dict[str, dict]]:
    """Each trial's per-record scores behind `metric`, from its last checkpoint (local or
    cloud): the held-out split's, or the extra eval files' for extra/*; trials whose
    checkpoint has none are left out (their figures then carry no uncertainty)."""
    name = EXTRA_SCORES_FILE if metric.startswith("extra/") else SCORES_FILE
    out = {}
    for r in rows:
        if r.get("checkpoint"):
            try:
                text = read_text(f"{r['checkpoint']}/{name}")
            except OSError:  # no such file (FileNotFoundError), or unreadable
                continue
            out[r["trial"]] = only(metric, statistics.read_scores(text.splitlines()))
    return out


def only(metric: str, entries: dict[str, dict]) -> dict[str, dict]:
    """The records a metric is computed on: one capability's for */track/<name>, else all."""
    track = metric.rpartition("track/")[2] if "track/" in metric else None
    return {k: e for k, e in entries.items() if track is None or e["track"] == track}


def console_table(rows: list[dict]) -> str:
    """A fixed-width summary of typed trials for the console, best score first."""
    head = f"{'trial':<40}{'tasks':>6}{'caps':>5}{'score':>9}{'loss':>9}{'wall s':>9}"
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: -r["score"] if not is_failed(r) else 1):
        score = "failed" if is_failed(r) else f"{r['score']:.4f}"
        loss = "-" if r.get("loss") is None else f"{r['loss']:.4f}"
        wall = "-" if r.get("wall_s") is None else f"{r['wall_s']:.1f}"
        lines.append(
            f"{label(r):<40}{r.get('n_tasks') or '?':>6}{r.get('n_capabilities') or '?':>5}"
            f"{score:>9}{loss:>9}{wall:>9}"
        )
    return "\n".join(lines)


def write_pages(
    rows: list[dict], output: Path, found: Analysis | None, charts: list[tuple[str, str]]
) -> Path:
    """report.md and report.html under `output` (the charts, (file, caption), must be
    there); returns report.md. `found`: the analysis with uncertainty, when per-record
    scores exist."""
    sections = report_sections(rows, output.resolve().name, found, charts)
    atomic_write(output / "report.html", to_html(sections, output))
    path = atomic_write(output / "report.md", to_markdown(sections))
    return path


def report_sections(
    rows: list[dict], name: str, found: Analysis | None, charts: list[tuple[str, str]]
) -> list[tuple]:
    """The report as (kind, ...) blocks, rendered to Markdown and to HTML alike; `charts`:
    (file, caption) of each chart drawn."""
    n_failed = sum(is_failed(r) for r in rows)
    out = [
        ("h1", f"Sweep report: {name}"),
        (
            "p",
            f"{len(rows)} trial(s): {len(rows) - n_failed} scored, {n_failed} failed. Score: "
            f"{METRIC_TEXT.get(metric_of(rows), metric_of(rows))} (ShopBench rules: tasks "
            "averaged into tracks, tracks into the score).",
        ),
        ("h2", "Score by task subset and LoRA rank"),
    ]
    if found:
        out += [("p", _sample_text(found)), *[("p", note) for note in found.notes]]
        out.append(("table", *_cell_table(found)))
        if found.baseline:
            out.append(("p", f"Untrained base model, same records: {_ci(found.baseline)}."))
        out += _selected_blocks(found)
        out += [
            ("h2", "Comparisons"),
            (
                "p",
                "Paired differences on the same held-out records (a - b), 95 % intervals, "
                'each fixed by the sweep\'s design before any score was seen. "Not clear" '
                "means the interval includes 0: these trials cannot tell a and b apart. "
                f"{_adjust_text(found)}",
            ),
            ("table", *_comparison_table(found)),
        ]
        head, body = _track_comparison_table(found)
        if body:  # a sweep with a capability ladder
            out += [
                ("h2", "Per capability, between ladder steps"),
                (
                    "p",
                    _family_text(
                        found,
                        [d for c in found.comparisons for d in c.tracks.values()],
                        "per-capability",
                    ),
                ),
                ("table", head, body),
            ]
        head, body = _setting_table(found)
        if body:  # a sweep of sweep.params settings
            out += [
                ("h2", "Per task, along each swept setting"),
                (
                    "p",
                    "Each value of a swept setting against its first value in an otherwise "
                    "equal cell, task by task (a - b, 95 % intervals); the better side where "
                    "the adjusted verdict is clear. "
                    + _family_text(
                        found, [d for c in found.comparisons for d in c.tasks.values()], "per-task"
                    ),
                ),
                ("table", head, body),
            ]
        out += [
            ("h2", "Trained tasks and the others"),
            (
                "p",
                "Score on the tasks a cell trained on (seen) and on the rest (unseen): "
                "transfer, apart from coverage.",
            ),
            ("table", *_seen_table(found)),
        ]
    else:
        out += [
            ("table", *_rank_table(rows)),
            ("p", "These trials kept no per-record scores, so no uncertainty can be given."),
        ]
    return out + [
        ("h2", "Per-capability scores of each trial"),
        ("table", *_track_table(rows)),
        ("h2", "Best trial"),
        ("p", _best_text(rows, found)),
        ("h2", "Charts"),
        *[("img", file, caption) for file, caption in charts],
        ("h2", "Diversity x capacity: interaction model"),
        *_interaction_blocks(found),
        *_model_blocks(fit_interaction(rows)),
        ("h2", "Failed trials"),
        _failed_block(rows),
    ]


METRIC_TEXT = {
    "score": "the held-out split's score",
    "extra/score": "the score on the extra eval files (eval.extra_files)",
}


def _ci(e: Value | Difference) -> str:
    """A value with its 95 % interval; differences signed."""
    diff = isinstance(e, Difference)
    value, sign = (e.diff, "+") if diff else (e.mean, "")
    lo, hi = e.ci
    return f"{value:{sign}.4f} [{lo:{sign}.4f}, {hi:{sign}.4f}]"


def _verdict(e: Difference | None) -> str:
    return "-" if e is None else ("clear" if e.clear else "not clear")


def _adjusted(e: Difference | None) -> str:
    return "-" if e is None or e.adjusted is None else ("clear" if e.adjusted else "not clear")


def _adjust_text(found: Analysis) -> str:
    return (
        "Many comparisons make some look clear by chance: each table also gives the verdict "
        f"after {statistics.ADJUSTMENTS[found.adjustment]} adjustment at 5 % over its family "
        '("adjusted"), and the report\'s headline verdicts are those.'
    )


def _family_text(found: Analysis, family: list[Difference | None], name: str) -> str:
    """How many of a family are clear, unadjusted, after the headline adjustment and after
    Benjamini-Hochberg's."""
    given = [d for d in family if d is not None]
    bh = statistics.adjust([d.p for d in given], "fdr_bh")
    return (
        f"The {len(given)} {name} comparisons of this sweep form one family: "
        f"{sum(d.clear for d in given)} clear unadjusted (about {0.05 * len(given):.1f} would "
        f"be by chance alone where nothing differs), {sum(bool(d.adjusted) for d in given)} "
        f'after {statistics.ADJUSTMENTS[found.adjustment]} adjustment ("adjusted"), '
        f"{sum(bool(x) for x in bh)} after {statistics.ADJUSTMENTS['fdr_bh']}."
    )


def _sample_text(found: Analysis) -> str:
    noise = found.noise
    if not noise.seed_df:
        seeds = (
            "one seed per cell, so training noise is not in the intervals: they say how sure "
            "these adapters' scores are, not what another seed would give"
        )
    elif noise.seed_var_raw <= 0:
        seeds = (
            f"the seed-to-seed variance, pooled over cells ({noise.seed_df} degrees of "
            f"freedom), came out at or below 0 ({noise.seed_var_raw:+.2e}): the seeds varied "
            "no more than their records explain, so the intervals hold the held-out part at "
            "its full size and keep the uncertainty of that estimate (Student's t on its "
            "degrees of freedom), never a narrower normal interval"
        )
    else:
        seeds = (
            f"seed-to-seed SD of a trial's score {noise.seed_sd:.4f} ({noise.seed_df} degrees "
            "of freedom, pooled over cells)"
        )
    confirm = (
        f"; {found.confirmation_records} more records are kept apart to confirm the selected "
        "best (below)"
        if found.confirmation_records
        else "; no records were kept apart to confirm the selected best (eval.confirm_fraction "
        "0, the extra eval files' metric, which scores them whole, or per-record scores from "
        "before the confirmation sample)"
    )
    return (
        f"Cells: mean over seeds with a 95 % interval from a paired bootstrap over the "
        f"{found.selection_records} held-out records the trials were ranked on "
        f"({found.tasks} tasks, {found.bootstrap} resamples stratified by task) and the spread "
        f"over seeds{confirm}. One trial's score has a standard error of about "
        f"{noise.record_se:.4f} from its records; {seeds}."
    )


def _cell_table(found: Analysis) -> tuple[list, list]:
    cells = found.cells
    rks = sorted({c.rank for c in cells})
    ladder = any(c.ladder_step is not None for c in cells)
    what = (
        "mean [95 % CI] x seeds"
        if found.noise.seed_df
        else "score [95 % CI: held-out noise only, training noise not in it] x 1 seed"
    )
    head = ["step"] * ladder + ["subset", "tasks"] + [f"r={k}: {what}" for k in rks]
    top = found.selected.best if found.selected else None
    body = []
    for line in dict.fromkeys(c.subset for c in cells):
        mine = {c.rank: c for c in cells if c.subset == line}
        first = next(iter(mine.values()))
        row = [str(first.ladder_step or "-")] * ladder + [line, str(len(first.tasks))]
        for k in rks:
            c = mine.get(k)
            text = "" if c is None else f"{_ci(c)} x{c.n_seeds}"
            row.append(f"**{text}**" if c is not None and c.name == top else text)
        body.append(row)
    return head, body


def _selected_blocks(found: Analysis) -> list[tuple]:
    sel = found.selected
    if sel is None:
        return []
    out = [("h2", "The selected best")]
    chose = (
        f"The best cell on the {found.selection_records} selection records (what the sweep "
        f"ranked and stopped trials on, in bold above) is **{sel.best}**, mean "
        f"{sel.chosen_mean:.4f} there: a figure biased upward by the choice itself."
    )
    if not sel.confirmed:
        text = (
            f"{chose} There are no confirmation records, so every claim about the best would "
            "rest on the records that chose it; they are shown without a verdict"
        )
    elif sel.score is not None:
        text = (
            f"{chose} On the {sel.records} confirmation records, which chose nothing: mean "
            f"{_ci(sel.score)}"
        )
    else:
        text = chose.removesuffix(".")
    if sel.vs_runner_up is not None:
        v = sel.vs_runner_up
        text += f"; against the runner-up {sel.runner_up}: {_ci(v)}"
        text += f", {_verdict(v)}" if sel.confirmed else ""
    if sel.vs_baseline is not None:
        text += f"; against the untrained base model: {_ci(sel.vs_baseline)}"
        text += f", {_verdict(sel.vs_baseline)}" if sel.confirmed else ""
    text += "."
    if sel.confirmed:
        text += (
            " The confirmation records take away the luck of the records that chose the best; "
            "the luck of its seeds stays (seed effects are part of every score), so a best "
            "cell from few seeds is confirmed as a configuration only by new seeds."
        )
    out.append(("p", text))
    v = sel.vs_runner_up
    if v is not None and sel.confirmed:
        body = [
            [short(t), _ci(d), _verdict(d), _adjusted(d)]
            for t, d in v.tracks.items()
            if d is not None
        ]
        out.append(
            ("table", ["capability", "best - runner-up [95 % CI]", "verdict", "adjusted"], body)
        )
        out.append(("p", _family_text(found, list(v.tasks.values()), "per-task best vs runner-up")))
    return out


def _comparison_table(found: Analysis) -> tuple[list, list]:
    body = [[c.kind, c.a, c.b, _ci(c), _verdict(c), _adjusted(c)] for c in found.comparisons]
    return ["comparison", "a", "b", "difference [95 % CI]", "verdict", "adjusted"], body


def _track_comparison_table(found: Analysis) -> tuple[list, list]:
    body = []
    for c in found.comparisons:
        if c.kind != "ladder step":
            continue
        for track, d in c.tracks.items():
            if d is not None:
                body.append([c.a, c.b, short(track), _ci(d), _verdict(d), _adjusted(d)])
    return ["a", "b", "capability", "difference [95 % CI]", "verdict", "adjusted"], body


def _setting_table(found: Analysis) -> tuple[list, list]:
    fixed = ("ladder step", "rank")
    body = []
    for c in found.comparisons:
        if c.kind in fixed:
            continue
        for task, d in c.tasks.items():
            if d is not None:
                better = {1: c.a, -1: c.b, 0: "not clear"}[d.better]
                body.append([c.kind, c.a, c.b, task, _ci(d), _verdict(d), better])
    head = ["setting", "a", "b", "task", "difference [95 % CI]", "verdict", "better (adjusted)"]
    return head, body


def _seen_table(found: Analysis) -> tuple[list, list]:
    parts: dict[tuple, dict] = {}
    for x in found.seen_unseen:
        parts.setdefault((x.subset, x.rank), {})[x.part] = x
    body = [
        [f"{subset} r{rank}"] + [_ci(p[k]) if k in p else "-" for k in ("seen", "unseen")]
        for (subset, rank), p in parts.items()
    ]
    return ["cell", "seen tasks", "unseen tasks"], body


def _interaction_blocks(found: Analysis | None) -> list[tuple]:
    inter = found.interaction if found else None
    if not inter:
        return []
    lo, hi = inter.ci
    return [
        (
            "p",
            f"Interaction b3 (diversity = {inter.diversity} x {inter.capacity}), from "
            "every trial "
            f"with held-out and seed noise: {inter.diff:+.4f}, 95 % interval "
            f"[{lo:+.4f}, {hi:+.4f}]: {_verdict(inter)}.",
        )
    ]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _rank_table(rows: list[dict]) -> tuple[list, list]:
    """Table 2: one row per subset (ladder order), each cell the mean of its scored trials
    (no interval: no per-record scores); the best cell in bold."""
    ladder = any(r.get("ladder_step") is not None for r in rows)
    head = ["step"] * ladder + ["subset", "capabilities", "tasks"] + [f"r={k}" for k in ranks(rows)]
    means = {(s, k): cell(rows, s, k) for s in subsets(rows) for k in ranks(rows)}
    scored = [key for key, (m, _) in means.items() if m is not None]
    top = max(scored, key=lambda key: means[key][0]) if scored else None
    body = []
    for s in subsets(rows):
        first = next(r for r in rows if line_of(r) == s)
        caps = "+".join(short(c) for c in first["capabilities"]) or "?"
        step = first.get("ladder_step")
        line = ["-" if step is None else str(step)] * ladder
        line += [
            s,
            f"{caps} ({first.get('n_capabilities') or '?'})",
            str(first.get("n_tasks") or "?"),
        ]
        for k in ranks(rows):
            value, n = means[s, k]
            text = "failed" if value is None and n else ("" if value is None else _fmt(value))
            if (s, k) == top:
                text = f"**{text}**"
            line.append(text + (f" (mean of {n})" if n > 1 else ""))
        body.append(line)
    return head, body


def _track_table(rows: list[dict]) -> tuple[list, list]:
    cols, order = tracks(rows), {s: i for i, s in enumerate(subsets(rows))}
    body = []
    for r in sorted(rows, key=lambda r: (order[line_of(r)], r["rank"])):
        score = "failed" if is_failed(r) else _fmt(r["score"])
        body.append([label(r), score] + [_fmt(r.get(c)) for c in cols])
    return ["trial", "score"] + [short(c) for c in cols], body


def _best_text(rows: list[dict], found: Analysis | None = None) -> str:
    top = best(rows)
    if top is None:
        return "No trial was scored."
    parts = ", ".join(f"{short(c)} {_fmt(top.get(c))}" for c in tracks(rows))
    text = (
        f"**{label(top)}** (trial {top['trial']}): score {top['score']:.4f}, "
        f"{top.get('n_tasks') or '?'} tasks over {top.get('n_capabilities') or '?'} "
        f"capabilities; per track: {parts or 'not recorded'}."
    )
    sel = found.selected if found else None
    if sel and sel.best_trial == top["trial"] and sel.trial_score is not None:
        where = (
            f"on the {sel.records} confirmation records, which did not choose it"
            if sel.confirmed
            else f"on the {sel.records} records that chose it (no confirmation sample)"
        )
        text += (
            f" Its score was chosen as the highest, so it is biased upward; {where}: "
            f"{_ci(sel.trial_score)} (held-out noise only: a claim about this adapter)."
        )
    return text


def _model_blocks(fit: dict) -> list[tuple]:
    """Formula, what was fitted and why, the estimates, and the raw interaction contrast."""
    what = {"n_capabilities": "capabilities covered", "task_entropy": "task-mixture entropy"}
    out = [
        (
            "p",
            f"score = b0 + b1*diversity + b2*capacity + b3*diversity*capacity, diversity = "
            f"{fit['diversity']} ({what[fit['diversity']]}), capacity = {fit['capacity']}; "
            f"ordinary least squares on {fit['n']} scored trial(s).",
        )
    ]
    out += [("p", note) for note in fit["notes"]]
    if not fit["terms"]:
        return out
    out.append(("table", ["term", "estimate", "SE", "95% CI"], _estimates(fit)))
    if fit["sigma"] is not None:
        r2 = "" if fit["r2"] is None else f", R^2 {fit['r2']:.3f}"
        out.append(
            (
                "p",
                f"Residual SD {fit['sigma']:.4f} on {fit['df']} degrees of freedom"
                f"{r2}; CIs use Student's t.",
            )
        )
    if fit["ci"] is not None and fit["terms"][-1].startswith("b3"):
        lo, hi = fit["ci"][-1]
        sign = "excludes" if lo > 0 or hi < 0 else "includes"
        out.append(
            (
                "p",
                "b3 > 0 means more adapter capacity helps more as diversity grows; its 95% CI "
                f"{sign} 0.",
            )
        )
    if fit.get("did"):
        out.append(("p", _did_text(fit["did"], fit["diversity"])))
    return out


def _estimates(fit: dict) -> list[list[str]]:
    se, ci = fit["se"], fit["ci"]
    return [
        [
            term,
            f"{b:+.4f}",
            "none" if se is None else _fmt(se[i]),
            "none" if ci is None else f"[{ci[i][0]:+.4f}, {ci[i][1]:+.4f}]",
        ]
        for i, (term, b) in enumerate(zip(fit["terms"], fit["beta"], strict=True))
    ]


def _did_text(did: dict, key: str) -> str:
    (lo, hi), (r0, r1), c = did["div"], did["rank"], did["corners"]
    return (
        f"Interaction contrast (diff-in-diff), {key} {lo:g} -> {hi:g} and rank {r0} -> {r1}: "
        f"({c[hi, r1]:.4f} - {c[hi, r0]:.4f}) - ({c[lo, r1]:.4f} - {c[lo, r0]:.4f}) = "
        f"{did['value']:+.4f}; a raw contrast of corner scores, without a standard error."
    )


def _failed_block(rows: list[dict]) -> tuple:
    failed = [r for r in rows if is_failed(r)]
    if not failed:
        return ("p", "None: every trial was scored.")
    body = [
        [r["trial"], r["subset"], str(r["rank"]), r["error"] or "no score reported"] for r in failed
    ]
    return ("table", ["trial", "subset", "rank", "error"], body)


def to_markdown(sections: list[tuple]) -> str:
    out = []
    for kind, *args in sections:
        if kind == "table":
            cells = [args[0], ["---"] * len(args[0]), *args[1]]
            out.append(
                "\n".join("| " + " | ".join(_md_cell(c) for c in line) + " |" for line in cells)
            )
        elif kind == "img":
            out.append(f"![{args[1]}]({args[0]})\n\n*{args[1]}*")
        else:
            out.append({"h1": "# ", "h2": "## ", "p": ""}[kind] + args[0])
    return "\n\n".join(out) + "\n"


def _md_cell(text: str) -> str:
    return " ".join(text.split("\n")).replace("|", "\\|")


def to_html(sections: list[tuple], folder: Path) -> str:
    """One self-contained page: the charts are embedded as base64 PNGs."""

    def text(s: str) -> str:
        return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(s))

    out = []
    for kind, *args in sections:
        if kind == "table":
            head = "".join(f"<th>{text(c)}</th>" for c in args[0])
            body = "".join(
                "<tr>" + "".join(f"<td>{text(c)}</td>" for c in line) + "</tr>" for line in args[1]
            )
            out.append(f"<table><tr>{head}</tr>{body}</table>")
        elif kind == "img":
            data = base64.b64encode((folder / args[0]).read_bytes()).decode()
            out.append(
                f'<figure><img alt="{text(args[1])}" src="data:image/png;base64,{data}">'
                f"<figcaption>{text(args[1])}</figcaption></figure>"
            )
        else:
            out.append(f"<{kind}>{text(args[0])}</{kind}>")
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:"
        "collapse}td,th{border:1px solid #ccc;padding:.2em .6em}img{max-width:100%}"
    )
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{text(sections[0][1])}"
        f"</title><style>{style}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n"
    )
