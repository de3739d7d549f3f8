"""`asha` runs the full grid once, then ASHA under several launch orders (`sweep.launch_seed`
0, 1, 2), one trial at a time, and prints for each order the trial-steps ASHA spent until
it had trained the grid's best point (subset, rank; with seeds, every seed of it) to the
end, as a share of the grid's; the robust figures are the mean and the worst share over
the orders (a miss counts as 1). It also replays Tune's ASHA over the grid's recorded
evaluations in REPLAY_ORDERS random launch orders (and checks the replay against each real
order). Its space, unless overridden (ASHA_GRID, on configs/world.yaml): the shopping
world's capability ladder x ranks 2, 8, 32, one seed, 600 steps, evaluated every 60; ASHA
(ASHA_RULE) decides on the score with rungs from step 60, keeping the top third. With
`--grid DIR` it trains nothing: it replays ASHA (ASHA_RULE, then the overrides) over a
finished full-grid sweep's output folder (its config.yaml and Tune results; the grid must
have been evaluated before its last step, `train.eval_every`).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from types import SimpleNamespace

import numpy as np
from ray.tune import ExperimentAnalysis, ResultGrid
from ray.tune.schedulers import TrialScheduler

from ecomtrain import console
from ecomtrain.config import CONFIG_FILE, Config, ConfigError, config_yaml, load_config
from ecomtrain.connect import connect
from ecomtrain.evaluate.held_out import held_out_rows
from ecomtrain.files import atomic_write
from tuning.run import run_sweep, scheduler, stop_metric, trial_key

ASHA_GRID = [  # on configs/world.yaml: its ladder x ranks 2, 8, 32, one seed (12 trials)
    "sweep.seeds=[0]",
    "train.eval_every=60",
]
ASHA_RULE = [  # what ASHA decides on and when (docs/benchmarks.md: measured on the grid above)
    "sweep.scheduler=asha",
    "sweep.stop_metric=metric",
    "sweep.grace_period=60",
    "sweep.reduction_factor=3",
]
ASHA_ORDERS = 3  # launch orders (sweep.launch_seed 0, 1, 2) ASHA is run under
REPLAY_ORDERS = 200  # random launch orders ASHA is replayed in over the grid's evaluations


def trial_steps(results, metric: str = "score") -> list[tuple[str, int, float]]:
    """(trial key, steps trained, final score) per trial, in launch order."""
    rows = []
    for r in results:
        m = r.metrics or {}
        index = int(r.path.rsplit("_", 1)[-1])  # Tune numbers trials in launch order
        key = trial_key(r.config)[1]
        rows.append((index, key, int(m.get("step", 0)), float(m.get(metric, float("nan")))))
    return [row[1:] for row in sorted(rows)]


def grid_best(results, metric: str) -> tuple[str, list[str]]:
    """The grid's best point (the highest final `metric`, averaged over its seeds) and the
    keys of its trials."""
    cells: dict[str, list[tuple[str, float]]] = {}
    for r in results:
        cell, key = trial_key(r.config)
        cells.setdefault(cell, []).append((key, float((r.metrics or {}).get(metric, "nan"))))
    best = max(sorted(cells), key=lambda c: np.mean([v for _, v in cells[c]]))
    return best, [key for key, _ in cells[best]]


def evaluations(results, metric: str) -> dict[str, dict[int, float]]:
    """Per trial key: its stop metric at each evaluation step it reported."""
    out = {}
    for r in results:
        df = r.metrics_dataframe
        df = df[df[metric].notna()] if metric in df else df.iloc[:0]
        out[trial_key(r.config)[1]] = dict(
            zip(df["step"].astype(int), df[metric].astype(float), strict=True)
        )
    return out


def replay_asha(cfg: Config, history: dict[str, dict[int, float]], order: list[str]) -> list:
    """(key, steps trained) per trial: Tune's own ASHA scheduler, as the sweep builds it,
    fed the grid's recorded evaluations one trial at a time in `order`: the steps each trial
    would have trained under ASHA in that launch order (a trial's evaluations do not depend
    on the others, so this is the sweep's outcome without training anything again)."""
    asha, (metric, _) = scheduler(cfg), stop_metric(cfg)
    out = []
    for key in order:
        trial, steps = SimpleNamespace(trial_id=key), cfg.train.max_steps
        asha.on_trial_add(None, trial)
        for step, value in sorted(history[key].items()):
            result = {"step": step, metric: value}
            if asha.on_trial_result(None, trial, result) == TrialScheduler.STOP and step < steps:
                steps = step
                break
        asha.on_trial_remove(None, trial)
        out.append((key, steps))
    return out


def steps_until_best(rows: list, best: list[str], max_steps: int) -> int | None:
    """Trial-steps spent, over (key, steps trained) rows in launch order, until every trial
    of the best point (`best`: its keys, one per seed) was trained to the end (None: one
    was stopped early)."""
    used, left = 0, set(best)
    for key, steps in rows:
        used += steps
        if key in left and steps >= max_steps:
            left.discard(key)
            if not left:
                return used
    return None


def replayed_orders(cfg: Config, results, orders: int = REPLAY_ORDERS) -> dict:
    """Tune's ASHA (as `cfg` builds it) replayed over a full grid's recorded evaluations in
    `orders` random launch orders: in how many it trained the grid's best point to the end,
    and the share of the grid's trial-steps it spent until then (a miss counts as 1)."""
    max_steps = cfg.train.max_steps
    best, best_keys = grid_best(results, cfg.sweep.metric)
    history = evaluations(results, stop_metric(cfg)[0])
    grid_total = len(history) * max_steps
    rng = np.random.default_rng(0)
    used = [
        steps_until_best(
            replay_asha(cfg, history, list(rng.permutation(sorted(history)))), best_keys, max_steps
        )
        for _ in range(orders)
    ]
    share = [x / grid_total if x is not None else 1.0 for x in used]
    return {
        "replay_found_best_in": f"{sum(x is not None for x in used)} of {orders}",
        "replay_share_mean": round(float(np.mean(share)), 4),
        "replay_share_p90": round(float(np.percentile(share, 90)), 4),
    }


def asha_rule(cfg: Config) -> dict:
    """The ASHA settings a figure was measured under."""
    return {
        "stop_metric": stop_metric(cfg)[0],
        "grace_period": cfg.sweep.grace_period,
        "reduction_factor": cfg.sweep.reduction_factor,
        "max_steps": cfg.train.max_steps,
    }


def finished_grid(folder: str, overrides: list[str]) -> tuple[Config, list]:
    """A finished full-grid sweep's output folder (config.yaml and its Tune folder) read
    back: its config with ASHA_RULE and `overrides` applied, and its trials' results. Every
    trial must have trained to the end and been evaluated before it."""
    folder = folder.rstrip("/")
    cfg = load_config(f"{folder}/{CONFIG_FILE}", ASHA_RULE + overrides)
    results = ResultGrid(ExperimentAnalysis(f"{folder}/{cfg.sweep.name}"))
    metric = stop_metric(cfg)[0]
    seen: set[str] = set()
    for r in results:
        key, m = trial_key(r.config)[1], r.metrics or {}
        where = f"{folder}: trial {key} ({r.path})"
        if key in seen:
            raise ValueError(
                f"{where}: two trials at one (subset, rank, seed): a grid "
                "swept over more than those (sweep.params) cannot be replayed"
            )
        seen.add(key)
        if m.get("step") != cfg.train.max_steps or cfg.sweep.metric not in m:
            raise ValueError(
                f"{where}: ended at step {m.get('step')} of "
                f"{cfg.train.max_steps}, unscored; replay a full grid "
                "(sweep.scheduler: fifo) whose trials all finished"
            )
        steps = evaluations([r], metric)[key]
        if not any(step < cfg.train.max_steps for step in steps):
            raise ValueError(
                f"{where}: no {metric} before the last step, so ASHA would "
                "stop nothing; run the grid with train.eval_every (e.g. 60)"
            )
    return cfg, results


def asha_replay(folder: str, overrides: list[str]) -> dict:
    """`bench asha --grid DIR`: ASHA replayed over a finished sweep, nothing trained."""
    cfg, results = finished_grid(folder, overrides)
    best, _ = grid_best(results, cfg.sweep.metric)
    return {
        "grid": folder,
        "trials": len(results),
        "grid_best": best,
        **asha_rule(cfg),
        **replayed_orders(cfg, results),
    }


def asha_payoff(cfg: Config, orders: int = ASHA_ORDERS) -> dict:
    """Trial-steps of the grid vs ASHA until ASHA has fully trained the grid's best point,
    under several launch orders (the trials launched first set ASHA's bar), and the same
    replayed over the grid's evaluations in REPLAY_ORDERS random orders."""
    out = tempfile.mkdtemp(prefix="ecomtrain-bench-")
    grid_cfg = copy.deepcopy(cfg)
    grid_cfg.sweep.name, grid_cfg.sweep.scheduler = "grid", "fifo"
    grid_cfg.sweep.max_concurrent_trials, grid_cfg.wandb.mode = 1, "disabled"
    # saved as a sweep saves it, so `bench asha --grid` can replay this grid again
    atomic_write(f"{out}/{CONFIG_FILE}", config_yaml(grid_cfg))
    held_out, _ = held_out_rows(cfg)  # drawn once, as a sweep does
    results = run_sweep(grid_cfg, out, out, held_out=held_out)
    grid = trial_steps(results, cfg.sweep.metric)
    best, best_keys = grid_best(results, cfg.sweep.metric)
    grid_total = sum(steps for _, steps, _ in grid)
    asha_cfg = copy.deepcopy(grid_cfg)
    asha_cfg.sweep.scheduler = "asha"
    history = evaluations(results, stop_metric(asha_cfg)[0])
    runs = []
    for order in range(orders):
        asha_cfg.sweep.name, asha_cfg.sweep.launch_seed = f"asha-{order}", order
        asha = trial_steps(run_sweep(asha_cfg, out, out, held_out=held_out), cfg.sweep.metric)
        rows = [(key, steps) for key, steps, _ in asha]
        used = steps_until_best(rows, best_keys, cfg.train.max_steps)
        runs.append(
            {
                "launch_seed": order,
                "found_best": used is not None,
                "trial_steps_until_best": used,
                "share_of_grid": used / grid_total if used is not None else None,
                "trial_steps_total": sum(steps for _, steps in rows),
                "trials": asha,
                # the check of the replay: the steps it gives this launch order
                "replay_agrees": replay_asha(asha_cfg, history, [k for k, _ in rows]) == rows,
            }
        )
    shares = [r["share_of_grid"] for r in runs]
    return {
        **asha_rule(asha_cfg),
        "grid_best": best,
        "grid_trial_steps": grid_total,
        "grid_trials": grid,
        "grid_output": out,
        "orders": runs,
        "found_best_in": f"{sum(r['found_best'] for r in runs)} of {orders} orders",
        # the robust figure: the worst order counts ASHA's misses as the whole grid
        "share_of_grid_mean": float(np.mean([x if x is not None else 1.0 for x in shares])),
        "share_of_grid_worst": max(x if x is not None else 1.0 for x in shares),
        **replayed_orders(asha_cfg, results),
    }


SPACE = ASHA_GRID + ASHA_RULE
CONFIG = "world.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--grid", metavar="DIR", help="replay ASHA over a finished full-grid sweep's output"
    )


def run(args: argparse.Namespace, config) -> dict:
    """`bench asha`: the payoff over the configured grid, or a replay over `--grid`'s."""
    if args.grid:
        try:
            return asha_replay(args.grid, args.overrides)
        except (ValueError, OSError) as e:  # not a finished grid's output
            raise ConfigError(f"--grid {args.grid}: {e}") from None
    connect(log_to_driver=console.verbose())
    return asha_payoff(config())
