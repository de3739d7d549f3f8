"""A finished sweep's proposed mixtures and the sweeps that confirm them
(`python -m ecomtrain.sweep --confirm DIR`).

`propose` reads the sweep's folder (config.yaml and trials.csv) and fits the mixture law
(ecomtrain/report/mixture_law.py); `write_proposal` writes proposal.json (the proposed shares
per rank with their predicted score and prediction interval, the families' cross-validation,
the best tried mixture); `confirmation_configs` builds, per rank, the second sweep: the
proposed mixture, the best tried one and the stratified one, each with CONFIRM_SEEDS fresh
training seeds, no early stopping. `confirmation_table` compares their trials.

The confirmation sweeps keep the sweep's evaluation settings, so their held-out sample and its
confirmation part (`eval.confirm_fraction`: records split off by a salted hash of their text,
evaluate/held_out.py `part_of`) are the sweep's own: records that never ranked a trial or
shaped the law, scored as `confirm/score` (CONFIRM_METRIC). A sweep with no confirmation part
(`eval.confirm_fraction: 0`) can have a proposal but no confirmation: `confirmable` says so
and `sweep --confirm` trains nothing.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
from scipy import stats

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
CONFIRM_METRIC = "confirm/score"  # the confirmation part's score (evaluate/answer.py)
CONFIRMATION_FILE = "confirmation.json"
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
            "fraction": cfg.eval.confirm_fraction,
            "status": confirmable(cfg) or "to train: sweep --confirm DIR",
        },
    }
    return atomic_write(Path(folder) / PROPOSAL_FILE, json.dumps(doc, indent=1) + "\n")


def confirmable(cfg: Config) -> str | None:
    """Why the sweep's proposal cannot be confirmed, or None when it can."""
    if cfg.eval.confirm_fraction > 0:
        return None
    return (
        "no confirmation: the sweep has eval.confirm_fraction 0, so every held-out record "
        "helped choose the proposal and none is left to confirm it (run the sweep again with "
        "eval.confirm_fraction > 0)"
    )


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
    if law.caution:
        lines.append(f"  CAUTION: {law.caution}")
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


def confirmation_table(rows: list[dict]) -> tuple[str, dict]:
    """The confirmation sweeps' mixtures side by side on the confirmation part (mean and sd
    over seeds), and each mixture's difference from the stratified one of its rank with a
    95 % interval over seeds (`difference`). Rows without CONFIRM_METRIC (a sweep without a
    confirmation part) are compared on their held-out score and said to be no confirmation.
    Returns the text and the figures (their "confirmed" says which)."""
    ok = [r for r in rows if r.get("score") is not None and not r.get("error")]
    confirmed = bool(ok) and all(r.get(CONFIRM_METRIC) is not None for r in ok)
    metric = CONFIRM_METRIC if confirmed else "score"
    lines = []
    if not confirmed:
        lines.append(
            f"NOT A CONFIRMATION: some trials carry no {CONFIRM_METRIC} (the confirmation part "
            "of the held-out records, eval.confirm_fraction); the scores below are on the "
            "held-out records that chose the proposal."
        )
    by: dict[tuple[int, str], dict] = {}
    for i, r in enumerate(ok):  # by seed (a row without one is its own)
        seed = r.get("seed") if r.get("seed") is not None else f"row-{i}"
        by.setdefault((r["rank"], r.get("mixture") or "?"), {})[seed] = float(r[metric])
    arms = []
    for (rank, mixture), seeded in sorted(by.items()):
        values = list(seeded.values())
        arm = {
            "rank": rank,
            "mixture": mixture,
            "seeds": len(values),
            "mean": float(np.mean(values)),
        }
        arm["sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        base = by.get((rank, STRATIFIED))
        if mixture != STRATIFIED and base:
            arm["vs_stratified"] = difference(seeded, base)
        arms.append(arm)
        sd = f" sd {arm['sd']:.4f}" if arm["sd"] is not None else ""
        line = f"  rank {rank}  {mixture:<24} {metric} {arm['mean']:.4f}{sd}  ({len(values)} seeds)"
        if arm.get("vs_stratified"):
            d = arm["vs_stratified"]
            ci = f" [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]" if d["ci"] else " [no interval]"
            line += f"  vs stratified {d['diff']:+.4f}{ci} ({d['test']})"
        lines.append(line)
    return "\n".join(lines), {"metric": metric, "confirmed": confirmed, "arms": arms}


def difference(arm: dict, base: dict) -> dict:
    """mean(arm) - mean(base), each a {seed: score} map, with a 95 % interval over seeds:
    paired by seed when both arms trained the same seeds (the confirmation's arms do, so a
    seed's own luck, shared by the arms, drops out), Student's t on the n - 1 per-seed
    differences; else Welch's. No interval with fewer than two seeds on either side."""
    a, b = np.array(list(arm.values()), float), np.array(list(base.values()), float)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return {"diff": diff, "ci": None, "test": "no interval"}
    if set(arm) == set(base):
        d = np.array([arm[s] - base[s] for s in arm])
        se, df, test = float(d.std(ddof=1) / np.sqrt(len(d))), len(d) - 1, "paired by seed"
    else:
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        se, test = float(np.sqrt(va + vb)), "Welch"
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se else 1
    if se == 0:
        return {"diff": diff, "ci": [diff, diff], "test": test}
    half = float(stats.t.ppf(0.975, df)) * se
    return {"diff": diff, "ci": [diff - half, diff + half], "test": test}


def write_confirmation(folder: str | Path, figures: dict) -> Path:
    """confirmation.json in `folder`: the confirmation sweeps' figures (confirmation_table)."""
    return atomic_write(Path(folder) / CONFIRMATION_FILE, json.dumps(figures, indent=1) + "\n")
