"""`eval` scores the configured model (with a fresh LoRA adapter) on the held-out sample a
sweep draws, in one process group of `--workers` ranks with a CPU each: first on rank 0
alone while the others wait, then with every rank answering its share of the batches and
the answers exchanged, as the training loop evaluates (every batch on every rank under
ZeRO-3). It prints the seconds of each, the speed-up and whether every metric and
per-record entry came out equal.
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
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from ecomtrain import console
from ecomtrain.base_model import resolve_model
from ecomtrain.config import Config
from ecomtrain.connect import connect
from ecomtrain.evaluate.answer import evaluate_rows
from ecomtrain.evaluate.held_out import held_out_rows
from ecomtrain.model import add_lora, load_model, load_tokenizer


def eval_fn_per_worker(config: dict) -> None:
    """The held-out evaluation twice in one process group: on rank 0 alone while the others
    wait, then shared over every rank (as the training loop evaluates); rank 0 reports the
    seconds of each and whether the two results are equal."""
    cfg, rows, ctx = config["cfg"], config["held_out"], ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    model_path = resolve_model(cfg.model)
    tokenizer = load_tokenizer(model_path)
    model = add_lora(load_model(model_path), cfg.lora).eval()
    figures = {}
    for name, share in (("rank_0_alone", (0, 1)), ("every_rank", (rank, world_size))):
        dist.barrier()
        t0 = time.perf_counter()
        if rank == 0 or share[1] > 1:
            figures[name] = evaluate_rows(model, tokenizer, rows, cfg, share=share)
        dist.barrier()
        figures[f"{name}_s"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as path:  # Ray Train keeps results with checkpoints
        if rank == 0:
            (alone, entries_alone), (shared, entries_shared) = (
                figures["rank_0_alone"],
                figures["every_rank"],
            )
            out = {k: v for k, v in figures.items() if k.endswith("_s")}
            out["equal"] = entries_alone == entries_shared and all(
                alone[k] == shared[k] for k in alone if k != "eval_s"
            )
            Path(path, "eval.json").write_text(json.dumps(out))
        ray.train.report({}, checkpoint=ray.train.Checkpoint.from_directory(path))


def eval_work(cfg: Config, world: int) -> dict:
    """`bench eval`: seconds of one held-out evaluation on rank 0 alone and shared over
    `world` ranks (one CPU each), on the same sample, and whether the two agree."""
    rows, sample = held_out_rows(cfg)
    trainer = TorchTrainer(
        eval_fn_per_worker,
        train_loop_config={"cfg": cfg, "held_out": rows},
        scaling_config=ScalingConfig(num_workers=world, resources_per_worker={"CPU": 1}),
        torch_config=TorchConfig(backend="gloo"),
        run_config=RunConfig(name="eval", storage_path=tempfile.mkdtemp()),
    )
    got = json.loads(Path(trainer.fit().checkpoint.path, "eval.json").read_text())
    return {
        "held_out": sample,
        "records": len(rows),
        "world": world,
        "rank_0_alone_s": round(got["rank_0_alone_s"], 2),
        "every_rank_s": round(got["every_rank_s"], 2),
        "speedup": round(got["rank_0_alone_s"] / got["every_rank_s"], 3),
        "equal_bit_for_bit": got["equal"],
    }


SPACE: list[str] = []


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=2, help="ranks sharing the evaluation")


def run(args: argparse.Namespace, config) -> dict:
    connect(log_to_driver=console.verbose())
    return eval_work(config(), args.workers)
