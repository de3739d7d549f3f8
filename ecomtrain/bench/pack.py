"""`pack` runs the same sweep twice per repeat, back to back: every trial in a Ray Train run
of its own (`sweep.pack=1`) and the trials packed `--pack` at a time (ecomtrain.train.pack),
`--repeats` times. It prints each sweep's wall time (from the Tuner's start to its end; the
model, the corpus scan and the held-out sample are prepared once, before either), the ratio
of the packed sweep's time to the unpacked one's (each pair back to back: their geometric
mean with a 95 % t-interval; the goal is <= 0.5, a 2x faster sweep, "met" or "missed" only
when the interval says so), and the peak memory of a worker in each (the largest rank's:
peak RSS on CPU, GPU memory allocated on a GPU; the goal for the packed run is <= 1.3x a
single trial's). It checks that every trial's results are the same both ways (its loss at
every step and the score of every held-out record) and fails otherwise. Its sweep, unless
overridden (SPACE, on configs/world.yaml): the shopping world's capability ladder x ranks 2,
8, 32, one seed (12 trials), 150 steps each (world.yaml's 600 shortened), one run at a time.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

from ecomtrain import console
from ecomtrain.bench.measure import ratio_interval
from ecomtrain.config import Config, ConfigError
from ecomtrain.connect import connect
from ecomtrain.train.driver import prepare
from ecomtrain.train.trial import STATE_FILE
from tuning.run import run_sweep, trial_key

SPACE = [  # on configs/world.yaml: its ladder x ranks 2, 8, 32, one seed (12 trials)
    "sweep.seeds=[0]",
    "train.max_steps=150",
    "sweep.max_concurrent_trials=1",  # one run at a time, packed or not
    "wandb.mode=disabled",
]
CONFIG = "world.yaml"
TIME_GOAL = 0.5  # the packed sweep's time over the unpacked one's, at most
MEMORY_GOAL = 1.3  # a packed run's peak worker memory over a single trial's, at most


def trial_outcomes(results) -> dict[str, dict]:
    """Per trial key: its loss curve and per-record scores (from its last checkpoint) and
    the peak memory its run reported."""
    out = {}
    for r in results:
        if r.error is not None:
            raise RuntimeError(f"bench pack: trial {trial_key(r.config)[1]} failed: {r.error}")
        checkpoint = Path(r.metrics["checkpoint_path"])
        out[trial_key(r.config)[1]] = {
            "history": json.loads((checkpoint / STATE_FILE).read_text())["history"],
            "scores": (checkpoint / "scores.jsonl").read_text(),
            "peak_memory_gib": r.metrics["peak_memory_gib"],
        }
    return out


def timed_sweep(cfg: Config, pack: int, name: str, prepared, folder: str) -> tuple[float, dict]:
    """The sweep with `sweep.pack` = `pack`: its wall time and its trials' outcomes."""
    cfg = copy.deepcopy(cfg)
    cfg.sweep.pack, cfg.sweep.name = pack, name
    t0 = time.time()
    results = run_sweep(cfg, folder, folder, prepared=prepared)
    return time.time() - t0, trial_outcomes(results)


def same_results(a: dict, b: dict) -> float:
    """The largest loss difference of two sweeps' trials; an error where their trials, steps
    or per-record scores differ."""
    if a.keys() != b.keys():
        raise RuntimeError(f"bench pack: the sweeps ran different trials: {a.keys() ^ b.keys()}")
    gap = 0.0
    for key in a:
        steps = [s for s, _ in a[key]["history"]], [s for s, _ in b[key]["history"]]
        if steps[0] != steps[1] or a[key]["scores"] != b[key]["scores"]:
            raise RuntimeError(f"bench pack: trial {key} differs packed and alone")
        pairs = zip(a[key]["history"], b[key]["history"], strict=True)
        gap = max([gap] + [abs(x - y) for (_, x), (_, y) in pairs])
    if gap > 1e-5:
        raise RuntimeError(f"bench pack: a trial's loss differs packed and alone by {gap}")
    return gap


def pack_bench(cfg: Config, pack: int = 4, repeats: int = 3) -> dict:
    """Wall time and peak worker memory of the sweep unpacked and packed `pack` at a time,
    back to back, `repeats` times; the trials' results checked equal."""
    if pack < 2:
        raise ConfigError("bench pack: --pack must be 2 or more (1 is the unpacked side)")
    connect(log_to_driver=console.verbose())
    prepared = prepare(cfg)  # the model, the scan and the held-out sample, once
    out: dict = {"pack": pack, "steps": cfg.train.max_steps, "repeats": []}
    gap = 0.0
    with tempfile.TemporaryDirectory(prefix="ecomtrain-bench-pack-") as tmp:
        for r in range(repeats):
            alone_s, alone = timed_sweep(cfg, 1, f"alone-{r}", prepared, f"{tmp}/{r}")
            packed_s, packed = timed_sweep(cfg, pack, f"pack{pack}-{r}", prepared, f"{tmp}/{r}")
            gap = max(gap, same_results(alone, packed))
            out["repeats"].append(
                {
                    "repeat": r,
                    "trials": len(alone),
                    "alone_s": round(alone_s, 1),
                    "packed_s": round(packed_s, 1),
                    "time_ratio": round(packed_s / alone_s, 3),
                    "alone_peak_gib": round(max(t["peak_memory_gib"] for t in alone.values()), 3),
                    "packed_peak_gib": round(max(t["peak_memory_gib"] for t in packed.values()), 3),
                }
            )
    rows = out["repeats"]
    out["trials"] = rows[0]["trials"]
    out["time_ratio"] = ratio_interval([row["time_ratio"] for row in rows], TIME_GOAL)
    out["speedup"] = round(1 / out["time_ratio"]["ratio"], 2)
    memory = [row["packed_peak_gib"] / row["alone_peak_gib"] for row in rows]
    out["memory_ratio"] = ratio_interval(memory, MEMORY_GOAL)
    out["same_results"] = True  # same_results raised otherwise
    out["loss_max_abs_difference"] = gap
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pack", type=int, default=4, help="trials per packed run")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of sweeps")


def run(args: argparse.Namespace, config) -> dict:
    return pack_bench(config(), args.pack, args.repeats)
