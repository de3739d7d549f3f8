"""The joint search space: task subsets x mixtures x LoRA rank (x any config key).

Subsets come from four generators that can be combined: explicit lists, the capability
ladder, leave-one-family-out within capabilities, and random subsets with a coverage
constraint. Every subset is described by what the report and W&B compare trials on. A sweep
of mixtures (tuning/mixtures.py) weighs the tasks of its one subset.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import random

from ray import tune

from ecomtrain.config import Config, ConfigError, SweepConfig, with_values
from ecomtrain.tasks import CAPABILITIES, FAMILIES, capabilities_of, expand
from tuning import mixtures


def universe(cfg: Config) -> list[str]:
    """The full task set subsets are drawn from: data.tasks, else every built-in family and
    the tasks of the user's own that a subset names."""
    if cfg.data.tasks:
        return expand(cfg.data.tasks)
    named = [n for names in cfg.sweep.subsets.values() for n in names]
    own = [n for n in named if n not in FAMILIES and n not in CAPABILITIES]
    return list(FAMILIES) + list(dict.fromkeys(own))


def ladder(order: list[str]) -> dict[str, list[str]]:
    """ladder-1 = first capability, ladder-2 = first two, ... (the paper's diversity axis)."""
    return {f"ladder-{k}": order[:k] for k in range(1, len(order) + 1)}


def leave_one_out(capabilities: list[str], full: list[str]) -> dict[str, list[str]]:
    """For each family of the named capabilities, the full set without that family."""
    out = {}
    for family in expand(capabilities):
        if family in full:
            out[f"without-{family}"] = [f for f in full if f != family]
    return out


def random_subsets(sweep: SweepConfig, full: list[str]) -> dict[str, list[str]]:
    """`sweep.random_subsets` distinct subsets, each with >= min families per capability."""
    rng = random.Random(sweep.seed)
    by_cap = {
        c: [f for f in full if f in FAMILIES and FAMILIES[f].capability == c] for c in CAPABILITIES
    }
    by_cap = {c: fs for c, fs in by_cap.items() if fs}
    need = sweep.random_min_per_capability
    out: dict[str, list[str]] = {}
    for _ in range(sweep.random_subsets * 50):
        if len(out) == sweep.random_subsets:
            break
        pick = [
            f
            for fs in by_cap.values()
            for f in rng.sample(fs, rng.randint(min(need, len(fs)), len(fs)))
        ]
        if sweep.random_max_tasks and len(pick) > sweep.random_max_tasks:
            continue
        key = sorted(pick)
        if key not in out.values():
            out[f"random-{len(out) + 1}"] = key
    return out


def describe(subset_id: str, names: list[str], full: list[str]) -> dict:
    """A subset as Tune sees it: id, families (those of `full`, the sweep's task set), and
    its coverage of the capabilities."""
    families = [f for f in expand(names) if f in full]
    if not families:
        raise ValueError(
            f"subset {subset_id!r}: none of {names} is in the sweep's task set (data.tasks)"
        )
    caps = capabilities_of(families)
    point = {
        "id": subset_id,
        "tasks": families,
        "n_tasks": len(families),
        "capabilities": caps,
        "n_capabilities": len(caps),
        "coverage": len(caps) / len(CAPABILITIES),
    }
    if subset_id.startswith("ladder-"):
        point["ladder_step"] = int(subset_id.split("-")[1])
    return point


def subsets(cfg: Config) -> list[dict]:
    """Every subset of the sweep, from all configured generators, ids unique."""
    full = universe(cfg)
    named = dict(cfg.sweep.subsets)
    named |= ladder(cfg.sweep.ladder)
    named |= leave_one_out(cfg.sweep.leave_one_out, full)
    named |= random_subsets(cfg.sweep, full)
    if not named:
        raise ValueError("the sweep has no task subsets: set sweep.subsets, ladder, ...")
    return [describe(i, names, full) for i, names in named.items()]


def mixture_subset(cfg: Config, source: str = "config") -> dict:
    """The one subset a sweep of mixtures weighs the tasks of."""
    points = subsets(cfg)
    if len(points) != 1:
        raise ConfigError(
            f"{source}: sweep.mixtures: a sweep of mixtures weighs the tasks of one subset, "
            f"this one has {len(points)} ({', '.join(p['id'] for p in points)}): keep one "
            "(sweep.subsets, and no ladder, leave_one_out or random_subsets)"
        )
    return points[0]


def sweep_mixtures(cfg: Config, source: str = "config") -> list[dict]:
    """The mixtures of a sweep of mixtures (tuning.mixtures), over its one subset."""
    return mixtures.mixtures(cfg, mixture_subset(cfg, source), source)


