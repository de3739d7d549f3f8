"""Sweep results: trials.csv, the charts (PNG), a printed table, and the full report.

`write_report` turns Tune's ResultGrid into trials.csv, scores.png and the table;
`write_full_report` reads trials.csv back (parsed and modelled by `ecomtrain.report`), draws
heatmap.png, capabilities.png and diversity.png, and writes report.md / report.html
(`tuning.report_doc`).
"""

from __future__ import annotations

import csv
from pathlib import Path

from ecomtrain.report import (
    best,
    cell,
    diversity_lines,
    is_failed,
    label,
    load_trials,
    ranks,
    short,
    subsets,
    tracks,
)
from ecomtrain.tasks import CAPABILITIES
from tuning.report_doc import write_pages

COLUMNS = [
    "trial",
    "subset",
    "tasks",
    "n_tasks",
    "n_capabilities",
    "rank",
    "score",
    "loss",
    "wall_s",
]
# Columns a trial has when its subset, config or metrics carry them.
OPTIONAL = ["alpha", "ladder_step", "capabilities", "task_entropy", "trainable_params"]


def trial_rows(results) -> list[dict]:
    """One row per trial of a Tune ResultGrid (failed trials included, score empty)."""
    rows = []
    for r in results:
        cfg, m = r.config or {}, r.metrics or {}
        subset = cfg.get("subset", {})
        row = {
            "trial": r.path.rsplit("/", 1)[-1] if r.path else "",
            "subset": subset.get("id", ""),
            "tasks": " ".join(subset.get("tasks", [])),
            "n_tasks": subset.get("n_tasks", ""),
            "n_capabilities": subset.get("n_capabilities", ""),
            "rank": cfg.get("rank", ""),
            "score": m.get("score", ""),
            "loss": m.get("loss", ""),
            "wall_s": round(m.get("time_total_s", 0.0), 1),
        }
        for key in OPTIONAL:
            value = subset.get(key, cfg.get(key, m.get(key)))
            if value is not None:
                row[key] = " ".join(value) if isinstance(value, list) else value
        row |= {k: v for k, v in m.items() if k.startswith(("track/", "task/"))}
        if r.error:
            row["error"] = str(r.error).splitlines()[0][:200]
        rows.append(row)
    return sorted(rows, key=lambda x: (str(x["subset"]), int(x["rank"] or 0)))


def write_csv(rows: list[dict], path: Path) -> Path:
    """trials.csv: the fixed columns first, then optional ones, then per-track/per-task scores."""
    keys = {k for r in rows for k in r}
    optional = [k for k in OPTIONAL if k in keys]
    extra = sorted(keys - set(COLUMNS) - set(optional))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS + optional + extra)
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_scores(rows: list[dict], path: Path) -> Path:
    """Grouped bars: score by subset, one bar per LoRA rank."""
    subsets = list(dict.fromkeys(r["subset"] for r in rows))
    ranks = sorted({int(r["rank"]) for r in rows})
    width = 0.8 / max(1, len(ranks))
    fig, ax = _pyplot().subplots(figsize=(1.8 + 1.6 * len(subsets), 3.6))
    for j, rank in enumerate(ranks):
        scores = [_score(rows, s, rank) for s in subsets]
        xs = [i + (j - (len(ranks) - 1) / 2) * width for i in range(len(subsets))]
        ax.bar(xs, scores, width, label=f"rank {rank}")
    ax.set_xticks(range(len(subsets)), subsets)
    ax.set_ylabel("ShopBench score (held-out)")
    ax.set_title("Score by task subset and LoRA rank")
    ax.legend()
    return _save(fig, path)


def _score(rows: list[dict], subset: str, rank: int) -> float:
    for r in rows:
        if r["subset"] == subset and int(r["rank"]) == rank and r["score"] != "":
            return float(r["score"])
    return 0.0


def table(rows: list[dict]) -> str:
    """A fixed-width summary table, best score first."""
    head = f"{'subset':<28}{'rank':>6}{'tasks':>7}{'caps':>6}{'score':>9}{'loss':>9}{'wall s':>9}"
    lines = [head, "-" * len(head)]
    ranked = sorted(rows, key=lambda r: -float(r["score"]) if r["score"] != "" else 1)
    for r in ranked:
        score = f"{float(r['score']):.4f}" if r["score"] != "" else "failed"
        loss = f"{float(r['loss']):.4f}" if r["loss"] != "" else "-"
        lines.append(
            f"{r['subset']:<28}{r['rank']:>6}{r['n_tasks']:>7}{r['n_capabilities']:>6}"
            f"{score:>9}{loss:>9}{r['wall_s']:>9}"
        )
    return "\n".join(lines)


