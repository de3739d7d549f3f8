"""The report's charts (PNG, matplotlib's Agg backend), drawn from typed trials."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ecomtrain.report.analysis import (
    best,
    cell,
    diversity_lines,
    is_failed,
    label,
    line_of,
    ranks,
    short,
    subsets,
    tracks,
)
from ecomtrain.report.trials import swept_keys
from ecomtrain.tasks import CAPABILITIES


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


def plot_scores(rows: list[dict], path: Path) -> Path:
    """Grouped bars: score of each table line (subset), one bar per LoRA rank."""
    lines, rks = subsets(rows), ranks(rows)
    width = 0.8 / max(1, len(rks))
    fig, ax = _pyplot().subplots(figsize=(1.8 + 1.6 * len(lines), 3.6))
    for j, rank in enumerate(rks):
        scores = [cell(rows, s, rank)[0] or 0.0 for s in lines]
        xs = [i + (j - (len(rks) - 1) / 2) * width for i in range(len(lines))]
        ax.bar(xs, scores, width, label=f"rank {rank}")
    ax.set_xticks(range(len(lines)), lines)
    ax.set_ylabel("ShopBench score (held-out)")
    ax.set_title("Score by task subset and LoRA rank")
    ax.legend()
    return _save(fig, path)


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
    caps = {line_of(r): r.get("n_capabilities") for r in rows}
    ax.set_xticks(range(len(rks)), [f"rank {r}" for r in rks])
    ax.set_yticks(range(len(subs)), [f"{s} ({caps[s] or '?'} caps)" for s in subs])
    ax.set_title("Score: task subset x LoRA rank")
    fig.colorbar(image, ax=ax, label="score")
    return _save(fig, path)


def plot_capabilities(rows: list[dict], path: Path) -> Path:
    """Grouped bars: per-track score of each scored trial (best rank per subset past 12)."""
    order = {s: i for i, s in enumerate(subsets(rows))}
    shown = sorted(
        (r for r in rows if not is_failed(r)), key=lambda r: (order[line_of(r)], r["rank"])
    )
    if len(shown) > 12:
        shown = [best([r for r in shown if line_of(r) == s]) for s in order]
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


def extra_charts(rows: list[dict], found: dict, folder: Path) -> list[tuple[str, str]]:
    """The charts only some sweeps have, drawn into `folder`: score against trainable
    parameters (when trials recorded them and differ in them), and against each numeric
    swept setting (`sweep.params`, e.g. data.ood_fraction). Returns (file, caption) pairs."""
    out = []
    scored = [r for r in rows if not is_failed(r)]
    if len({r.get("trainable_params") for r in scored} - {None}) > 1:
        out.append(
            (
                plot_capacity(rows, found, folder / "capacity.png").name,
                "Score against trainable parameters (log scale), one line per task subset; "
                "bars: 95 % intervals where per-record scores exist.",
            )
        )
    for key in swept_keys(scored[0]) if scored else []:
        values = {r[key] for r in scored}
        if len(values) > 1 and all(isinstance(v, (int, float)) for v in values):
            name = f"setting-{key.replace('.', '-')}.png"
            plot_setting(rows, found, key, folder / name)
            out.append((name, f"Score against {key}, one line per rank and subset; bars: 95 % "
                        "intervals where per-record scores exist."))  # fmt: skip
    return out


def _points(
    rows: list[dict], found: dict, x_of: Callable, line: Callable
) -> dict[str, list[tuple]]:
    """Per chart line: (x, cell mean, interval low, high) of each cell, sorted by x; the
    mean and interval from the analysis when it has the cell, else the trials' mean."""
    cells = {(c["subset"], c["rank"]): c for c in (found or {}).get("cells", [])}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if not is_failed(r) and x_of(r) is not None:
            groups.setdefault((line_of(r), r["rank"]), []).append(r)
    out: dict[str, list[tuple]] = {}
    for key, members in groups.items():
        c = cells.get(key)
        mean = c["mean"] if c else sum(r["score"] for r in members) / len(members)
        lo, hi = c["ci"] if c else (mean, mean)
        out.setdefault(line(members[0]), []).append((x_of(members[0]), mean, lo, hi))
    return {k: sorted(v) for k, v in out.items()}


def _lines(ax, points: dict[str, list[tuple]]) -> None:
    for name, pts in points.items():
        xs, ys, lo, hi = (list(v) for v in zip(*pts, strict=True))
        err = [
            [y - a for y, a in zip(ys, lo, strict=True)],
            [b - y for y, b in zip(ys, hi, strict=True)],
        ]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
    if points:
        ax.legend(fontsize="small")


def plot_capacity(rows: list[dict], found: dict, path: Path) -> Path:
    """Score against trainable parameters (log x), one line per table line (subset and any
    other swept values), 95 % intervals from the analysis."""
    fig, ax = _pyplot().subplots(figsize=(5.8, 3.8))
    _lines(ax, _points(rows, found, lambda r: r.get("trainable_params"), line_of))
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel("ShopBench score (held-out)")
    ax.set_title("Score by adapter capacity")
    return _save(fig, path)


def plot_setting(rows: list[dict], found: dict, key: str, path: Path) -> Path:
    """Score against a numeric swept setting, one line per rank and subset (and the other
    swept values), 95 % intervals from the analysis."""

    def line(r: dict) -> str:
        rest = " ".join(f"{k}={r[k]}" for k in swept_keys(r) if k != key)
        return " ".join(filter(None, (r["subset"], f"r{r['rank']}", rest)))

    fig, ax = _pyplot().subplots(figsize=(5.8, 3.8))
    _lines(ax, _points(rows, found, lambda r: r.get(key), line))
    ax.set_xlabel(key)
    ax.set_ylabel("ShopBench score (held-out)")
    ax.set_title(f"Score by {key}")
    return _save(fig, path)
