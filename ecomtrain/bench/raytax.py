"""`raytax` runs the same training loop (train.loop.train_loop) on the same shares twice:
as a trial runs it, in Ray Train workers (fit), and as plain torch.distributed processes
(gloo, spawned and set up as torchrun would, with the torch threads Ray gives a worker of
`train.cpus_per_worker`; a local Ray instance is stopped meanwhile), alternating, `--repeats`
times each. Per run it prints the seconds per step over the steps after the first tenth
(from the loop's clock: the reports at `train.log_every` included, the closing checkpoint
not), the median step, and the CPU cores each kind of process kept busy meanwhile (the
ranks, Ray's own processes, this driver, anything else on the machine); then the ratio of
step times (Ray Train's over plain, each pair back to back: their geometric mean with a 95 %
t-interval; the goal is <= 1.05, "met" or "missed" only when the interval says so) and
checks that both trained on the same records, step by step (the loop's ledger), with the
largest difference of their losses.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import ray
import ray.train
import torch
import torch.distributed as dist

from ecomtrain import console
from ecomtrain.bench.measure import Sampler, environment, ratio_interval
from ecomtrain.bench.models import SHAPES, shape_model
from ecomtrain.config import Config, ConfigError
from ecomtrain.connect import connect, free_port
from ecomtrain.data.share import read_share
from ecomtrain.tasks import CAPABILITIES
from ecomtrain.train.driver import fit, prepare, trial_inputs
from ecomtrain.train.loop import STATE_FILE, train_loop
from ecomtrain.train.trial import Prepared, TrialMeta

SPACE = [
    "train.eval_every=0",  # the timed steps train only (reports at train.log_every stay)
    "train.max_steps=200",
    "data.max_eval_per_task=1",
]
RAYTAX_WARMUP = 0.1  # the share of steps before the timed window, on either side


class ProcessGroupRun:
    """train.loop's runner (as loop.RayTrainRun) for plain torch.distributed processes:
    the shares from the file the driver wrote, no checkpoint to resume, reports dropped,
    and rank 0 keeping the state of the last checkpoint in `out`."""

    report_gap_s = 0.0  # nothing to wait for

    def __init__(self, shares_file: str, out: str):
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.shares = pickle.loads(Path(shares_file).read_bytes())
        self.out = Path(out)

    def share(self, i: int):
        return self.shares[i]

    def checkpoint(self):
        return None

    def report(self, metrics: dict, checkpoint: str | None = None) -> None:
        if checkpoint is not None and self.rank == 0:
            shutil.copy(Path(checkpoint, STATE_FILE), self.out / STATE_FILE)


def process_group_worker(rank: int, world: int, port: int, threads: int, job: dict) -> None:
    """One plain process: joins a gloo group as torchrun would set it up, then runs the
    loop."""
    os.environ |= {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_WORLD_SIZE": str(world),
    }
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        train_loop(job["inputs"], ProcessGroupRun(job["shares_file"], job["out"]))
    finally:
        dist.destroy_process_group()


@ray.remote
class ThreadCount:
    def threads(self) -> int:
        return torch.get_num_threads()


def ray_worker_threads(cfg: Config) -> int:
    """Torch's intra-op threads in an actor with a training worker's CPUs (Ray sets
    OMP_NUM_THREADS from them)."""
    actor = ThreadCount.options(num_cpus=cfg.train.cpus_per_worker).remote()
    try:
        return ray.get(actor.threads.remote())
    finally:
        ray.kill(actor)


class CpuTime(Sampler):
    """CPU seconds of every process on this machine, by kind (`kind_of`), sampled every
    `every` s while open, so that the CPU each kind used between two moments can be read
    off afterwards (`between`)."""

    KINDS = ("training", "ray", "driver", "other")

    def __init__(self, every: float = 1.0):
        super().__init__(every)
        self.me = os.getpid()
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._seen: dict[tuple[int, float], tuple[str, float]] = {}  # (pid, start): kind, cpu

    def kind_of(self, proc: psutil.Process) -> str:
        if proc.pid == self.me:
            return "driver"
        command = " ".join(proc.cmdline())
        if "RayTrainWorker" in command or "multiprocessing.spawn" in command:
            return "training"  # a rank of either runner
        return "ray" if "ray" in command.lower() else "other"

    def sample(self) -> None:
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                key = (proc.pid, proc.create_time())
                times = proc.cpu_times()
                # a Ray worker's title says what it runs only once it runs it: ask again
                self._seen[key] = (self.kind_of(proc), times.user + times.system)
        totals = dict.fromkeys(self.KINDS, 0.0)
        for kind, cpu in self._seen.values():  # ended processes keep their last sample
            totals[kind] += cpu
        self.samples.append((time.time(), totals))

    def between(self, t0: float, t1: float) -> dict[str, float]:
        """CPU seconds of each kind from `t0` to `t1` (linear between samples)."""
        times = [t for t, _ in self.samples]
        return {
            kind: float(
                np.interp(t1, times, [c[kind] for _, c in self.samples])
                - np.interp(t0, times, [c[kind] for _, c in self.samples])
            )
            for kind in self.KINDS
        }


def steady_window(state: dict) -> tuple[int, float, float]:
    """The timed window of a run: its steps after the warm-up (RAYTAX_WARMUP of them, at
    least 2) and the Unix times the first and last of them ended at (the loop's clock)."""
    clock = dict(state["clock"])
    first = max(2, round(max(clock) * RAYTAX_WARMUP))
    return max(clock) - first, clock[first], clock[max(clock)]


def run_figures(state: dict, cpu: CpuTime) -> dict:
    """Seconds per step over a run's timed window (reports included), its median step and
    the CPU cores each kind of process kept busy meanwhile (None for a window shorter than
    4 of `cpu`'s samples)."""
    steps, t0, t1 = steady_window(state)
    clock = dict(state["clock"])
    durations = np.diff([clock[s] for s in sorted(clock) if t0 <= clock[s] <= t1])
    cores = None  # a window of fewer than 4 samples says little about the CPU in it
    if t1 - t0 >= 4 * cpu.every:
        cores = {k: round(v / (t1 - t0), 3) for k, v in cpu.between(t0, t1).items()}
    return {
        "step_s": round((t1 - t0) / steps, 4),
        "median_step_s": round(float(np.median(durations)), 4),
        "cores": cores,
    }


def raytax(cfg: Config, shape: str = "tiny", repeats: int = 2) -> dict:
    """Seconds per training step of the same loop on the same shares: as a trial runs it
    (Ray Train workers, loop.RayTrainRun) and as plain torch.distributed processes (gloo,
    spawned like torchrun's, the same threads each), alternating, `repeats` times each."""
    world = cfg.train.num_workers
    if cfg.train.use_gpu or cfg.train.elastic:
        raise ConfigError("bench raytax: CPU processes of a fixed world (train.use_gpu false)")
    cfg.model.name_or_path = shape_model(cfg, shape)
    connect(log_to_driver=console.verbose())
    meta = TrialMeta.of("raytax", "all", cfg.data.tasks or list(CAPABILITIES), cfg)
    prepared = prepare(cfg, Prepared(cfg.model.name_or_path, held_out=[]))  # no evaluation
    inputs, datasets = trial_inputs(cfg, meta, prepared)
    threads = ray_worker_threads(cfg)
    out: dict = {"shape": shape, "workers": world, "threads_per_process": threads}
    runs: dict[str, list] = {"ray_train": [], "torch_distributed": []}
    with tempfile.TemporaryDirectory(prefix="ecomtrain-raytax-") as tmp, CpuTime() as cpu:
        shares_file = Path(tmp, "shares.pkl")
        shares_file.write_bytes(pickle.dumps([read_share(d) for d in datasets]))
        for r in range(repeats):
            connect(log_to_driver=console.verbose())  # again after a plain run
            result = fit(cfg, meta, str(Path(tmp, f"ray{r}")), prepared=prepared)
            runs["ray_train"].append(
                json.loads(Path(result.checkpoint.path, STATE_FILE).read_text())
            )
            ray.shutdown()  # a plain run has no Ray beside it (a local instance stops)
            plain = Path(tmp, f"plain{r}")
            plain.mkdir()
            job = {"inputs": inputs, "shares_file": str(shares_file), "out": str(plain)}
            # DeepSpeed's accelerator named: it would warn, in each process as it imports,
            # that it fell back to the CPU (a Ray worker's console set-up holds that warning)
            named = {} if cfg.train.use_gpu else {"DS_ACCELERATOR": "cpu"}
            with environment(OMP_NUM_THREADS=str(threads), **named):
                torch.multiprocessing.start_processes(
                    process_group_worker,
                    args=(world, free_port(29500), threads, job),
                    nprocs=world,
                    start_method="spawn",
                )
            runs["torch_distributed"].append(json.loads((plain / STATE_FILE).read_text()))
    steps = steady_window(runs["ray_train"][0])[0]
    out |= {"warmup_steps": cfg.train.max_steps - steps, "timed_steps": steps}
    for name, states in runs.items():
        out[name] = [{"runner": name, **run_figures(state, cpu)} for state in states]
    pairs = [
        a["step_s"] / b["step_s"]
        for a, b in zip(out["ray_train"], out["torch_distributed"], strict=True)
    ]
    out["pair_ratios"] = [round(r, 3) for r in pairs]
    out |= ratio_interval(pairs, RAYTAX_GOAL)
    reference, states = runs["ray_train"][0], runs["ray_train"] + runs["torch_distributed"]
    out["same_records"] = all(s["ledger"] == reference["ledger"] for s in states)
    out["loss_max_abs_difference"] = max(
        abs(a[1] - b[1])
        for s in states
        for a, b in zip(s["history"], reference["history"], strict=True)
    )
    if not out["same_records"]:
        raise RuntimeError("bench raytax: the two runners trained on different records")
    return out


RAYTAX_GOAL = 1.05  # Ray Train's step time over plain torch.distributed's, at most


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shape", choices=["tiny", *sorted(SHAPES)], default="tiny", help="the model's shape"
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side")


def run(args: argparse.Namespace, config) -> dict:
    return raytax(config(), args.shape, args.repeats)
