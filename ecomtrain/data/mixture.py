"""The task mixture of a trial: how many records of each task one epoch holds.

    size(t)   = min(n_t, data.max_per_task)            (n_t: the task's training records)
    w(t)      = capability_weight * task_weight * size(t) ** (1 / data.temperature)
    E         = sum of size(t) over the e-commerce tasks    (records per epoch)
    target(t) = (1 - f) * E * w(t) / sum(w)  for an e-commerce task,
                f * E * w(t) / sum(w)        for an out-of-domain task (capability "ood"),
    each sum over the tasks of the same kind, f = data.ood_fraction

So an epoch holds E records whatever f is, of which a share f is out of domain: at a fixed
step budget, out-of-domain records take the place of e-commerce ones.
With `data.weighting: shares` the weights of the e-commerce tasks are their shares
themselves, size aside (`share_weights`): a mixture given as shares of an epoch (a swept one,
a proposed one) trains at exactly those shares whatever the tasks' sizes.
A task's capability comes from the corpus scan (`capability`: task -> capability), so a
task of the user's own weighs by the capability its records declare (or "unknown").

Each record is then kept floor(m) or floor(m) + 1 times in an epoch, m = target(t) / n_t.
The extra copy is decided by a rotation: the records of a task get fixed positions u in
[0, 1), evenly spaced in an order set by a hash of the seed and their locations; each epoch
every position moves by frac(m), and a record gets its copy when its position falls below
frac(m). So every epoch holds the task's target share (to one record), every epoch keeps a
different part of a downsampled task, and within ceil(1 / frac(m)) epochs every record has
been kept at least once: no record is left out for good, whatever the seed. With
`data.downsample: fixed` every epoch keeps epoch 0's records instead: a downsampled task
then trains on exactly its target's worth of unique records (an equal budget per task).
`Dataset.mix` was not used: it interleaves whole blocks, each input would re-run the read
and parse of every file (families are known only after parsing), and its stopping rules
either ignore the weights for content or truncate large tasks to the same head each epoch.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from ecomtrain.config import DataConfig
from ecomtrain.tasks import CAPABILITIES, FAMILIES, OOD, UNKNOWN

# The two mixtures every comparison of mixtures holds (tuning/mixtures.py): shares in
# proportion to the tasks' sizes (no earlier mixing method reliably beats it) and equal ones.
STRATIFIED, UNIFORM = "stratified", "uniform"


def check_weights(cfg: DataConfig, capability: dict[str, str] | None = None) -> None:
    """Reject unknown names in the mixture settings (`capability`: the corpus' tasks of the
    user's own and their capabilities); their ranges are the config's own rules."""
    capability = capability or {}
    for name in cfg.capability_weights:
        if name not in CAPABILITIES:
            raise ValueError(f"data.capability_weights: unknown capability {name!r}")
    for name in cfg.task_weights:
        if name not in FAMILIES and name not in capability:
            raise ValueError(f"data.task_weights: unknown task family {name!r}")


def targets(
    counts: dict[str, int], cfg: DataConfig, capability: dict[str, str] | None = None
) -> dict[str, float]:
    """Records of each task per epoch (expected), from its training-record count
    (`capability`: as in `check_weights`; built-in families need no entry)."""
    capability = capability or {}
    check_weights(cfg, capability)
    sizes = {t: min(n, cfg.max_per_task) if cfg.max_per_task else n for t, n in counts.items()}
    scaled = {t: s ** (1.0 / cfg.temperature) if s else 0.0 for t, s in sizes.items()}
    weight = {
        t: cfg.capability_weights.get(capability_of(t, capability), 1.0)
        * cfg.task_weights.get(t, 1.0)
        * s
        for t, s in scaled.items()
    }
    ood = {t for t in sizes if capability_of(t, capability) == OOD}
    if cfg.weighting == "shares":
        weight |= share_weights({t: s for t, s in scaled.items() if t not in ood}, cfg, capability)
    epoch = sum(s for t, s in sizes.items() if t not in ood)
    parts = {
        "e-commerce": (set(sizes) - ood, 1.0 - cfg.ood_fraction, "the mixture is empty, or "
                       "all its weights are 0"),
        "out-of-domain": (ood, cfg.ood_fraction, "add the built-in corpus, data.corpus: "
                          "[..., ood], or label files, data.file_capabilities {<file>: ood}"),
    }  # fmt: skip
    out = {}
    for kind, (part, share, hint) in parts.items():
        total = sum(weight[t] for t in part)
        if share > 0 and total <= 0:
            raise ValueError(
                f"data: no {kind} training records to draw {share:.0%} of the epoch from ({hint})"
            )
        out |= {t: epoch * share * weight[t] / total if share > 0 else 0.0 for t in part}
    return {t: out[t] for t in sizes}


def share_weights(
    scaled: dict[str, float], cfg: DataConfig, capability: dict[str, str]
) -> dict[str, float]:
    """The e-commerce tasks' weights under `data.weighting: shares` (`scaled`: each task's
    size ** (1 / temperature)): task weights are the tasks' shares, capability weights the
    capabilities' shares, split among their tasks by task weight, else by scaled size. A
    task (capability) trained but not named is an error: its share would be a guess."""
    tasks = cfg.task_weights
    missing = [t for t in scaled if t not in tasks] if tasks else []
    if missing:
        raise ValueError(
            f"data.task_weights: data.weighting is shares, so every task trained needs its "
            f"share; none for {', '.join(missing)}"
        )
    inner = {t: (tasks[t] if tasks else s) if s else 0.0 for t, s in scaled.items()}
    if not cfg.capability_weights:
        return inner
    caps = {t: capability_of(t, capability) for t in scaled}
    missing = sorted({c for t, c in caps.items() if scaled[t] and c not in cfg.capability_weights})
    if missing:
        raise ValueError(
            f"data.capability_weights: data.weighting is shares, so every capability trained "
            f"needs its share; none for {', '.join(missing)}"
        )
    total = {c: sum(inner[t] for t in scaled if caps[t] == c) for c in set(caps.values())}
    return {
        t: cfg.capability_weights[caps[t]] * w / total[caps[t]] if w else 0.0
        for t, w in inner.items()
    }


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


def source_keys(sources) -> np.ndarray:
    """A record's fixed key (uint64) from its location (file:line), for `positions`."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")
         for s in sources),
        dtype=np.uint64,
        count=len(sources),
    )  # fmt: skip


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that scrambles every bit."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def positions(keys: np.ndarray, seed: int) -> np.ndarray:
    """Fixed positions in [0, 1) of a task's records (`keys`: their source_keys): evenly
    spaced, in an order set by a hash of the seed and the keys."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        salt = _mix(np.array([seed], dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15))
        order = np.argsort(_mix(np.asarray(keys, dtype=np.uint64) ^ salt), kind="stable")
    u = np.empty(len(order))
    u[order] = (np.arange(len(order)) + 0.5) / max(len(order), 1)
    return u


def copies(position, multiplicity: float, epoch: int):
    """How many times a record at `position` (a float, or an array of them) appears in
    `epoch`."""
    whole, frac = divmod(multiplicity, 1.0)
    return int(whole) + ((position + epoch * frac) % 1.0 < frac)


def stats(
    counts: dict[str, int], cfg: DataConfig, capability: dict[str, str] | None = None
) -> dict:
    """Diversity of a mixture (flat, JSON-able): e-commerce tasks and capabilities covered,
    the entropy of their task distribution (nats; and normalised to [0, 1] by log of the
    task count), the out-of-domain share, the expected records per task per epoch, and each
    e-commerce task's share of them (`share/<task>`, 0 for a task left out)."""
    capability = capability or {}
    planned_all = targets(counts, cfg, capability)
    every = {t: v for t, v in planned_all.items() if v > 0}
    planned = {t: v for t, v in every.items() if capability_of(t, capability) != OOD}
    total = sum(planned.values())
    probs = [v / total for v in planned.values()]
    # rounded: mixtures equal but for their out-of-domain share must have equal diversity
    # in the report's model, not values a last bit apart
    entropy = round(-sum(p * math.log(p) for p in probs if p > 0), 10)
    covered = {capability_of(t, capability) for t in planned}
    caps = [c for c in CAPABILITIES if c in covered]
    out = {
        "n_tasks": len(planned),
        "n_capabilities": len(caps),
        "capability_coverage": len(caps) / len(CAPABILITIES),
        "task_entropy": entropy,
        "task_entropy_norm": entropy / math.log(len(planned)) if len(planned) > 1 else 0.0,
        "records": round(sum(every.values())),
        "ood_share": 1 - total / sum(every.values()),
    }
    for cap in CAPABILITIES:
        share = sum(v for t, v in planned.items() if capability_of(t, capability) == cap) / total
        out[f"capability_share/{cap}"] = share
    out |= {f"records/{t}": round(v) for t, v in every.items()}
    out |= {
        f"share/{t}": v / total
        for t, v in planned_all.items()
        if capability_of(t, capability) != OOD
    }
    return out
