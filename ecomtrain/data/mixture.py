"""The task mixture of a trial: how many records of each task one epoch holds.

    size(t)   = min(n_t, data.max_per_task)            (n_t: the task's training records)
    p(t)      ∝ capability_weight * task_weight * size(t) ** (1 / data.temperature)
    target(t) = p(t) * sum(size)                       records of t per epoch

A task's capability comes from the corpus scan (`capability`: task -> capability), so a
task of the user's own weighs by the capability its records declare (or "unknown").

Each record is then kept floor(m) or floor(m) + 1 times in an epoch, m = target(t) / n_t.
The extra copy is decided by a rotation: the records of a task get fixed positions u in
[0, 1), evenly spaced in an order set by a hash of the seed and their locations; each epoch
every position moves by frac(m), and a record gets its copy when its position falls below
frac(m). So every epoch holds the task's target share (to one record), every epoch keeps a
different part of a downsampled task, and within ceil(1 / frac(m)) epochs every record has
been kept at least once: no record is left out for good, whatever the seed.
`Dataset.mix` was not used: it interleaves whole blocks, each input would re-run the read
and parse of every file (families are known only after parsing), and its stopping rules
either ignore the weights for content or truncate large tasks to the same head each epoch.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from ecomtrain.config import DataConfig
from ecomtrain.tasks import CAPABILITIES, FAMILIES, UNKNOWN


def check_weights(cfg: DataConfig, capability: dict[str, str] | None = None) -> None:
    """Reject unknown names and impossible values in the mixture settings (`capability`:
    the corpus' tasks of the user's own and their capabilities)."""
    capability = capability or {}
    for name, w in cfg.capability_weights.items():
        if name not in CAPABILITIES:
            raise ValueError(f"data.capability_weights: unknown capability {name!r}")
        if w < 0:
            raise ValueError(f"data.capability_weights.{name}: weight {w} is negative")
    for name, w in cfg.task_weights.items():
        if name not in FAMILIES and name not in capability:
            raise ValueError(f"data.task_weights: unknown task family {name!r}")
        if w < 0:
            raise ValueError(f"data.task_weights.{name}: weight {w} is negative")
    if cfg.temperature <= 0:
        raise ValueError(f"data.temperature: must be > 0, got {cfg.temperature}")
    if cfg.max_per_task < 0:
        raise ValueError(f"data.max_per_task: must be >= 0, got {cfg.max_per_task}")


def targets(
    counts: dict[str, int], cfg: DataConfig, capability: dict[str, str] | None = None
) -> dict[str, float]:
    """Records of each task per epoch (expected), from its training-record count
    (`capability`: as in `check_weights`; built-in families need no entry)."""
    capability = capability or {}
    check_weights(cfg, capability)
    sizes = {t: min(n, cfg.max_per_task) if cfg.max_per_task else n for t, n in counts.items()}
    weight = {
        t: cfg.capability_weights.get(capability_of(t, capability), 1.0)
        * cfg.task_weights.get(t, 1.0)
        * (s ** (1.0 / cfg.temperature) if s else 0.0)
        for t, s in sizes.items()
    }
    total = sum(weight.values())
    if total <= 0:
        raise ValueError("data: the mixture is empty (no training records, or all weights 0)")
    epoch = sum(sizes.values())
    return {t: epoch * w / total for t, w in weight.items()}


def capability_of(task: str, capability: dict[str, str]) -> str:
    """A task's capability: the corpus' record of it, else the built-in family's."""
    if task in capability:
        return capability[task]
    return FAMILIES[task].capability if task in FAMILIES else UNKNOWN


def multiplicities(
    counts: dict[str, int], cfg: DataConfig, capability: dict[str, str] | None = None
) -> dict[str, float]:
    """Expected copies of each training record of a task per epoch."""
    planned = targets(counts, cfg, capability)
    return {t: target / counts[t] for t, target in planned.items() if counts[t]}


def positions(sources: list[str], seed: int) -> np.ndarray:
    """Fixed positions in [0, 1) of a task's records: evenly spaced, in hash order."""
    keys = [hashlib.blake2b(f"{seed}:{src}".encode(), digest_size=8).digest() for src in sources]
    u = np.empty(len(sources))
    u[sorted(range(len(keys)), key=keys.__getitem__)] = (np.arange(len(keys)) + 0.5) / len(keys)
    return u


def copies(position: float, multiplicity: float, epoch: int) -> int:
    """How many times a record at `position` appears in `epoch`."""
    whole, frac = divmod(multiplicity, 1.0)
    return int(whole) + ((position + epoch * frac) % 1.0 < frac)


def stats(
    counts: dict[str, int], cfg: DataConfig, capability: dict[str, str] | None = None
) -> dict:
    """Diversity of a mixture (flat, JSON-able): tasks and capabilities covered, the entropy
    of its task distribution (nats; and normalised to [0, 1] by log of the task count),
    and the expected records per task per epoch."""
    capability = capability or {}
    planned = {t: v for t, v in targets(counts, cfg, capability).items() if v > 0}
    total = sum(planned.values())
    probs = [v / total for v in planned.values()]
    entropy = -sum(p * math.log(p) for p in probs if p > 0)
    covered = {capability_of(t, capability) for t in planned}
    caps = [c for c in CAPABILITIES if c in covered]
    out = {
        "n_tasks": len(planned),
        "n_capabilities": len(caps),
        "capability_coverage": len(caps) / len(CAPABILITIES),
        "task_entropy": entropy,
        "task_entropy_norm": entropy / math.log(len(planned)) if len(planned) > 1 else 0.0,
        "records": round(total),
    }
    for cap in CAPABILITIES:
        share = sum(v for t, v in planned.items() if capability_of(t, capability) == cap) / total
        out[f"capability_share/{cap}"] = share
    out |= {f"records/{t}": round(v) for t, v in planned.items()}
    return out
