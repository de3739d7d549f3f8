"""Sweep results: trials.csv, a score chart (PNG) and a printed summary table."""

from __future__ import annotations

import csv
from pathlib import Path

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
        row |= {k: v for k, v in m.items() if k.startswith(("track/", "task/"))}
        if r.error:
            row["error"] = str(r.error).splitlines()[0][:200]
        rows.append(row)
    return sorted(rows, key=lambda x: (str(x["subset"]), int(x["rank"] or 0)))


def write_csv(rows: list[dict], path: Path) -> Path:
    """trials.csv: the fixed columns first, then per-track and per-task scores."""
    extra = sorted({k for r in rows for k in r} - set(COLUMNS))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS + extra)
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_scores(rows: list[dict], path: Path) -> Path:
    """Grouped bars: score by subset, one bar per LoRA rank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subsets = list(dict.fromkeys(r["subset"] for r in rows))
    ranks = sorted({int(r["rank"]) for r in rows})
    width = 0.8 / max(1, len(ranks))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(subsets), 3.6))
    for j, rank in enumerate(ranks):
        scores = [_score(rows, s, rank) for s in subsets]
        xs = [i + (j - (len(ranks) - 1) / 2) * width for i in range(len(subsets))]
        ax.bar(xs, scores, width, label=f"rank {rank}")
    ax.set_xticks(range(len(subsets)), subsets)
    ax.set_ylabel("ShopBench score (held-out)")
    ax.set_title("Score by task subset and LoRA rank")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
