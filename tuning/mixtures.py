"""Mixtures as a dimension of the sweep (`sweep.mixtures`): shares of the tasks (or
capabilities) of its one subset.

Every mixture sweep holds the stratified mixture (shares in proportion to the tasks' training
records, capped by `data.max_per_task`: no earlier mixing method reliably beats it) and the
uniform one (unless `uniform` is false), then the user's own (`given`), then `draws` Dirichlet draws
(`Dirichlet(concentration * K * prior)`, seeded). A mixture is `{"id", "over", "shares"}`;
the stratified one has no shares of its own: its trials train under the size rule at
temperature 1 (`data.weighting: size`), whatever the corpus' sizes. A trial's point carries
its mixture and `apply` sets it into `data.task_weights` (or `data.capability_weights`) with
`data.weighting: shares`, so the Ray Data mixture trains at exactly those shares.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ecomtrain.config import Config, ConfigError, DataConfig
from ecomtrain.data.mixture import STRATIFIED, UNIFORM
from ecomtrain.data.pipeline import train_counts
from ecomtrain.data.scan import corpus_scan
from ecomtrain.report.mixture_law import law_needs
from ecomtrain.tasks import CAPABILITIES, capabilities_of

DECIMALS = 4  # shares are rounded so a mixture reads the same in every log and table


def names(cfg: Config, subset: dict) -> list[str]:
    """What a mixture gives shares of: the subset's tasks, or the capabilities they cover."""
    if cfg.sweep.mixtures.over == "capabilities":
        return [c for c in CAPABILITIES if c in capabilities_of(subset["tasks"])]
    return list(subset["tasks"])


def normalised(shares: dict[str, float], keys: list[str]) -> dict[str, float]:
    """`shares` over `keys` (missing ones 0), summing to 1, rounded."""
    total = sum(shares.get(k, 0.0) for k in keys)
    return {k: round(shares.get(k, 0.0) / total, DECIMALS) for k in keys}


def sizes(cfg: Config, subset: dict) -> dict[str, float]:
    """Each task's (capability's) training records under the size rule's cap, from the
    corpus scan (without Ray; cached on disk): what the stratified mixture is made of."""
    scan = corpus_scan(cfg.data, use_ray=False)
    counts = train_counts(scan, subset["tasks"], cfg.data)
    cap = cfg.data.max_per_task
    per_task = {t: float(min(n, cap) if cap else n) for t, n in counts.items()}
    if cfg.sweep.mixtures.over == "tasks":
        return {t: per_task.get(t, 0.0) for t in subset["tasks"]}
    return {
        c: sum(n for t, n in per_task.items() if capabilities_of([t]) == [c])
        for c in names(cfg, subset)
    }


def draws(cfg: Config, subset: dict) -> list[dict[str, float]]:
    """`sweep.mixtures.draws` Dirichlet draws (seeded) over the subset's tasks (capabilities)."""
    mix = cfg.sweep.mixtures
    keys = names(cfg, subset)
    if not mix.draws:
        return []
    if mix.prior == "size":
        size = sizes(cfg, subset)
        if not sum(size.values()):
            raise ConfigError("sweep.mixtures.prior: size, but the subset has no training records")
        prior = np.array([size[k] for k in keys]) / sum(size.values())
    else:
        prior = np.full(len(keys), 1.0 / len(keys))
    # a share of exactly 0 would make the Dirichlet degenerate: keep every task in reach
    alpha = np.maximum(mix.concentration * len(keys) * prior, 1e-3)
    rng = np.random.default_rng(mix.seed)
    out = []
    for row in rng.dirichlet(alpha, size=mix.draws):
        shares = normalised(dict(zip(keys, row.tolist(), strict=True)), keys)
        if not any(shares.values()):  # all rounded away: the largest takes it all
            shares[keys[int(np.argmax(row))]] = 1.0
        out.append(shares)
    return out


def mixtures(cfg: Config, subset: dict, source: str = "config") -> list[dict]:
    """The sweep's mixtures over `subset`, baselines first: stratified, uniform, the given
    ones, the draws. Unknown names and too few mixtures for the law are config errors."""
    mix = cfg.sweep.mixtures
    keys = names(cfg, subset)
    for mid, shares in mix.given.items():
        for key in shares:
            if key not in keys:
                raise ConfigError(
                    f"{source}: sweep.mixtures.given.{mid}: {key!r} is not one of the "
                    f"{mix.over} of the sweep's subset {subset['id']!r} ({', '.join(keys)})"
                )
        if not any(shares.get(k, 0.0) for k in keys):
            raise ConfigError(f"{source}: sweep.mixtures.given.{mid}: every share is 0")
    out = [{"id": STRATIFIED, "over": mix.over, "shares": {}}]
    if mix.uniform:
        out.append(
            {"id": UNIFORM, "over": mix.over, "shares": normalised(dict.fromkeys(keys, 1.0), keys)}
        )
    out += [
        {"id": mid, "over": mix.over, "shares": normalised(shares, keys)}
        for mid, shares in mix.given.items()
    ]
    out += [
        {"id": f"dirichlet-{i + 1}", "over": mix.over, "shares": shares}
        for i, shares in enumerate(draws(cfg, subset))
    ]
    n = len(out) if cfg.sweep.search != "mixture" else max(len(out), cfg.sweep.num_samples)
    if mix.fit and n < law_needs(len(keys)):
        raise ConfigError(
            f"{source}: sweep.mixtures: {n} mixtures ({_counted(cfg)}) are fewer than the "
            f"mixture law needs for {len(keys)} {mix.over}: at least {law_needs(len(keys))} "
            f"(raise sweep.mixtures.draws{' or num_samples' if cfg.sweep.search == 'mixture' else ''}, "
            "or set sweep.mixtures.fit false to sweep them without the law)"
        )
    return out


def _counted(cfg: Config) -> str:
    given, drawn = len(cfg.sweep.mixtures.given), cfg.sweep.mixtures.draws
    baselines = "stratified and uniform" if cfg.sweep.mixtures.uniform else "stratified"
    parts = [baselines, f"{given} given", f"{drawn} drawn"]
    if cfg.sweep.search == "mixture":
        parts.append(f"sweep.num_samples {cfg.sweep.num_samples}")
    return ", ".join(parts)


def apply(data: DataConfig, mixture: dict, tasks: list[str]) -> DataConfig:
    """`data` training on `mixture` (over `tasks`, the trial's): the stratified one under the
    size rule at temperature 1, any other as shares of every epoch."""
    if not mixture["shares"]:  # stratified: in proportion to size
        return dataclasses.replace(
            data, weighting="size", temperature=1.0, task_weights={}, capability_weights={}
        )
    shares = dict(mixture["shares"])
    if mixture["over"] == "capabilities":  # every capability named: the data's rule
        return dataclasses.replace(
            data,
            weighting="shares",
            task_weights={},
            capability_weights={c: shares.get(c, 0.0) for c in CAPABILITIES},
        )
    return dataclasses.replace(
        data,
        weighting="shares",
        task_weights={t: shares.get(t, 0.0) for t in tasks},
        capability_weights={},
    )


def describe(mixture: dict) -> str:
    """A mixture in one line: `dirichlet-3 (query_ner 0.21, review_rating 0.79)`."""
    shares = mixture["shares"]
    if not shares:
        return f"{mixture['id']} (in proportion to size)"
    return f"{mixture['id']} ({', '.join(f'{k} {v:.{DECIMALS}g}' for k, v in shares.items())})"
