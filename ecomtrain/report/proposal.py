"""A finished sweep's proposed mixtures and the sweeps that confirm them
(`python -m ecomtrain.sweep --confirm DIR`).

`propose` reads the sweep's folder (config.yaml and trials.csv) and fits the mixture law
(ecomtrain/report/mixture_law.py); `write_proposal` writes proposal.json (the proposed shares
per rank with their predicted score and prediction interval, the families' cross-validation,
the best tried mixture); `confirmation_configs` builds, per rank, the second sweep: the
proposed mixture, the best tried one and the stratified one, each with CONFIRM_SEEDS fresh
training seeds, no early stopping. `confirmation_table` compares their trials.

What a confirmation needs and this version does not have yet: the confirmation sample, part
of each task's held-out records split off by a stable hash and never used to rank or select,
scored as `confirm/score`. Until the evaluation reports it, the confirmation sweeps score on
the held-out records that chose the proposal, and `confirmation_table` says so instead of
calling anything confirmed (CONFIRM_METRIC is the one name to wire).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from ecomtrain.config import (
    CONFIG_FILE,
    Config,
    MixturesConfig,
    checked_config,
    to_dict,
    yaml_mapping,
)
from ecomtrain.data.mixture import STRATIFIED
from ecomtrain.files import atomic_write, read_text
from ecomtrain.report.mixture_law import LawFit, fit_law
from ecomtrain.report.trials import load_trials

PROPOSAL_FILE = "proposal.json"
CONFIRM_SEEDS = 3  # training seeds per confirmed mixture, fresh ones
CONFIRM_METRIC = "confirm/score"  # the confirmation sample's score, once evaluations report it
PROPOSED = "proposed"


def propose(folder: str | Path) -> tuple[Config, LawFit]:
    """A finished sweep's config and its mixture law (`sweep.mixtures.kl` towards the
    stratified mixture)."""
    saved = f"{folder}/{CONFIG_FILE}"
    cfg = checked_config(yaml_mapping(read_text(saved), saved), saved)
    rows = load_trials(Path(folder) / "trials.csv")
    mix = cfg.sweep.mixtures
    return cfg, fit_law(rows, over=mix.over, kl=mix.kl, seed=mix.seed)


def write_proposal(folder: str | Path, cfg: Config, law: LawFit) -> Path:
    """proposal.json in `folder`: the law's fit, its proposals and how to confirm them."""
    doc = {
        "sweep": cfg.sweep.name,
        "metric": cfg.sweep.metric,
        **law.to_dict(),
        "confirmation": {
            "metric": CONFIRM_METRIC,
            "seeds": CONFIRM_SEEDS,
            "status": "not scored: the confirmation sample is not in this version",
        },
    }
    return atomic_write(Path(folder) / PROPOSAL_FILE, json.dumps(doc, indent=1) + "\n")


def proposal_text(law: LawFit) -> str:
    """The law's fit and proposals in a few lines for the console."""
    if not law.ok:
        return f"mixture law: {law.message}"
    lines = [
        f"mixture law: {law.n_trials} trials over {law.n_mixtures} mixtures of "
        f"{len(law.names)} shares; family {law.chosen}, chosen by cross-validation"
    ]
    for f in law.families:
        if f.converged:
            lines.append(
                f"  {f.name:<7} CV Spearman {f.spearman:.3f} {_ci(f.spearman_ci)}  "
                f"RMSE {f.rmse:.4f} {_ci(f.rmse_ci)}"
            )
        else:
            lines.append(f"  {f.name:<7} {f.message}")
    for p in law.proposals:
        shares = ", ".join(f"{k} {v:.3f}" for k, v in p.shares.items())
        lines.append(
            f"  rank {p.rank}: proposed {shares}: predicted {p.predicted:.4f} "
            f"[{p.interval[0]:.4f}, {p.interval[1]:.4f}]; best tried "
            f"{p.best_observed['mixture']} {p.best_observed['observed']:.4f}"
        )
    return "\n".join(lines)


def _ci(ci: list[float] | None) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "[-]"


def confirmation_configs(cfg: Config, law: LawFit, folder: str | Path) -> dict[int, Config]:
    """Per rank, the sweep that confirms the law's proposal: the proposed mixture, the best
    tried one (unless it is the stratified one) and the stratified one, each with
    CONFIRM_SEEDS training seeds none of the sweep's trials used, every trial run out; its
    output `folder`/confirm-r<rank>."""
    used = set(cfg.sweep.seeds or [cfg.train.seed])
    seeds = [s for s in range(max(used) + 1 + CONFIRM_SEEDS + len(used)) if s not in used]
    out = {}
    for p in law.proposals:
        given = {PROPOSED: p.shares}
        top = p.best_observed["mixture"]
        if top != STRATIFIED:
            given[f"best-{top}"] = p.best_observed["shares"]
        c = copy.deepcopy(cfg)
        c.sweep.name = f"{cfg.sweep.name}-confirm-r{p.rank}"
        c.sweep.ranks, c.sweep.seeds = [p.rank], seeds[:CONFIRM_SEEDS]
        c.sweep.search, c.sweep.scheduler, c.sweep.num_samples = "grid", "fifo", 1
        c.sweep.params = {}
        c.sweep.mixtures = MixturesConfig(
            draws=0, over=cfg.sweep.mixtures.over, given=given, uniform=False, fit=False
        )
        c.sweep.output = f"{folder}/confirm-r{p.rank}"
        out[p.rank] = checked_config(to_dict(c), f"{folder}/{PROPOSAL_FILE}")
    return out


def confirmation_table(rows: list[dict]) -> tuple[str, bool]:
    """The confirmation sweep's mixtures side by side (mean over seeds), on the
    confirmation sample when the trials carry it; else on the held-out score, said to be no
    confirmation. Returns the text and whether it is a confirmation."""
    ok = [r for r in rows if r.get("score") is not None and not r.get("error")]
    confirmed = bool(ok) and all(r.get(CONFIRM_METRIC) is not None for r in ok)
    metric = CONFIRM_METRIC if confirmed else "score"
    lines = []
    if not confirmed:
        lines.append(
            "NOT A CONFIRMATION: the confirmation sample (held-out records split off by a stable "
            f"hash, never used to select, scored as {CONFIRM_METRIC}) is not in this version; "
            "the scores below are on the held-out records that chose the proposal."
        )
    by: dict[tuple[int, str], list[float]] = {}
    for r in ok:
        by.setdefault((r["rank"], r.get("mixture") or "?"), []).append(float(r[metric]))
    for (rank, mixture), values in sorted(by.items()):
        sd = f" sd {np.std(values, ddof=1):.4f}" if len(values) > 1 else ""
        lines.append(
            f"  rank {rank}  {mixture:<24} {metric} {np.mean(values):.4f}{sd}  ({len(values)} seeds)"
        )
    return "\n".join(lines), confirmed
