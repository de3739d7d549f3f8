"""The report's charts (PNG, matplotlib's Agg backend), drawn from typed trials and the
analysis (ecomtrain.report.findings).

Every bar and line is a cell's mean over its seeds with its 95 % interval as an error bar,
from the analysis; where the trials kept no per-record scores there is no interval, the
charts show the trials' means without bars and their captions say so (`NO_INTERVALS`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ecomtrain.report.analysis import (
    cell,
    cell_key,
    diversity_lines,
    is_failed,
    line_of,
    ranks,
    short,
    subsets,
    tracks,
)
from ecomtrain.report.findings import Analysis, Value
from ecomtrain.report.trials import swept_keys
from ecomtrain.tasks import CAPABILITIES

NO_INTERVALS = "no per-record scores, so trial means without intervals"


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


def _err(values: list[Value | None], means: list[float]) -> list[list[float]] | None:
    """matplotlib's yerr (below, above) from intervals; None where there are none."""
    if not any(values):
        return None
    return [
        [m - v.ci[0] if v else 0.0 for v, m in zip(values, means, strict=True)],
        [v.ci[1] - m if v else 0.0 for v, m in zip(values, means, strict=True)],
    ]


def cell_values(rows: list[dict], found: Analysis | None, line: str, rank: int) -> tuple:
    """(mean, its Value with the interval or None, trials run) of a cell: the analysis's
    mean over seeds, else the scored trials' mean."""
    c = found.cell(line, rank) if found else None
    mean, n = cell(rows, line, rank)
    return (c.mean if c else mean), c, n


def plot_scores(rows: list[dict], found: Analysis | None, path: Path) -> Path:
    """Grouped bars: the mean of each cell (table line, one bar per LoRA rank) over its
    seeds, 95 % intervals as error bars."""
    lines, rks = subsets(rows), ranks(rows)
    width = 0.8 / max(1, len(rks))
    fig, ax = _pyplot().subplots(figsize=(1.8 + 1.6 * len(lines), 3.6))
    for j, rank in enumerate(rks):
        got = [cell_values(rows, found, s, rank) for s in lines]
        means = [m or 0.0 for m, _, _ in got]
        xs = [i + (j - (len(rks) - 1) / 2) * width for i in range(len(lines))]
        err = _err([v for _, v, _ in got], means)
        ax.bar(xs, means, width, yerr=err, capsize=3, label=f"rank {rank}")
    ax.set_xticks(range(len(lines)), lines)
    ax.set_ylabel("ShopBench score (held-out)")
    ax.set_title(
        "Cell mean by task subset and LoRA rank" + ("" if found else f"\n({NO_INTERVALS})")
    )
    ax.legend()
    return _save(fig, path)


def plot_heatmap(rows: list[dict], found: Analysis | None, path: Path) -> Path:
    """Subset x rank -> the cell's mean over seeds, annotated with its interval's half-width
    (± beside the mean); failed cells say so."""
    import numpy as np

    subs, rks = subsets(rows), ranks(rows)
    cells = [[cell_values(rows, found, s, r) for r in rks] for s in subs]
    grid = np.ma.masked_invalid(
        [[np.nan if m is None else m for m, _, _ in line] for line in cells]
    )
    fig, ax = _pyplot().subplots(figsize=(3.8 + 1.3 * len(rks), 1.6 + 0.6 * len(subs)))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    mid = (grid.min() + grid.max()) / 2 if grid.count() else 0.0
    for i, line in enumerate(cells):
        for j, (mean, value, n) in enumerate(line):
            text = f"{mean:.3f}" if mean is not None else ("failed" if n else "")
            if value is not None:
                text += f"\n±{(value.ci[1] - value.ci[0]) / 2:.3f}"
            dark = mean is not None and mean < mid
            ax.text(
                j, i, text, ha="center", va="center", color="white" if dark else "black",
                fontsize="small",
            )  # fmt: skip
    caps = {line_of(r): r.get("n_capabilities") for r in rows}
    ax.set_xticks(range(len(rks)), [f"rank {r}" for r in rks])
    ax.set_yticks(range(len(subs)), [f"{s} ({caps[s] or '?'} caps)" for s in subs])
    ax.set_title("Cell mean ± 95 % interval half-width" if found else f"Cell mean ({NO_INTERVALS})")
    fig.colorbar(image, ax=ax, label="score")
    return _save(fig, path)


