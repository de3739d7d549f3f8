"""The report's mixture section: what the mixture law (ecomtrain/report/mixture_law.py) says
about a sweep of mixtures, as the pages' blocks, two PNG charts and the W&B summary run's
tables and images.

`sweep_law(rows, folder)` fits the law as the sweep's config (`folder`/config.yaml, when
there) asks: over its shares, with its KL weight and seed; None for a sweep without mixtures
or with `sweep.mixtures.fit: false`. `mixture_section(rows, folder, law)` returns the blocks, ("h2", text), ("p", text),
("table", head, rows), ("img", file, caption), and draws the charts into `folder`
(mixture_cv.png: each trial's out-of-fold prediction against its score; mixture_proposal.png:
the proposed shares per rank beside the stratified mixture's) and writes mixture_law.json
there; a sweep without mixtures gets no section. `wandb_logs(law, folder)` gives the same
tables and charts as W&B objects for the summary run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ecomtrain.config import CONFIG_FILE, checked_config, yaml_mapping
from ecomtrain.files import atomic_write, read_text
from ecomtrain.report.mixture_law import LawFit, fit_law

LAW_FILE = "mixture_law.json"
CV_CHART = "mixture_cv.png"
PROPOSAL_CHART = "mixture_proposal.png"


def has_mixtures(rows: list[dict]) -> bool:
    """Whether the trials are a sweep of mixtures (a `mixture` column)."""
    return any(r.get("mixture") for r in rows)


def sweep_law(rows: list[dict], folder: str | Path) -> LawFit | None:
    """The sweep's mixture law (see the module doc), or None."""
    if not has_mixtures(rows):
        return None
    saved = Path(folder) / CONFIG_FILE
    if not saved.is_file():  # a report rebuilt from trials.csv alone: the defaults
        return fit_law(rows)
    mix = checked_config(yaml_mapping(read_text(saved), str(saved)), str(saved)).sweep.mixtures
    return fit_law(rows, over=mix.over, kl=mix.kl, seed=mix.seed) if mix.fit else None


def mixture_section(
    rows: list[dict], folder: str | Path, law: LawFit | None = None, kl: float = 0.0
) -> list[tuple]:
    """The section's blocks (none without mixtures), its charts and mixture_law.json in
    `folder`; `law`: an existing fit of `rows` (else it is fitted, `kl` as in fit_law)."""
    if not has_mixtures(rows):
        return []
    folder = Path(folder)
    law = law or fit_law(rows, kl=kl)
    atomic_write(folder / LAW_FILE, json.dumps(law.to_dict(), indent=1) + "\n")
    out = [("h2", "Which mixture: the mixture law")]
    if not law.families:
        return out + [("p", law.message)]
    out.append(("p", _summary(law)))
    out.append(("table", *cv_table(law)))
    if not law.ok:
        return out + [("p", law.message)]
    if law.caution:
        out.append(("p", f"**Caution**: {law.caution}"))
    plot_cv(law, folder / CV_CHART)
    plot_proposals(law, folder / PROPOSAL_CHART)
    out += [
        (
            "img",
            CV_CHART,
            f"Each trial's score against the {law.chosen} law's prediction with its mixture "
            "left out (cross-validation); one colour per rank, the line is y = x.",
        ),
        ("table", *proposal_table(law)),
        (
            "img",
            PROPOSAL_CHART,
            "The proposed shares at each rank beside the stratified mixture's (the prior).",
        ),
        (
            "p",
            "A proposal is the law's prediction, chosen on these trials' held-out records; "
            "`python -m ecomtrain.sweep --confirm DIR` trains it, the best tried mixture and the "
            "stratified one with fresh seeds and scores them on the confirmation part of the "
            "held-out records (confirm/score), which ranked no trial and shaped no law.",
        ),
    ]
    return out


def _summary(law: LawFit) -> str:
    target = "score" if law.target == "score" else "held-out loss"
    kl = f"; proposals penalised by {law.kl_weight:g} x KL to the stratified mixture" * bool(
        law.kl_weight
    )
    chosen = f"; the {law.chosen} law has the lowest CV RMSE" if law.chosen else ""
    return (
        f"Each task's {target} against the realised shares of {', '.join(law.names)} and the "
        f"rank, fitted on {law.n_trials} trials over {law.n_mixtures} mixtures; families "
        "compared by cross-validation, every trial of a mixture left out together (95 % "
        f"intervals: bootstrap over trials){chosen}{kl}."
    )


