"""`scale` runs a sweep of `--trials` simulated trials on a simulated cluster (Ray's
`cluster_utils.Cluster`: `--nodes` nodes sharing `--gpus` fake GPUs) through the sweep's
own Tuner, ASHA, trials.csv, report and W&B summary run. Each trial takes the GPUs of
`train.num_workers` workers, sleeps `--step-s` per evaluation interval and reports a
synthetic learning curve (its score rising with rank and capabilities) with a checkpoint of
per-record scores, as a real trial does. It prints the driver's memory (RSS growth and
peak), the scheduling overhead per trial (the sweep's wall time beyond the trials' own
sleep at full concurrency, divided by the trials) and the time to build trials.csv, the report and the
summary run. Per-trial W&B runs are off unless `wandb.mode` is set.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import ray.train
from ray import tune
from ray.cluster_utils import Cluster

from ecomtrain.config import Config
from ecomtrain.evaluate.answer import SCORES_FILE
from ecomtrain.report.pages import write_report
from ecomtrain.report.trials import load_trials, trial_rows, write_csv
from ecomtrain.report.wandb_summary import log_summary
from ecomtrain.tasks import CAPABILITIES
from tuning.run import concurrency, n_trials, run_sweep

SPACE = [
    "sweep.subsets={}",
    "sweep.ladder=[understanding-shopping-concepts, user-behavior-alignment,"
    " shopping-knowledge-reasoning, multi-lingual-abilities]",
    "sweep.ranks=[2, 4, 8, 16, 32]",  # 4 subsets x 5 ranks x seeds = the trials
    "sweep.max_concurrent_trials=0",  # as many as the GPUs hold
    "sweep.scheduler=asha",
    "sweep.grace_period=50",
    "sweep.reduction_factor=3",
    "train.use_gpu=true",
    "train.max_steps=200",
    "train.eval_every=50",
    "wandb.mode=disabled",
]
SCALE_RECORDS = 200  # held-out records each simulated evaluation scores


def simulated_trainable(cfg: Config, step_s: float):
    """A trial that trains nothing: per evaluation interval it sleeps `step_s` and reports
    a learning curve whose level rises with rank and capabilities, with a checkpoint of
    per-record scores (Bernoulli draws), so the report reads what it reads for real trials."""

    def trial(point: dict) -> None:
        rank, caps = int(point["rank"]), int(point["subset"]["n_capabilities"])
        rng = np.random.default_rng([rank, caps, int(point.get("seed", 0))])
        level = 0.3 + 0.05 * caps + 0.02 * np.log2(rank)
        every, steps = cfg.train.eval_every, cfg.train.max_steps
        for step in range(every, steps + 1, every):
            time.sleep(step_s)
            p = level * (1 - np.exp(-step / every))
            hits = rng.random(SCALE_RECORDS) < p
            entries = [
                {
                    "id": f"r{i}",
                    "task": f"task{i % 8}",
                    "track": CAPABILITIES[i % 4],
                    "metric": "accuracy",
                    "score": float(hit),
                    "loss": 1.0,
                    "tokens": 1,
                }
                for i, hit in enumerate(hits)
            ]
            metrics = {
                "step": step,
                "loss": float(2 * (1 - p)),
                "eval_loss": float(2 * (1 - p)),
                "score": float(hits.mean()),
                "score_se": float(hits.std() / np.sqrt(len(hits))),
                "trainable_params": rank * 10_000,
            }
            with tempfile.TemporaryDirectory(prefix="ecomtrain-sim-") as tmp:
                scores = "".join(json.dumps(e) + "\n" for e in entries)
                (Path(tmp) / SCORES_FILE).write_text(scores)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    return tune.with_resources(trial, {"CPU": 0.01, "GPU": cfg.train.num_workers})


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux: ru_maxrss is in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def scale(cfg: Config, trials: int, gpus: int, nodes: int, step_s: float) -> dict:
    """The simulated sweep (see the module's docstring); returns its figures."""
    per_grid = 4 * len(cfg.sweep.ranks)
    cfg.sweep.seeds = list(range(max(1, -(-trials // per_grid))))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "num_gpus": 0})
    for _ in range(nodes):
        cluster.add_node(num_cpus=4, num_gpus=gpus // nodes)
    ray.init(address=cluster.address, log_to_driver=False, include_dashboard=False)
    out = Path(tempfile.mkdtemp(prefix="ecomtrain-scale-"))
    rss0 = peak_rss_mib()
    try:
        concurrent = min(concurrency(cfg), n_trials(cfg))
        t0 = time.time()
        results = run_sweep(cfg, str(out), str(out), fn=simulated_trainable(cfg, step_s))
        sweep_s = time.time() - t0
        rss_sweep = peak_rss_mib()
        reports = sum(int(r.metrics.get("step", 0)) // cfg.train.eval_every for r in results)
        t0 = time.time()
        write_csv(trial_rows(results, cfg.sweep.metric, str(out)), out / "trials.csv")
        rows = load_trials(out / "trials.csv")
        write_report(out)
        report_s = time.time() - t0
        t0 = time.time()
        log_summary(rows, cfg.wandb.project, cfg.sweep.name, "offline", out)
        summary_s = time.time() - t0
    finally:
        ray.shutdown()
        cluster.shutdown()
    busy = reports * step_s / concurrent  # the sweep's wall time were scheduling free
    return {
        "trials": len(results),
        "errors": len(results.errors),
        "simulated_gpus": gpus,
        "nodes": nodes,
        "concurrent_trials": concurrent,
        "evaluations_reported": reports,
        "sweep_s": round(sweep_s, 1),
        "overhead_per_trial_s": round((sweep_s - busy) / len(results), 2),
        "driver_peak_rss_before_mib": rss0,
        "driver_peak_rss_after_sweep_mib": rss_sweep,
        "driver_peak_rss_mib": peak_rss_mib(),
        "report_s": round(report_s, 1),
        "summary_run_s": round(summary_s, 1),
        "output": str(out),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int, default=500, help="simulated trials")
    parser.add_argument("--gpus", type=int, default=64, help="simulated GPUs")
    parser.add_argument("--nodes", type=int, default=4, help="simulated GPU nodes")
    parser.add_argument("--step-s", type=float, default=1.0, help="sleep per interval")


def run(args: argparse.Namespace, config) -> dict:
    return scale(config(), args.trials, args.gpus, args.nodes, args.step_s)