def write_report(results, output: Path) -> str:
    """Write trials.csv and scores.png under `output`; return the summary table."""
    rows = trial_rows(results)
    write_csv(rows, output / "trials.csv")
    plot_scores(rows, output / "scores.png")
    return table(rows)


# --- the full report, from trials.csv ----------------------------------------------------------


def write_full_report(output: Path | str) -> Path:
    """report.md, report.html and their charts from `output/trials.csv`; returns report.md."""
    output = Path(output)
    return write_documents(load_trials(output / "trials.csv"), output)


def write_documents(rows: list[dict], output: Path) -> Path:
    """Draw the charts, then write report.md (charts linked) and report.html (embedded)."""
    plot_heatmap(rows, output / "heatmap.png")
    plot_capabilities(rows, output / "capabilities.png")
    plot_diversity(rows, output / "diversity.png")
    return write_pages(rows, output)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def plot_heatmap(rows: list[dict], path: Path) -> Path:
    """Subset x rank -> best score, each cell annotated; failed cells say so."""
    import numpy as np

    subs, rks = subsets(rows), ranks(rows)
    cells = [[cell(rows, s, r) for r in rks] for s in subs]
    grid = np.ma.masked_invalid([[np.nan if v is None else v for v, _ in line] for line in cells])
    fig, ax = _pyplot().subplots(figsize=(3.8 + 1.1 * len(rks), 1.6 + 0.5 * len(subs)))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    mid = (grid.min() + grid.max()) / 2 if grid.count() else 0.0
    for i, line in enumerate(cells):
        for j, (value, n) in enumerate(line):
            text = f"{value:.3f}" if value is not None else ("failed" if n else "")
            dark = value is not None and value < mid
            ax.text(j, i, text, ha="center", va="center", color="white" if dark else "black")
    caps = {r["subset"]: r.get("n_capabilities") for r in rows}
    ax.set_xticks(range(len(rks)), [f"rank {r}" for r in rks])
    ax.set_yticks(range(len(subs)), [f"{s} ({caps[s] or '?'} caps)" for s in subs])
    ax.set_title("Score: task subset x LoRA rank")
    fig.colorbar(image, ax=ax, label="score")
    return _save(fig, path)


def plot_capabilities(rows: list[dict], path: Path) -> Path:
    """Grouped bars: per-track score of each scored trial (best rank per subset past 12)."""
    order = {s: i for i, s in enumerate(subsets(rows))}
    shown = sorted(
        (r for r in rows if not is_failed(r)), key=lambda r: (order[r["subset"]], r["rank"])
    )
    if len(shown) > 12:
        shown = [best([r for r in shown if r["subset"] == s]) for s in order]
        shown = [r for r in shown if r is not None]
    cols = tracks(rows)
    fig, ax = _pyplot().subplots(figsize=(2.5 + 0.9 * max(4, len(shown)), 4.0))
    width = 0.8 / max(1, len(cols))
    for j, col in enumerate(cols):
        xs = [i + (j - (len(cols) - 1) / 2) * width for i in range(len(shown))]
        ax.bar(xs, [r.get(col) or 0.0 for r in shown], width, label=short(col))
    if not shown or not cols:
        ax.text(0.5, 0.5, "no per-track scores", ha="center", transform=ax.transAxes)
    ax.set_xticks(range(len(shown)), [label(r) for r in shown], rotation=30, ha="right")
    ax.set_ylabel("track score (held-out)")
    ax.set_title("Per-capability score of each trial")
    if cols and shown:
        ax.set_ylim(0, 1.25 * max(max(r.get(c) or 0.0 for c in cols) for r in shown) or 1.0)
        ax.legend(fontsize="small", ncol=len(cols), loc="upper left")
    return _save(fig, path)


def plot_diversity(rows: list[dict], path: Path) -> Path:
    """Score against capabilities covered, one line per rank (mean of trials, points shown)."""
    fig, ax = _pyplot().subplots(figsize=(5.4, 3.8))
    for rank, (xs, ys) in diversity_lines(rows).items():
        (line,) = ax.plot(xs, ys, marker="o", label=f"rank {rank}")
        pts = [r for r in rows if r["rank"] == rank and not is_failed(r)]
        pts = [r for r in pts if r.get("n_capabilities") is not None]
        ax.scatter(
            [r["n_capabilities"] for r in pts],
            [r["score"] for r in pts],
            color=line.get_color(),
            alpha=0.4,
            s=18,
        )
    ax.set_xticks(range(1, len(CAPABILITIES) + 1))
    ax.set_xlabel("capabilities trained on")
    ax.set_ylabel("ShopBench score (held-out)")
    ax.set_title("Score by capabilities trained on")
    if ax.lines:
        ax.legend(fontsize="small")
    return _save(fig, path)