def _ci(ci: list[float] | None, fmt: str = ".3f") -> str:
    return f"[{ci[0]:{fmt}}, {ci[1]:{fmt}}]" if ci else "-"


def cv_table(law: LawFit) -> tuple[list, list]:
    head = ["family", "CV Spearman [95 %]", "CV RMSE [95 %]", "note"]
    body = []
    for f in law.families:
        if f.converged:
            note = "chosen" if f.name == law.chosen else ""
            body.append(
                [f.name, f"{f.spearman:.3f} {_ci(f.spearman_ci)}",
                 f"{f.rmse:.4f} {_ci(f.rmse_ci, '.4f')}", note]
            )  # fmt: skip
        else:
            body.append([f.name, "-", "-", f.message])
    return head, body


def proposal_table(law: LawFit) -> tuple[list, list]:
    head = ["rank", "proposed mixture", "predicted [95 % PI]", "best tried", "stratified"]
    body = []
    for p in law.proposals:
        best = p.best_observed
        strat = p.stratified
        strat_text = (
            f"{strat['observed']:.4f} (predicted {strat['predicted']:.4f})" if strat else "-"
        )
        body.append(
            [
                str(p.rank),
                ", ".join(f"{k} {v:.2f}" for k, v in p.shares.items()),
                f"{p.predicted:.4f} {_ci(p.interval, '.4f')}",
                f"{best['mixture']} {best['observed']:.4f} x{best['trials']}",
                strat_text,
            ]
        )
    return head, body


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cv(law: LawFit, path: Path) -> Path:
    """Observed score against the chosen family's out-of-fold prediction, by rank."""
    chosen = next(f for f in law.families if f.name == law.chosen)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    obs = np.array([o["objective"] for o in law.observed])
    pred = np.array(chosen.predicted)
    ranks = np.array([o["rank"] for o in law.observed])
    for rank in sorted(set(ranks.tolist())):
        at = ranks == rank
        ax.scatter(pred[at], obs[at], s=18, label=f"rank {rank}")
    lo, hi = float(min(obs.min(), pred.min())), float(max(obs.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], color="grey", linewidth=0.8)
    ax.set_xlabel(f"predicted, mixture left out ({law.chosen})")
    ax.set_ylabel("observed")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_proposals(law: LawFit, path: Path) -> Path:
    """Stacked bars: the proposed shares at each rank, and the stratified mixture's."""
    plt = _pyplot()
    bars = [(f"rank {p.rank}", [p.shares[n] for n in law.names]) for p in law.proposals]
    bars.append(("stratified", [law.prior[n] for n in law.names]))
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(bars), 3.8))
    bottom = np.zeros(len(bars))
    for j, name in enumerate(law.names):
        heights = np.array([shares[j] for _, shares in bars])
        ax.bar([b for b, _ in bars], heights, bottom=bottom, label=name)
        bottom += heights
    ax.set_ylabel("share of an epoch")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def wandb_logs(law: LawFit, folder: str | Path) -> dict:
    """The section for the W&B summary run: the CV and proposal tables, the charts (when
    drawn into `folder`) and the proposals as flat summary numbers."""
    import wandb

    head, body = cv_table(law)
    logs = {"mixture/cv": wandb.Table(columns=head, data=body)}
    if law.ok:
        head, body = proposal_table(law)
        logs["mixture/proposals"] = wandb.Table(columns=head, data=body)
    for name in (CV_CHART, PROPOSAL_CHART):
        if (Path(folder) / name).is_file():
            logs[f"charts/{Path(name).stem}"] = wandb.Image(str(Path(folder) / name))
    for p in law.proposals:
        logs[f"mixture/r{p.rank}/predicted"] = p.predicted
        logs |= {f"mixture/r{p.rank}/{k}": v for k, v in p.shares.items()}
    return logs