def plot_capabilities(rows: list[dict], found: Analysis | None, path: Path) -> Path:
    """Grouped bars: per-track mean of each cell over its seeds, 95 % intervals as error
    bars (the 12 best cells past 12)."""
    order = {s: i for i, s in enumerate(subsets(rows))}
    keys = sorted(
        {cell_key(r) for r in rows if not is_failed(r)}, key=lambda k: (order[k[0]], k[1])
    )
    cols = tracks(rows)

    def track_value(key: tuple, col: str) -> tuple[float, Value | None]:
        c = found.cell(*key) if found else None
        v = c.tracks.get(col.removeprefix("track/")) if c else None
        if v is not None:
            return v.mean, v
        got = [r.get(col) for r in rows if cell_key(r) == key and not is_failed(r)]
        got = [x for x in got if x is not None]
        return (sum(got) / len(got) if got else 0.0), None

    if len(keys) > 12:
        keys = sorted(keys, key=lambda k: -cell_values(rows, found, *k)[0])[:12]
        keys.sort(key=lambda k: (order[k[0]], k[1]))
    fig, ax = _pyplot().subplots(figsize=(2.5 + 0.9 * max(4, len(keys)), 4.0))
    width = 0.8 / max(1, len(cols))
    top = 0.0
    for j, col in enumerate(cols):
        got = [track_value(k, col) for k in keys]
        means = [m for m, _ in got]
        err = _err([v for _, v in got], means)
        xs = [i + (j - (len(cols) - 1) / 2) * width for i in range(len(keys))]
        ax.bar(xs, means, width, yerr=err, capsize=2, label=short(col))
        top = max([top] + [v.ci[1] if v else m for m, v in got])
    if not keys or not cols:
        ax.text(0.5, 0.5, "no per-track scores", ha="center", transform=ax.transAxes)
    ax.set_xticks(range(len(keys)), [f"{s} r{k}" for s, k in keys], rotation=30, ha="right")
    ax.set_ylabel("track score (held-out)")
    ax.set_title("Per-capability cell mean" + ("" if found else f" ({NO_INTERVALS})"))
    if cols and keys:
        ax.set_ylim(0, 1.25 * top or 1.0)
        ax.legend(fontsize="small", ncol=len(cols), loc="upper left")
    return _save(fig, path)


def plot_diversity(rows: list[dict], found: Analysis | None, path: Path) -> Path:
    """Score against capabilities covered, one line per rank: the mean of the cells at each
    point with its 95 % interval (each trial a faint dot)."""
    fig, ax = _pyplot().subplots(figsize=(5.4, 3.8))
    if found:
        lines = {}
        for p in found.lines:
            lines.setdefault(p.rank, []).append(p)
        points = {
            r: ([p.n_capabilities for p in ps], [p.mean for p in ps], ps) for r, ps in lines.items()
        }
    else:
        points = {r: (xs, ys, [None] * len(xs)) for r, (xs, ys) in diversity_lines(rows).items()}
    for rank, (xs, ys, values) in points.items():
        err = _err(values, ys)
        line = ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"rank {rank}")
        pts = [r for r in rows if r["rank"] == rank and not is_failed(r)]
        pts = [r for r in pts if r.get("n_capabilities") is not None]
        ax.scatter(
            [r["n_capabilities"] for r in pts],
            [r["score"] for r in pts],
            color=line.lines[0].get_color(),
            alpha=0.3,
            s=14,
        )
    ax.set_xticks(range(1, len(CAPABILITIES) + 1))
    ax.set_xlabel("capabilities trained on")
    ax.set_ylabel("ShopBench score (held-out)")
    ax.set_title("Score by capabilities trained on" + ("" if found else f"\n({NO_INTERVALS})"))
    if points:
        ax.legend(fontsize="small")
    return _save(fig, path)


def extra_charts(rows: list[dict], found: Analysis | None, folder: Path) -> list[tuple[str, str]]:
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
    rows: list[dict], found: Analysis | None, x_of: Callable, line: Callable
) -> dict[str, list[tuple]]:
    """Per chart line: (x, cell mean, interval low, high) of each cell, sorted by x; the
    mean and interval from the analysis when it has the cell, else the trials' mean."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if not is_failed(r) and x_of(r) is not None:
            groups.setdefault((line_of(r), r["rank"]), []).append(r)
    out: dict[str, list[tuple]] = {}
    for key, members in groups.items():
        c = found.cell(*key) if found else None
        mean = c.mean if c else sum(r["score"] for r in members) / len(members)
        lo, hi = c.ci if c else (mean, mean)
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


def plot_capacity(rows: list[dict], found: Analysis | None, path: Path) -> Path:
    """Score against trainable parameters (log x), one line per table line (subset and any
    other swept values), 95 % intervals from the analysis."""
    fig, ax = _pyplot().subplots(figsize=(5.8, 3.8))
    _lines(ax, _points(rows, found, lambda r: r.get("trainable_params"), line_of))
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel("ShopBench score (held-out)")
    ax.set_title("Score by adapter capacity")
    return _save(fig, path)


def plot_setting(rows: list[dict], found: Analysis | None, key: str, path: Path) -> Path:
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
