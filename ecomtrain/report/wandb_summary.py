"""One W&B run that sums up a sweep, beside its per-trial runs in the same group.

It logs every trial as a `wandb.Table` (failed ones included), the report's charts as images
(cell means with 95 % intervals), the cells with their intervals as a table, a native W&B
line chart of score against capabilities trained on (one line per LoRA rank: the cells' mean
and, beside it, its interval's low and high ends), so trials can be compared in the W&B UI
without opening report.html, and the best trial's adapter as a model artifact. The analysis
comes from analysis.json in the sweep's folder (ecomtrain.report.findings); without it (no
per-record scores) the line chart shows the trials' means alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ecomtrain.report import findings
from ecomtrain.report.analysis import best, diversity_lines, label
from ecomtrain.report.findings import Analysis
from ecomtrain.tracking import wandb_run

if TYPE_CHECKING:
    import wandb


def trials_table(rows: list[dict]) -> wandb.Table:
    """All trials as a wandb.Table: every column of trials.csv, lists joined by spaces."""
    import wandb

    columns = list(dict.fromkeys(k for r in rows for k in r))
    data = [[_cell(r.get(c)) for c in columns] for r in rows]
    return wandb.Table(columns=columns, data=data, allow_mixed_types=True)


def _cell(value):
    return " ".join(value) if isinstance(value, list) else value


def score_lines(rows: list[dict], found: Analysis | None = None) -> wandb.plot.CustomChart:
    """Native line chart: score by capabilities trained on, one line per rank: the mean of
    the cells there and its 95 % interval's ends (from the analysis), else the trials' mean."""
    import wandb

    keys, xs, ys = [], [], []
    if found:
        for rank in dict.fromkeys(p.rank for p in found.lines):
            points = [p for p in found.lines if p.rank == rank]
            x = [p.n_capabilities for p in points]
            for name, y in (
                (f"rank {rank}", [p.mean for p in points]),
                (f"rank {rank} 95% low", [p.ci[0] for p in points]),
                (f"rank {rank} 95% high", [p.ci[1] for p in points]),
            ):
                keys.append(name)
                xs.append(x)
                ys.append(y)
    else:
        for rank, (x, y) in diversity_lines(rows).items():
            keys.append(f"rank {rank}")
            xs.append(x)
            ys.append(y)
    return wandb.plot.line_series(
        xs=xs, ys=ys, keys=keys, title="Score by capabilities trained on", xname="capabilities"
    )


def cells_table(found: Analysis) -> wandb.Table:
    """Every cell: its mean over seeds and the 95 % interval."""
    import wandb

    columns = ["subset", "rank", "n_seeds", "n_capabilities", "mean", "ci_low", "ci_high"]
    data = [
        [c.subset, c.rank, c.n_seeds, c.n_capabilities, c.mean, c.ci[0], c.ci[1]]
        for c in found.cells
    ]
    return wandb.Table(columns=columns, data=data)


def log_summary(
    rows: list[dict],
    project: str,
    group: str,
    mode: str,
    dir: str | Path,
    entity: str | None = None,
    images: dict[str, Path] | None = None,
    config: dict | None = None,
    adapter: Path | None = None,
) -> Path | None:
    """Log the sweep summary run "<group>-summary" (job_type "summary"); return its run folder.

    `rows` are typed trials (`ecomtrain.report.trials.load_trials`); `images` maps a name to a PNG and
    defaults to the report's charts (every PNG in `dir`); `config` is the sweep's resolved config;
    `adapter` the best trial's adapter folder, logged as the artifact "<group>-best-adapter".
    Nothing is logged when `mode` is "disabled".
    """
    if images is None:
        images = {p.stem: p for p in sorted(Path(dir).glob("*.png"))}
    top = best(rows)
    found = findings.read(Path(dir))
    with wandb_run(
        "summary",
        project=project,
        entity=entity,
        group=group,
        name=f"{group}-summary",
        tags=[group],
        mode=mode,
        dir=dir,
        config=(config or {}) | {"n_trials": len(rows)},
    ) as run:
        if run is None:
            return None
        import wandb

        logged = {"trials": trials_table(rows)}
        logged |= {f"charts/{name}": wandb.Image(str(path)) for name, path in images.items()}
        if found:
            logged["cells"] = cells_table(found)
        if (found and found.lines) or (not found and diversity_lines(rows)):
            logged["score_by_capabilities"] = score_lines(rows, found)
        run.log(logged)
        if top is not None:
            run.summary.update(
                {"best/score": top["score"], "best/trial": label(top), "best/rank": top["rank"]}
            )
        sel = found.selected if found else None
        if sel is not None:
            run.summary.update({"best/cell": sel.best, "best/confirmed": sel.confirmed})
            if sel.score is not None:  # on the confirmation records, when there are some
                run.summary.update(
                    {"best/cell_mean": sel.score.mean, "best/cell_ci": list(sel.score.ci)}
                )
            if sel.trial_score is not None:
                run.summary.update(
                    {
                        "best/trial_score": sel.trial_score.mean,
                        "best/trial_ci": list(sel.trial_score.ci),
                    }
                )
        if adapter is not None and top is not None:
            artifact = wandb.Artifact(
                f"{group}-best-adapter",
                type="model",
                metadata={k: top.get(k) for k in ("trial", "subset", "rank", "score", "seed")},
            )
            artifact.add_dir(str(adapter))
            run.log_artifact(artifact)
        return Path(run.dir).parent
