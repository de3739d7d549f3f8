"""`data` runs the data side of a trial alone (Ray Train workers, no model) at each world size:
the driver tokenises and shares out the training records once, then every rank reads its
share and takes `train.max_steps` steps of packed micro-batches. It prints, per world size,
the records each rank read, the steps each took and each rank's rate; the goal is data work
per rank in proportion to 1 / world size, with the same number of steps on every rank. Its
corpus, unless overridden: the demo corpus at 300 records per family.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import ray
import ray.train
import torch.distributed as dist
from ray.train import DataConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from ecomtrain import console
from ecomtrain.base_model import resolve_model
from ecomtrain.config import Config
from ecomtrain.connect import connect
from ecomtrain.data.pipeline import checked_scan, train_dataset
from ecomtrain.data.share import read_share, stream

SPACE = ["data.corpus=[demo:300]", "train.max_steps=20"]


def data_fn_per_worker(config: dict) -> None:
    """A rank's data work for `train.max_steps` steps, without a model; rank 0 reports every
    rank's figures."""
    cfg = config["cfg"]
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    t0 = time.perf_counter()
    share = read_share(ray.train.get_dataset_shard(f"train_{rank}"))
    read_s = time.perf_counter() - t0
    batches = stream(share, cfg, config["mult"], rank)
    micro = [next(batches) for _ in range(cfg.train.max_steps * cfg.train.grad_accum)]
    mine = {
        "records": len(share),
        "steps": len(micro) // cfg.train.grad_accum,
        "records_trained": sum(len(b["records"]) for b in micro),
        "read_s": read_s,
        "seconds": time.perf_counter() - t0,
    }
    every = [None] * world_size
    dist.all_gather_object(every, mine)
    with tempfile.TemporaryDirectory() as path:  # Ray Train keeps results with checkpoints
        if rank == 0:
            Path(path, "ranks.json").write_text(json.dumps(every))
        ray.train.report({}, checkpoint=ray.train.Checkpoint.from_directory(path))


def data_work(cfg: Config, worlds: list[int]) -> dict:
    """Per world size: the records each rank read and the steps each took (see module doc)."""
    model_path, scan = resolve_model(cfg.model), checked_scan(cfg.data)
    rows = []
    for world in worlds:
        shares, mult = train_dataset(cfg, model_path, cfg.data.tasks, world, scan)
        trainer = TorchTrainer(
            data_fn_per_worker,
            train_loop_config={"cfg": cfg, "mult": mult},
            scaling_config=ScalingConfig(
                num_workers=world, resources_per_worker={"CPU": min(1.0, 1.5 / world)}
            ),
            torch_config=TorchConfig(backend="gloo"),
            datasets={f"train_{r}": share for r, share in enumerate(shares)},
            dataset_config=DataConfig(datasets_to_split=[]),
            run_config=RunConfig(name=f"data-{world}", storage_path=tempfile.mkdtemp()),
        )
        ranks = json.loads(Path(trainer.fit().checkpoint.path, "ranks.json").read_text())
        rows.append(
            {
                "world": world,
                "records_per_rank": [r["records"] for r in ranks],
                "steps_per_rank": [r["steps"] for r in ranks],
                "records_trained_per_rank": [r["records_trained"] for r in ranks],
                "records_per_s_per_rank": [round(r["records"] / r["read_s"], 1) for r in ranks],
                "seconds_per_rank": [round(r["seconds"], 2) for r in ranks],
            }
        )
    total = sum(rows[0]["records_per_rank"])
    for row in rows:
        row["share_of_records_per_rank"] = [round(n / total, 4) for n in row["records_per_rank"]]
    return {"rows": rows}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2, 4, 8], help="the world sizes"
    )


def run(args: argparse.Namespace, config) -> dict:
    connect(log_to_driver=console.verbose())
    return data_work(config(), args.workers)