def alpha_for(sweep: SweepConfig, rank: int, fixed: float) -> float:
    """lora.alpha of a trial under the sweep's alpha rule."""
    return sweep.alpha_per_rank * rank if sweep.alpha_rule == "scale" else fixed


def dimensions(cfg: Config) -> dict[str, list]:
    """The sweep's dimensions and their values, in launch order: subset, mixture (a sweep
    of mixtures), rank, each `sweep.params` key, and seed (replicates) when `sweep.seeds` is
    set."""
    points, ranks = subsets(cfg), list(cfg.sweep.ranks)
    mixes = sweep_mixtures(cfg) if cfg.sweep.mixtures.active else []
    if cfg.sweep.launch_seed >= 0:  # another launch order of the same grid
        rng = random.Random(cfg.sweep.launch_seed)
        rng.shuffle(points)
        rng.shuffle(ranks)
        rng.shuffle(mixes)
    dims = {"subset": points, "mixture": mixes} if mixes else {"subset": points}
    dims["rank"] = ranks
    dims |= {key: list(values) for key, values in cfg.sweep.params.items()}
    if cfg.sweep.seeds:
        dims["seed"] = list(cfg.sweep.seeds)
    return dims


def grid_points(cfg: Config) -> list[dict]:
    """Every point of the grid, as Tune launches them (first dimensions vary slowest)."""
    dims = dimensions(cfg)
    points = [dict(zip(dims, values, strict=True)) for values in itertools.product(*dims.values())]
    for point in points:
        point["alpha"] = alpha_for(cfg.sweep, point["rank"], cfg.lora.alpha)
    return points


def param_space(cfg: Config) -> dict:
    """Tune's param_space: grid or random choice over subsets, ranks and `sweep.params`
    (empty under Optuna and the mixture search, whose searchers hold the space: see
    `optuna_search`, tuning.mixture_search)."""
    if cfg.sweep.search in ("optuna", "mixture"):
        return {}
    dim = tune.grid_search if cfg.sweep.search == "grid" else tune.choice
    space = {
        key: tune.grid_search(values) if key == "seed" else dim(values)  # replicates: all seeds
        for key, values in dimensions(cfg).items()
    }
    sweep, fixed = cfg.sweep, cfg.lora.alpha
    space["alpha"] = tune.sample_from(lambda config: alpha_for(sweep, config["rank"], fixed))
    return space


def trial_config(base: Config, point: dict) -> Config:
    """The run config of one point: its tasks, mixture, rank, alpha and any dotted-path
    values."""
    cfg = with_values(base, {k: v for k, v in point.items() if "." in k}, "sweep.params")
    cfg.data.tasks = list(point["subset"]["tasks"])
    if "mixture" in point:
        cfg.data = mixtures.apply(cfg.data, point["mixture"], cfg.data.tasks)
    cfg.lora.rank = int(point["rank"])
    cfg.lora.alpha = float(point.get("alpha", alpha_for(cfg.sweep, cfg.lora.rank, cfg.lora.alpha)))
    cfg.lora.use_rslora = cfg.lora.use_rslora or cfg.sweep.alpha_rule == "rslora"
    if "seed" in point:  # LoRA initialisation and data order follow the replicate's seed
        cfg.train.seed = cfg.data.seed = int(point["seed"])
    return cfg


def optuna_search(cfg: Config):
    """Optuna's TPE over subset id x rank x `sweep.params`, as one joint categorical space.

    A trial's config has the same shape as under grid or random search: the chosen
    subset's full description and the alpha of its rank are added as constants."""
    if importlib.util.find_spec("optuna") is None:
        raise ImportError("sweep.search=optuna needs optuna: pip install optuna")
    from ray.tune.search.optuna import OptunaSearch

    table = {s["id"]: s for s in subsets(cfg)}
    space = functools.partial(optuna_point, table=table, sweep=cfg.sweep, fixed=cfg.lora.alpha)
    return OptunaSearch(space=space, metric=cfg.sweep.metric, mode="max", seed=cfg.sweep.seed)


def optuna_point(trial, table: dict, sweep: SweepConfig, fixed: float) -> dict:
    """Optuna's define-by-run space (module level: Tune pickles it with the searcher)."""
    subset = trial.suggest_categorical("subset_id", list(table))
    rank = trial.suggest_categorical("rank", list(sweep.ranks))
    for key, values in sweep.params.items():
        trial.suggest_categorical(key, list(values))
    return {"subset": table[subset], "alpha": alpha_for(sweep, rank, fixed)}
