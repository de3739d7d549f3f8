"""One W&B run that sums up a sweep, beside its per-trial runs in the same group.

It logs every trial as a `wandb.Table` (failed ones included), the report's charts as images,
a native W&B line chart of score against capabilities trained on, one line per LoRA rank,
so trials can be compared in the W&B UI without opening report.html, and the best trial's
adapter as a model artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ecomtrain.report.analysis import best, diversity_lines, label
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


def score_lines(rows: list[dict]) -> wandb.plot.CustomChart:
    """Native line chart: mean score by capabilities trained on, one line per rank."""
    import wandb

    lines = diversity_lines(rows)
    return wandb.plot.line_series(
        xs=[xs for xs, _ in lines.values()],
        ys=[ys for _, ys in lines.values()],
        keys=[f"rank {rank}" for rank in lines],
        title="Score by capabilities trained on",
        xname="capabilities",
    )


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
        if diversity_lines(rows):
            logged["score_by_capabilities"] = score_lines(rows)
        run.log(logged)
        if top is not None:
            run.summary.update(
                {"best/score": top["score"], "best/trial": label(top), "best/rank": top["rank"]}
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
