"""Benchmarks that print figures and ratios (not tests: timings flake on busy machines).

    python -m ecomtrain.bench asha [--config FILE] [--grid DIR] [a.b=c ...]
    python -m ecomtrain.bench throughput [--shape tiny|smol135m|qwen0.5b] [--repeats N]
                                         [a.b=c ...]
    python -m ecomtrain.bench ablation [--shape ...] [--steps N] [a.b=c ...]
    python -m ecomtrain.bench raytax [--shape ...] [--repeats N] [a.b=c ...]
    python -m ecomtrain.bench mfu --shape 1b|7b [--matrix [DIMS]] [--config FILE]
                                  [a.b=c ...]   (CUDA GPU)
    python -m ecomtrain.bench data --workers 1 2 4 8 [--json FILE] [a.b=c ...]
    python -m ecomtrain.bench eval [--workers 2] [--config FILE] [a.b=c ...]
    python -m ecomtrain.bench scale [--trials 500] [--gpus 64] [--nodes 4] [a.b=c ...]
    python -m ecomtrain.bench corpus [--records 10000000] [--files 100] [--world 2]
                                     [--words W] [--object-store-mib M] [a.b=c ...]

Every benchmark also writes its figures as JSON with `--json FILE`.

`asha` runs the full grid once, then ASHA under several launch orders (`sweep.launch_seed`
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

`throughput` trains the configured model on the configured corpus with ecomtrain's trial
(packed rows, DeepSpeed, Ray Train) and with HF Trainer + PEFT under DDP (Ray Train's
workers, as many as `train.num_workers`, with the same CPUs or GPUs each), the strongest
correct configuration its user would pick: padded batches grouped by length
(`train_sampling_strategy="group_by_length"`), and HF's padding-free collator as a second
baseline where it is correct for the attention kernel (checked on the model: a flattened
batch's logits against each record's alone; with sdpa in transformers 5.24 it attends across
records, so it is reported and not run). Same model, records, LoRA, precision, learning rate,
steps and gradient accumulation; HF's batch size in records is chosen so that its supervised
tokens per optimizer step match ecomtrain's. Both are timed over the same window, the last
`train.log_every` optimizer steps after the same warm-up, and supervised tokens (the labels
a loss covers) are counted exactly on both sides. `--shape` trains a random-initialised model
of a real shape (SHAPES, e.g. `qwen0.5b`) with the offline tokenizer, so the share of FLOPs in
the vocabulary projection (printed) is the real model's. For HF it also prints the share of its
timed window spent in forward and backward passes (`Trainer.training_step`, DDP's all-reduce
included); the rest is its loop: data, collation, optimizer, scheduler, callbacks. Supervised
tokens are a fair unit only when both windows hold records of the usual make-up; a short
window of ecomtrain's may not (each rank packs an epoch longest records first), so the bench
also counts the tokens each side processed in its window (prompts included, padding aside;
ecomtrain's by replaying its stream) and prints their ratio (`processed_ratio_vs_...`) and
the tokens processed per supervised token in each window and in all the records.
`--repeats N` runs the two sides N times, back to back, and prints each run's rates and
ratios, then each ratio's geometric mean over the runs with a 95 % t-interval (as raytax's):
CPU rates vary from run to run, so a single run's ratio has no interval.

`ablation` runs ecomtrain's training step (forward and backward, one process) on the same
packed micro-batches of the configured corpus with each of its choices undone in turn:
logits at every token, every record of a micro-batch in one attention call, and no packing
(each record its own padded row). It prints the seconds and supervised tokens/s of each, the
time each choice saves (`ecomtrain_gain`: the variant's seconds over ecomtrain's) and the
loss of the first micro-batch under each (equal up to rounding: the choices change the
cost, not the result). `--shape` as for `throughput`, `--steps` micro-batches timed.

`raytax` runs the same training loop (train.loop.train_loop) on the same shares twice:
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

`data` runs the data side of a trial alone (Ray Train workers, no model) at each world size:
the driver tokenises and shares out the training records once, then every rank reads its
share and takes `train.max_steps` steps of packed micro-batches. It prints, per world size,
the records each rank read, the steps each took and each rank's rate; the goal is data work
per rank in proportion to 1 / world size, with the same number of steps on every rank. Its
corpus, unless overridden: the demo corpus at 300 records per family.

`eval` scores the configured model (with a fresh LoRA adapter) on the held-out sample a
sweep draws, in one process group of `--workers` ranks with a CPU each: first on rank 0
alone while the others wait, then with every rank answering its share of the batches and
the answers exchanged, as the training loop evaluates (every batch on every rank under
ZeRO-3). It prints the seconds of each, the speed-up and whether every metric and
per-record entry came out equal.

`scale` runs a sweep of `--trials` simulated trials on a simulated cluster (Ray's
`cluster_utils.Cluster`: `--nodes` nodes sharing `--gpus` fake GPUs) through the sweep's
own Tuner, ASHA, trials.csv, report and W&B summary run. Each trial takes the GPUs of
`train.num_workers` workers, sleeps `--step-s` per evaluation interval and reports a
synthetic learning curve (its score rising with rank and capabilities) with a checkpoint of
per-record scores, as a real trial does. It prints the driver's memory (RSS growth and
peak), the scheduling overhead per trial (the sweep's wall time beyond the trials' own
sleep at full concurrency, divided by the trials) and the time to build trials.csv, the report and the
summary run. Per-trial W&B runs are off unless `wandb.mode` is set.

`corpus` writes a generated corpus of `--records` JSON Lines records in `--files` files
(demo records, each made unique by a number and lengthened by `--words` words of a product
description; in each file one bad record, without its answer) and runs the data path on it stage by stage, on a local Ray instance of this
machine's cores (`--object-store-mib` caps its object store, so the tokenised mixture
spills to disk): the scan (parse, validate, split, count; bad records found against bad
records written), tokenising, mixing and dealing the shares (every held-out
split and training record as a trial sees them), then one process per rank that reads its
share and packs one epoch of it, checking that every record is packed as often as the
mixture says (once, for this corpus' even mixture). Per stage it prints the seconds,
records/s per core and the peak resident memory of the driver, of the largest Ray worker
and of all processes together, and per rank the bytes its share holds per record and its
private and mapped shared (object-store) memory before and after it reads its share.

`mfu` runs ecomtrain's training step (packed inputs, DeepSpeed, LoRA) on one GPU on a
random-initialised model of a real model's shape, fed packed rows of random tokens whose
record lengths spread like EC-Guide's, and prints tokens/s, model FLOPs utilisation and
peak memory. `mfu` counts the FLOPs a LoRA step needs: the forward pass (2 x non-embedding
parameters per token, plus causal attention over each record's own length) and the
gradient with respect to activations (as much again); the frozen weights get no weight
gradients, so the usual 6 x N per token (PaLM) would overstate it by half. The vocabulary
projection is counted at the labelled positions only, where ecomtrain computes it. `hfu`
adds the forward pass recomputed under gradient checkpointing (hardware FLOPs).
`train.compile=true` compiles the model as training does (torch.compile). `--matrix`
runs every combination of attention kernel (sdpa, flash-attention 2's varlen kernel where
flash-attn is installed), gradient checkpointing on and off, and compiled or not, each in a
process of its own (a failure or out-of-memory is that row's result), and names the fastest
whose peak memory fits an 80 GB GPU, with its settings as config overrides (`preset`);
`--matrix attn,checkpointing` varies only those (the rest as configured, `train.compile`
included), for a GPU with little time. Each row also gives the float32 logits of a micro-batch's answer tokens (`answer_logits_gib`): the most a fused
or chunked cross-entropy could save, since ecomtrain computes logits at no other token.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import importlib.util
import itertools
import json
import logging
import math
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil
import ray
import ray.train
import torch
import torch.distributed as dist
import torch.nn.functional as F
from ray import tune
from ray.cluster_utils import Cluster
from ray.train import DataConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.tune import ExperimentAnalysis, ResultGrid
from ray.tune.schedulers import TrialScheduler
from scipy.stats import t as student_t
from transformers import (
    AutoConfig,
    DataCollatorForSeq2Seq,
    DataCollatorWithFlattening,
    LlamaConfig,
    LlamaForCausalLM,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from ecomtrain import console
from ecomtrain.config import (
    CONFIG_FILE,
    Config,
    ConfigError,
    config_yaml,
    from_dict,
    load_config,
    to_dict,
)
from ecomtrain.connect import connect, free_port
from ecomtrain.data.demo import demo_records
from ecomtrain.data.packing import IGNORE, layout
from ecomtrain.data.pipeline import check_scan, train_dataset
from ecomtrain.data.scan import scan_corpus
from ecomtrain.data.shard import StreamStats, epoch_order, read_share, stream
from ecomtrain.evaluate.answer import SCORES_FILE, evaluate_rows
from ecomtrain.evaluate.held_out import held_out_rows
from ecomtrain.files import atomic_dir, atomic_write, cache_dir
from ecomtrain.model import DTYPES, add_lora, load_model, load_tokenizer, training_model
from ecomtrain.report.pages import write_report
from ecomtrain.report.trials import load_trials, trial_rows, write_csv
from ecomtrain.report.wandb_summary import log_summary
from ecomtrain.tasks import CAPABILITIES
from ecomtrain.tiny_model import resolve_model
from ecomtrain.train.driver import fit, trial_inputs, trial_meta
from ecomtrain.train.engine import initialize
from ecomtrain.train.inputs import (
    GROUP_SLACK,
    model_inputs,
    packed_loss,
    to_device,
    training_attention,
)
from ecomtrain.train.loop import (
    HEALTH_CHECK_ENV,
    STATE_FILE,
    Micro,
    optimizer_step,
    train_loop,
)
from tuning.run import concurrency, n_trials, run_sweep, scheduler, stop_metric, trial_key

log = logging.getLogger("ecomtrain.bench")

SHAPES = {  # random-initialised Llama-architecture models of real shapes (mfu, throughput)
    "1b": {  # Llama-3.2-1B
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
    },
    "smol135m": {  # SmolLM2-135M
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
    },
    "qwen0.5b": {  # Qwen2.5-0.5B
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
    },
    "7b": {  # Qwen2.5-7B
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
    },
}
ASHA_GRID = [  # on configs/world.yaml: its ladder x ranks 2, 8, 32, one seed (12 trials)
    "sweep.seeds=[0]",
    "train.eval_every=60",
]
ASHA_RULE = [  # what ASHA decides on and when (README: measured on the grid above)
    "sweep.scheduler=asha",
    "sweep.stop_metric=metric",
    "sweep.grace_period=60",
    "sweep.reduction_factor=3",
]
ASHA_ORDERS = 3  # launch orders (sweep.launch_seed 0, 1, 2) ASHA is run under
REPLAY_ORDERS = 200  # random launch orders ASHA is replayed in over the grid's evaluations
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}


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


THROUGHPUT_SPACE = [
    "train.eval_every=0",
    # 100 steps of warm-up, then the timed window: the last 100 (at the tiny shape, seconds
    # of each side: 8 steps, under half a second of ecomtrain's, gave ratios of 1.5-2.7
    # run to run; real shapes take far longer steps and fewer of them, see the README)
    "train.max_steps=200",
    "train.log_every=100",
    "data.max_eval_per_task=1",  # the run's closing evaluation is not timed: keep it short
]
FLAT_TOLERANCE = 1e-3  # logits of a flattened batch against each record alone


def shape_model(cfg: Config, shape: str) -> str:
    """The configured model ("tiny"), or a random-initialised Llama of a real model's shape
    (SHAPES) with the offline tokenizer, saved once: the head/body split of its FLOPs is the
    real model's, so a ratio measured on it holds at that size."""
    tiny = resolve_model(cfg.model)
    if shape == "tiny":
        return tiny

    def build(out: Path) -> None:
        tokenizer = load_tokenizer(tiny)
        tokenizer.save_pretrained(out)
        torch.manual_seed(0)
        config = LlamaConfig(
            **SHAPES[shape],
            max_position_embeddings=max(cfg.data.max_seq_len, 1024),
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=None,
        )
        LlamaForCausalLM(config).save_pretrained(out)

    return str(atomic_dir(cache_dir() / "models" / f"shape-{shape}", build))


def head_share(model_path: str) -> float:
    """The vocabulary projection's share of a token's forward matmul FLOPs, attention aside
    (what computing logits at answer tokens only saves, at most)."""
    config = AutoConfig.from_pretrained(model_path)
    head = config.hidden_size * config.vocab_size
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = h * config.num_key_value_heads // config.num_attention_heads
    body = layers * (2 * h * h + 2 * h * kv + 3 * h * i)
    return head / (head + body)


def training_records(shares: list) -> list[dict]:
    """A trial's training records, tokenised and prompt-masked as its workers read them
    (every share, so each HF rank can take its part with HF's own sampler)."""
    rows = []
    for share in shares:
        for i in range(len(share)):
            ids, n = share.ids(i).tolist(), int(share.n_prompt[i])
            rows.append({"input_ids": ids, "labels": [IGNORE] * n + ids[n:]})
    return rows


def packed_window(cfg: Config, shares: list, mult: dict) -> tuple[int, int]:
    """Tokens processed (padding aside) and supervised tokens in ecomtrain's timed window
    (its last `train.log_every` steps), all ranks: a rank's stream is a function of its
    share, the seed and its rank, so it is replayed here micro-batch for micro-batch."""
    first = (cfg.train.max_steps - cfg.train.log_every) * cfg.train.grad_accum
    processed = covered = 0
    for rank, share in enumerate(shares):
        batches = stream(share, cfg, mult, rank, skip=first)
        for _ in range(cfg.train.log_every * cfg.train.grad_accum):
            batch = next(batches)
            processed += int((batch["segment_ids"] > 0).sum())
            covered += supervised(torch.from_numpy(batch["labels"]))
    return processed, covered


def supervised(labels: torch.Tensor) -> int:
    """Tokens a causal LM's loss covers: every label but the first of a row, not IGNORE."""
    return int((labels[..., 1:] != IGNORE).sum())


def flattening_is_exact(model, rows: list[dict]) -> tuple[bool, float]:
    """Whether HF's padding-free collator is correct with this model's attention: the
    logits of a few records flattened into one row against each record alone."""
    rows = rows[:4]
    with torch.no_grad():
        flat = model(**DataCollatorWithFlattening()(rows)).logits[0]
        alone = [model(input_ids=torch.tensor([r["input_ids"]])).logits[0] for r in rows]
    diff = float((flat - torch.cat(alone)).abs().max())
    return diff <= FLAT_TOLERANCE, diff


class TimedWindow(TrainerCallback):
    """Seconds and supervised tokens of HF Trainer's optimizer steps after `warmup`, and
    the seconds of them spent in its forward and backward passes (TimedTrainer)."""

    def __init__(self, warmup: int, counted: list[tuple[int, int]]):
        self.warmup, self.counted = warmup, counted
        self.t0 = self.t1 = self.passes = 0.0
        self.first = self.last = 0

    def add_passes(self, seconds: float) -> None:
        if self.t0 and not self.t1:
            self.passes += seconds

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.t0, self.first = time.perf_counter(), len(self.counted)
        if state.global_step == args.max_steps:
            self.t1, self.last = time.perf_counter(), len(self.counted)

    def figures(self) -> dict:
        return {
            "seconds": self.t1 - self.t0,
            "tokens": sum(c[0] for c in self.counted[self.first : self.last]),
            "processed": sum(c[1] for c in self.counted[self.first : self.last]),
            "passes_seconds": self.passes,
        }


class TimedTrainer(Trainer):
    """HF's Trainer, timing each `training_step`: the forward pass, the loss and the
    backward pass (with DDP's gradient all-reduce), for TimedWindow."""

    def __init__(self, *args, window: TimedWindow, **kwargs):
        super().__init__(*args, **kwargs)
        self.window = window

    def training_step(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return super().training_step(*args, **kwargs)
        finally:
            self.window.add_passes(time.perf_counter() - t0)


def hf_fn_per_worker(config: dict) -> None:
    """HF Trainer + PEFT under DDP, as its user would run it: padded batches grouped by
    length (or padding-free, flattened), the same LoRA, records, steps and warm-up as
    ecomtrain's run; rank 0 writes the timed window's seconds and tokens, all ranks'."""
    cfg = from_dict(config["cfg"])
    model_path, rows, flat = config["model_path"], config["rows"], config["flat"]
    torch.manual_seed(cfg.train.seed)
    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, cfg.model.attn_implementation, cfg.train.precision)
    model = add_lora(model, cfg.lora)
    counted: list[tuple[int, int]] = []  # supervised and processed tokens of each batch
    if flat:
        collate = DataCollatorWithFlattening()
    else:
        collate = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=IGNORE)

    def count(features):
        batch = collate(features)
        real = batch.get("attention_mask", torch.ones_like(batch["input_ids"]))
        counted.append((supervised(batch["labels"]), int(real.sum())))
        return batch

    window = TimedWindow(cfg.train.max_steps - cfg.train.log_every, counted)
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="ecomtrain-hf-"),
        per_device_train_batch_size=config["batch"],
        gradient_accumulation_steps=cfg.train.grad_accum,
        train_sampling_strategy="random" if flat else "group_by_length",
        max_steps=cfg.train.max_steps,
        learning_rate=cfg.train.lr,
        warmup_steps=cfg.train.warmup_steps,
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        bf16=cfg.train.precision == "bf16",
        save_strategy="no",
        logging_strategy="no",
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        seed=cfg.train.seed,
        disable_tqdm=True,
    )
    trainer = TimedTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=count,
        callbacks=[window],
        window=window,
    )
    trainer.train()
    ddp = isinstance(trainer.model_wrapped, torch.nn.parallel.DistributedDataParallel)
    ranks = [None] * dist.get_world_size()
    dist.all_gather_object(ranks, window.figures() | {"ddp": ddp or args.world_size == 1})
    with tempfile.TemporaryDirectory() as path:  # Ray Train keeps results with checkpoints
        if dist.get_rank() == 0:
            Path(path, "hf.json").write_text(json.dumps(ranks))
        ray.train.report({}, checkpoint=ray.train.Checkpoint.from_directory(path))


def hf_trainer_window(cfg: Config, model_path: str, rows: list[dict], batch: int, flat: bool):
    """Supervised tokens (all ranks) and seconds (the slowest rank) of HF's timed window,
    and the seconds of it in forward and backward passes (the slowest rank's), with as many
    Ray Train workers and CPUs as ecomtrain's trial."""
    trainer = TorchTrainer(
        hf_fn_per_worker,
        train_loop_config={
            "cfg": to_dict(cfg),
            "model_path": model_path,
            "rows": rows,
            "batch": batch,
            "flat": flat,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.train.num_workers,
            use_gpu=cfg.train.use_gpu,
            resources_per_worker={"CPU": cfg.train.cpus_per_worker},
        ),
        torch_config=TorchConfig(backend="nccl" if cfg.train.use_gpu else "gloo"),
        run_config=RunConfig(name="hf", storage_path=tempfile.mkdtemp()),
    )
    ranks = json.loads(Path(trainer.fit().checkpoint.path, "hf.json").read_text())
    if not all(r["ddp"] for r in ranks):  # each rank would train alone, with no all-reduce
        raise RuntimeError("bench throughput: HF Trainer did not wrap the model in DDP")
    seconds = max(r["seconds"] for r in ranks)
    passes = max(r["passes_seconds"] for r in ranks)
    return sum(r["tokens"] for r in ranks), sum(r["processed"] for r in ranks), seconds, passes


def throughput(cfg: Config, shape: str = "tiny", repeats: int = 1) -> dict:
    """Supervised tokens/s over the same timed window: ecomtrain's trial (packed, DeepSpeed,
    Ray Train) against HF Trainer + PEFT under DDP with the same workers, records, LoRA,
    precision, steps and supervised tokens per optimizer step (its batch size in records
    chosen to match ecomtrain's tokens), padded and grouped by length, and padding-free
    where that is correct for the attention kernel (see the module doc); `repeats` times,
    each side once a repeat, back to back."""
    model_path = shape_model(cfg, shape)
    cfg.model.name_or_path = model_path
    meta = trial_meta("bench", "all", cfg.data.tasks or list(CAPABILITIES), cfg)
    # Ray Train's controller polls often enough to take the report at the warm-up's end
    # (the loop reports no more often than the polls: loop.RayTrainRun.report_gap_s).
    os.environ.setdefault(HEALTH_CHECK_ENV, "0.1")
    window = cfg.train.log_every  # ecomtrain's last report covers exactly these steps
    loop_config, datasets = trial_inputs(cfg, meta, held_out=[])  # the shares fit trains on
    shares, mult = [read_share(d) for d in datasets], loop_config["mult"]
    rows = training_records(shares)
    processed, covered = packed_window(cfg, shares, mult)
    all_supervised = sum(supervised(torch.tensor(r["labels"])) for r in rows)
    out = {
        "shape": shape,
        "head_share_of_forward_flops": round(head_share(model_path), 4),
        "timed_steps": window,
        "warmup_steps": cfg.train.max_steps - window,
        # tokens processed per supervised token in ecomtrain's window and in all its records:
        # a short window of a packed epoch may differ from the mean
        "ecomtrain_processed_per_supervised": round(processed / covered, 2),
        "records_processed_per_supervised": round(
            sum(len(r["input_ids"]) for r in rows) / all_supervised, 2
        ),
    }
    baselines = {"hf_padded_grouped": False}
    exact, diff = flattening_is_exact(load_model(model_path, cfg.model.attn_implementation), rows)
    if exact:
        baselines["hf_padding_free"] = True
    else:
        out["hf_padding_free"] = (
            f"not run: with attn_implementation={cfg.model.attn_implementation} a flattened "
            f"batch attends across records (logits differ by up to {diff:.3g})"
        )
    runs, batch = [], 0
    for r in range(repeats):
        with tempfile.TemporaryDirectory(prefix="ecomtrain-bench-") as storage:  # checkpoints
            ours = fit(cfg, meta, storage).metrics
        if ours["window_steps"] != window:
            raise RuntimeError(
                f"bench throughput: ecomtrain's last report covers {ours['window_steps']} "
                f"steps, not train.log_every={window}: its steps are too fast for Ray "
                f"Train's polls (raise train.log_every and train.max_steps, or lower "
                f"{HEALTH_CHECK_ENV})"
            )
        per_step = ours["tokens_per_s"] * ours["step_s"]  # supervised, all ranks
        if abs(per_step * window - covered) > 0.5:  # the replay is not the run's window
            raise RuntimeError(
                f"bench throughput: ecomtrain's window held {per_step * window:.0f} supervised "
                f"tokens, its replay {covered}: the processed-token figures would be wrong"
            )
        if not batch:  # ecomtrain's window is the same each run (its stream is fixed)
            ranks_and_micro = cfg.train.num_workers * cfg.train.grad_accum
            batch = max(1, round(per_step / ranks_and_micro / (all_supervised / len(rows))))
            out |= {"ecomtrain_tokens_per_step": round(per_step, 1), "hf_batch_records": batch}
        ours_s = window * ours["step_s"]
        run = {"run": r, "ecomtrain_tokens_per_s": round(ours["tokens_per_s"], 1)}
        for name, flat in baselines.items():
            tokens, hf_processed, seconds, passes = hf_trainer_window(
                cfg, model_path, rows, batch, flat
            )
            out[f"{name}_processed_per_supervised"] = round(hf_processed / tokens, 2)
            out[f"{name}_tokens_per_step"] = round(tokens / window, 1)
            run |= {
                f"{name}_tokens_per_s": round(tokens / seconds, 1),
                f"ratio_vs_{name}": ours["tokens_per_s"] * seconds / tokens,
                # tokens processed (prompts too, padding aside) per second, ecomtrain's over
                # HF's: what the window's records cost, whatever share of them is supervised
                f"processed_ratio_vs_{name}": processed / ours_s * seconds / hf_processed,
                # the share of HF's window in forward and backward: the rest is its loop
                # (data, collation, optimizer, scheduler, callbacks)
                f"{name}_passes_share": round(passes / seconds, 3),
            }
        runs.append(run)
    for name in baselines:
        for kind in ("ratio", "processed_ratio"):
            key = f"{kind}_vs_{name}"
            figures = ratio_interval([run[key] for run in runs])
            out[key], out[f"{key}_ci95"] = figures["ratio"], figures["ratio_ci95"]
        out[f"{name}_passes_share"] = [run[f"{name}_passes_share"] for run in runs]
    for run in runs:  # rounded only now: the intervals above take the unrounded ratios
        run |= {k: round(v, 3) for k, v in run.items() if "ratio" in k}
    out["runs"] = runs
    return out


ABLATIONS = {  # the step with one of ecomtrain's choices undone at a time
    "ecomtrain": "packed rows, length-grouped attention, logits at answer tokens only",
    "all_logits": "logits at every token (the loss still over answer tokens)",
    "one_attention_group": "every record of a micro-batch in one sdpa call, padded to the longest",
    "padded": "no packing: each record its own row, padded to the micro-batch's longest",
}


def padded_inputs(inputs: dict) -> dict:
    """The records of a flat packed row as a padded batch (one record a row), with each
    row's labelled positions and targets."""
    ids, positions = inputs["input_ids"][0], inputs["position_ids"][0]
    full = torch.full_like(ids, IGNORE)
    full[inputs["logits_to_keep"]] = inputs["targets"]
    begins = (positions == 0).nonzero()[:, 0].tolist() + [len(ids)]
    spans = list(zip(begins[:-1], begins[1:], strict=True))
    longest = max(b - a for a, b in spans)
    input_ids = torch.zeros(len(spans), longest, dtype=ids.dtype)
    mask = torch.zeros(len(spans), longest, dtype=torch.long)
    targets = torch.full((len(spans), longest), IGNORE, dtype=ids.dtype)
    for row, (a, b) in enumerate(spans):
        input_ids[row, : b - a], mask[row, : b - a], targets[row, : b - a] = ids[a:b], 1, full[a:b]
    return {"input_ids": input_ids, "attention_mask": mask, "targets": targets}


def ablation_loss(model, name: str, inputs: dict) -> torch.Tensor:
    """The summed answer-token loss of one micro-batch, computed the way `name` says."""
    if name in ("ecomtrain", "one_attention_group"):
        return packed_loss(model, **inputs)
    if name == "all_logits":
        rest = {k: v for k, v in inputs.items() if k not in ("logits_to_keep", "targets")}
        logits = model(**rest).logits[0].float()[inputs["logits_to_keep"]]
        return F.cross_entropy(logits, inputs["targets"], reduction="sum")
    # padded rows: the body's hidden states, the vocabulary projection at answer tokens only
    targets = inputs["targets"]
    body = model.get_base_model()
    hidden = body.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    keep = targets != IGNORE
    logits = body.lm_head(hidden.last_hidden_state[keep]).float()
    return F.cross_entropy(logits, targets[keep], reduction="sum")


def ablation(cfg: Config, shape: str, steps: int = 8, warmup: int = 2) -> dict:
    """`bench ablation`: ecomtrain's training step (forward and backward, one process) with
    each of its choices undone in turn, on the same packed micro-batches of the configured
    corpus: supervised tokens/s of each, what each choice gains, and the loss of each on
    the same batches (equal up to float rounding: the choices change the cost, not the
    result)."""
    model_path = shape_model(cfg, shape)
    shares, mult = train_dataset(cfg, model_path, cfg.data.tasks, 1)
    share = read_share(shares[0])
    batches = stream(share, cfg, mult, rank=0)
    micro = [
        {k: torch.from_numpy(b[k]) for k in ("input_ids", "labels", "segment_ids")}
        for b in (next(batches) for _ in range(warmup + steps))
    ]
    torch.manual_seed(cfg.train.seed)
    base = load_model(model_path, training_attention("sdpa"), cfg.train.precision)
    model = training_model(base, cfg.lora, cfg.train.gradient_checkpointing)
    model.train()
    supervised_tokens = sum(len(model_inputs(m)["targets"]) for m in micro[warmup:])
    out = {"shape": shape, "head_share_of_forward_flops": round(head_share(model_path), 4)}
    out |= {"timed_micro_batches": steps, "supervised_tokens": supervised_tokens}
    rows = []
    for name, what in ABLATIONS.items():
        slack = math.inf if name == "one_attention_group" else GROUP_SLACK
        prepared = [model_inputs(m, "sdpa", group_slack=slack) for m in micro]
        if name == "padded":
            prepared = [padded_inputs(p) for p in prepared]
        for i, inputs in enumerate(prepared):
            if i == warmup:
                t0 = time.perf_counter()
            loss = ablation_loss(model, name, inputs)
            loss.backward()
            model.zero_grad(set_to_none=True)
            if i == 0:
                first = float(loss.detach())
        seconds = time.perf_counter() - t0
        rows.append(
            {
                "step": name,
                "what": what,
                "seconds": round(seconds, 3),
                "tokens_per_s": round(supervised_tokens / seconds, 1),
                "first_loss": first,
            }
        )
    full = rows[0]["seconds"]
    for row in rows:
        row["ecomtrain_gain"] = round(row["seconds"] / full, 3)
    reference = rows[0]["first_loss"]
    out["rows"] = rows
    out["loss_max_relative_difference"] = max(
        abs(row["first_loss"] - reference) / abs(reference) for row in rows
    )
    return out


RAYTAX_SPACE = [
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
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
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
        train_loop(job["loop_config"], ProcessGroupRun(job["shares_file"], job["out"]))
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


class Sampler:
    """Calls `sample` every `every` s on a thread of its own while open (and once more as
    it closes)."""

    def __init__(self, every: float):
        self.every = every
        self._stop = threading.Event()

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)
        self.sample()

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


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
    meta = trial_meta("raytax", "all", cfg.data.tasks or list(CAPABILITIES), cfg)
    loop_config, datasets = trial_inputs(cfg, meta, held_out=[])
    threads = ray_worker_threads(cfg)
    out: dict = {"shape": shape, "workers": world, "threads_per_process": threads}
    runs: dict[str, list] = {"ray_train": [], "torch_distributed": []}
    with tempfile.TemporaryDirectory(prefix="ecomtrain-raytax-") as tmp, CpuTime() as cpu:
        shares_file = Path(tmp, "shares.pkl")
        shares_file.write_bytes(pickle.dumps([read_share(d) for d in datasets]))
        for r in range(repeats):
            connect(log_to_driver=console.verbose())  # again after a plain run
            result = fit(cfg, meta, str(Path(tmp, f"ray{r}")), held_out=[])
            runs["ray_train"].append(
                json.loads(Path(result.checkpoint.path, STATE_FILE).read_text())
            )
            ray.shutdown()  # a plain run has no Ray beside it (a local instance stops)
            plain = Path(tmp, f"plain{r}")
            plain.mkdir()
            job = {"loop_config": loop_config, "shares_file": str(shares_file), "out": str(plain)}
            with environment(OMP_NUM_THREADS=str(threads)):
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


def ratio_interval(pairs: list[float], goal: float | None = None) -> dict:
    """The geometric mean of paired ratios (each pair ran back to back) with its 95 %
    t-interval over their logarithms, and, given a goal (a ratio to stay at or under),
    whether the interval clearly meets it."""
    logs = np.log(pairs)
    mean = float(np.mean(logs))
    out: dict = {"ratio": round(math.exp(mean), 3), "ratio_ci95": None}
    if len(logs) >= 2:
        half = student_t.ppf(0.975, len(logs) - 1) * float(np.std(logs, ddof=1))
        half /= math.sqrt(len(logs))
        out["ratio_ci95"] = [round(math.exp(mean - half), 3), round(math.exp(mean + half), 3)]
    if goal is not None:
        low, high = out["ratio_ci95"] or (0.0, math.inf)
        out["goal"] = "met" if high <= goal else "missed" if low > goal else "not clear"
    return out


@contextlib.contextmanager
def environment(**values: str):
    """Environment variables set inside the block (for processes started in it)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def synthetic_rows(n_rows: int, max_len: int, vocab: int, seed: int) -> dict:
    """Packed rows of random tokens: record lengths log-uniform in [48, max_len] (EC-Guide
    spans 40 to 2,000+ tokens), answers 5-50 % of a record."""
    rng = np.random.default_rng(seed)
    seqs = []
    while sum(len(ids) for ids, _ in seqs) < 1.2 * n_rows * max_len:
        n = int(np.exp(rng.uniform(np.log(48), np.log(max_len))))
        ids = rng.integers(0, vocab, n).tolist()
        answer = max(1, int(n * rng.uniform(0.05, 0.5)))
        seqs.append((ids, [IGNORE] * (n - answer) + ids[n - answer :]))
    rows = layout(seqs, max_len, pad=0)
    return {k: torch.from_numpy(rows[k][:n_rows]) for k in ("input_ids", "labels", "segment_ids")}


def forward_flops(config, inputs: dict) -> tuple[float, float]:
    """(dense + attention, vocabulary projection) forward FLOPs of one packed batch."""
    h, layers = config.hidden_size, config.num_hidden_layers
    kv = config.num_key_value_heads * h // config.num_attention_heads
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * config.intermediate_size
    positions = inputs["position_ids"][0]
    lengths = positions[torch.cat([positions[1:] == 0, torch.tensor([True])])] + 1
    attention = layers * 2 * h * float((lengths.double() ** 2).sum())  # QK^T and AV, causal
    dense = 2 * layers * per_layer * positions.numel()
    head = 2 * h * config.vocab_size * len(inputs["targets"])
    return dense + attention, head


def mfu(
    cfg: Config,
    shape: str,
    steps: int = 10,
    warmup: int = 3,
    device: str = "cuda",
) -> dict:
    """Tokens/s, MFU and peak memory of ecomtrain's step on one GPU (see the module doc),
    the model compiled as in training when `train.compile`.

    device="cpu" runs the same code without the figures only a GPU has (for tests)."""
    gpu = device == "cuda"
    if gpu and not torch.cuda.is_available():
        raise SystemExit("bench mfu: needs a CUDA GPU")
    if not dist.is_initialized():
        for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": free_port(29533)}.items():
            os.environ.setdefault(key, str(value))
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
        dist.init_process_group("nccl" if gpu else "gloo", rank=0, world_size=1)
    sync = torch.cuda.synchronize if gpu else lambda: None
    attn = cfg.model.attn_implementation
    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=cfg.data.max_seq_len)
    torch.manual_seed(cfg.train.seed)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(
            config, dtype=DTYPES[cfg.train.precision], attn_implementation=training_attention(attn)
        )
    model = training_model(model, cfg.lora, cfg.train.gradient_checkpointing)
    train = dataclasses.replace(cfg.train, grad_accum=1)  # one micro-batch per timed step
    engine, _ = initialize(model, train)
    rows = cfg.train.micro_batch_size
    batches = [
        model_inputs(synthetic_rows(rows, cfg.data.max_seq_len, config.vocab_size, i), attn)
        for i in range(warmup + steps)
    ]
    for i, batch in enumerate(batches):
        if i == warmup:
            sync()
            if gpu:
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
        loss, _ = optimizer_step(engine, [Micro(to_device(batch, device))], world=1)
    sync()
    seconds = time.perf_counter() - t0
    timed = batches[warmup:]
    body, head = (sum(x) for x in zip(*(forward_flops(config, b) for b in timed), strict=True))
    name = torch.cuda.get_device_name() if gpu else device
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), float("nan")) * 1e12
    return {
        "device": name,
        "shape": shape,
        "attn_implementation": attn,
        "gradient_checkpointing": cfg.train.gradient_checkpointing,
        "compile": cfg.train.compile,
        "base_params": sum(p.numel() for p in model.parameters() if not p.requires_grad),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "tokens_per_s": sum(b["input_ids"].numel() for b in timed) / seconds,
        "supervised_tokens_per_s": sum(len(b["targets"]) for b in timed) / seconds,
        "step_s": seconds / steps,
        "model_tflops_per_s": 2 * (body + head) / seconds / 1e12,
        "mfu": 2 * (body + head) / seconds / peak,  # forward + activation gradients
        "hfu": (3 if cfg.train.gradient_checkpointing else 2) * (body + head) / seconds / peak,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if gpu else float("nan"),
        # the float32 logits of a micro-batch's answer tokens: what a fused or chunked
        # cross-entropy would save (ecomtrain computes no logits at other tokens)
        "answer_logits_gib": max(len(b["targets"]) for b in timed) * config.vocab_size * 4 / 2**30,
        "loss": loss,
    }


MFU_DIMENSIONS = {  # what `mfu --matrix` varies, and the values each takes
    "attn": ("sdpa", "flash_attention_2"),
    "checkpointing": (True, False),
    "compile": (False, True),
}


def mfu_variants(cfg: Config, vary: list[str]) -> list[tuple]:
    """(attention kernel, gradient checkpointing, torch.compile) of each matrix row: every
    value of the dimensions in `vary`, the configured one of the others."""
    fixed = {
        "attn": (cfg.model.attn_implementation,),
        "checkpointing": (cfg.train.gradient_checkpointing,),
        "compile": (cfg.train.compile,),
    }
    unknown = sorted(set(vary) - set(MFU_DIMENSIONS))
    if unknown:
        raise ConfigError(f"--matrix: unknown {unknown}; choose from {list(MFU_DIMENSIONS)}")
    values = [MFU_DIMENSIONS[d] if d in vary else fixed[d] for d in MFU_DIMENSIONS]
    return list(itertools.product(*values))


MFU_MEMORY_GIB = 80  # the preset's step must fit an 80 GB GPU
MFU_KEPT = ("tokens_per_s", "step_s", "mfu", "hfu", "peak_memory_gib", "answer_logits_gib")


def has_flash_attn() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def mfu_matrix(
    config: str | None,
    overrides: list[str],
    shape: str,
    steps: int,
    device: str,
    variants: list[tuple],
) -> dict:
    """`mfu` for each of `variants`, each in a process of its own (its own GPU memory,
    compile caches and failures), the fastest that fits MFU_MEMORY_GIB, and its settings as
    the config lines of a preset."""
    rows = []
    for attn, checkpointing, compiled in variants:
        row: dict = {"attn": attn, "checkpointing": checkpointing, "compile": compiled}
        if attn == "flash_attention_2" and not has_flash_attn():
            rows.append(row | {"result": "not run: flash-attn is not installed"})
            continue
        with tempfile.TemporaryDirectory(prefix="ecomtrain-mfu-") as tmp:
            out = Path(tmp, "mfu.json")
            command = [sys.executable, "-m", "ecomtrain.bench", "mfu", "--shape", shape]
            command += ["--steps", str(steps), "--device", device, "--json", str(out), "-q"]
            command += ["--config", config] if config else []
            command += [*overrides, f"model.attn_implementation={attn}"]
            command += [f"train.gradient_checkpointing={str(checkpointing).lower()}"]
            command += [f"train.compile={str(compiled).lower()}"]
            group = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE")
            env = {k: v for k, v in os.environ.items() if k not in group}  # a group of its own
            proc = subprocess.run(command, capture_output=True, text=True, env=env)
            if proc.returncode == 0:
                figures = json.loads(out.read_text())
                row |= {"result": "ok"} | {k: round(figures[k], 4) for k in MFU_KEPT}
            else:
                lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
                row["result"] = f"failed (exit {proc.returncode}): {lines[-1][:300]}"
        print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)  # as each ends
        rows.append(row)
    fitting = [r for r in rows if r["result"] == "ok" and not r["peak_memory_gib"] > MFU_MEMORY_GIB]
    best = max(fitting, key=lambda r: r["tokens_per_s"], default=None)
    preset = best and (
        f"model.attn_implementation={best['attn']} "
        f"train.gradient_checkpointing={str(best['checkpointing']).lower()} "
        f"train.compile={str(best['compile']).lower()}"
    )
    return {
        "shape": shape,
        "device": device,
        "rows": rows,
        "fastest_fitting": best,
        "preset": preset,
    }


DATA_SPACE = ["data.corpus=[demo:300]", "train.max_steps=20"]


def data_fn_per_worker(loop_config: dict) -> None:
    """A rank's data work for `train.max_steps` steps, without a model; rank 0 reports every
    rank's figures."""
    cfg = from_dict(loop_config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    t0 = time.perf_counter()
    share = read_share(ray.train.get_dataset_shard(f"train_{rank}"))
    read_s = time.perf_counter() - t0
    batches = stream(share, cfg, loop_config["mult"], rank)
    micro = [next(batches) for _ in range(cfg.train.max_steps * cfg.train.grad_accum)]
    mine = {
        "records": len(share),
        "steps": len(micro) // cfg.train.grad_accum,
        "records_trained": sum(len(b["records"]) for b in micro),
        "read_s": read_s,
        "seconds": time.perf_counter() - t0,
    }
    every = [None] * world
    dist.all_gather_object(every, mine)
    with tempfile.TemporaryDirectory() as path:  # Ray Train keeps results with checkpoints
        if rank == 0:
            Path(path, "ranks.json").write_text(json.dumps(every))
        ray.train.report({}, checkpoint=ray.train.Checkpoint.from_directory(path))


def data_work(cfg: Config, worlds: list[int]) -> dict:
    """Per world size: the records each rank read and the steps each took (see module doc)."""
    model_path = resolve_model(cfg.model)
    rows = []
    for world in worlds:
        shares, mult = train_dataset(cfg, model_path, cfg.data.tasks, world)
        trainer = TorchTrainer(
            data_fn_per_worker,
            train_loop_config={"cfg": to_dict(cfg), "mult": mult},
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


def eval_fn_per_worker(loop_config: dict) -> None:
    """The held-out evaluation twice in one process group: on rank 0 alone while the others
    wait, then shared over every rank (as the training loop evaluates); rank 0 reports the
    seconds of each and whether the two results are equal."""
    cfg = from_dict(loop_config["cfg"])
    rows, ctx = loop_config["held_out"], ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    model_path = resolve_model(cfg.model)
    tokenizer = load_tokenizer(model_path)
    model = add_lora(load_model(model_path), cfg.lora).eval()
    figures = {}
    for name, share in (("rank_0_alone", (0, 1)), ("every_rank", (rank, world))):
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
        train_loop_config={"cfg": to_dict(cfg), "held_out": rows},
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


CORPUS_SPACE = [
    "data.corpus=[]",  # the generated files are the corpus
    "data.max_bad_fraction=0.01",  # the bench writes a bad record into every file
    "data.max_seq_len=256",
    "data.eval_fraction=0.01",
]


def _write_corpus_file(path: str, first: int, count: int, templates: list[str]) -> int:
    """`count` records numbered from `first`, each a demo record made unique by its number,
    and at the middle line a record without output_field. Returns the bad records written."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(first, first + count):
            if i == first + count // 2:
                f.write(f'{{"input_field": "Listing {i}.", "task_type": "generation"}}\n')
            else:
                f.write(templates[i % len(templates)].replace("@N@", str(i), 1) + "\n")
    return 1 if count else 0


FILLER = [
    "soft",
    "durable",
    "cotton",
    "blend",
    "with",
    "reinforced",
    "seams",
    "and",
    "a",
    "relaxed",
    "fit",
]


def write_corpus(folder: Path, records: int, files: int, words: int) -> tuple[list[str], int]:
    """A generated corpus of `records` JSON Lines records in `files` files, each input
    lengthened by `words` words of a product description, written in Ray tasks: (paths,
    bad records among them)."""
    templates = []
    filler = "".join(f"{FILLER[j % len(FILLER)]} " for j in range(words))
    for r in demo_records(per_task=100):
        r["input_field"] = f"Listing @N@. {filler}" + r["input_field"]
        templates.append(json.dumps(r, ensure_ascii=False))
    write = ray.remote(num_cpus=1)(_write_corpus_file)
    bounds = [round(k * records / files) for k in range(files + 1)]
    paths = [str(folder / f"part-{k:05d}.jsonl") for k in range(files)]
    jobs = [
        write.remote(p, a, b - a, templates)
        for p, a, b in zip(paths, bounds[:-1], bounds[1:], strict=True)
    ]
    return paths, sum(ray.get(jobs))


class PeakRSS(Sampler):
    """Peak resident memory, sampled every `every` s while open: of this process (`driver`),
    of the largest process under it (Ray's workers, when it started Ray) and of all."""

    def __init__(self, every: float = 0.2):
        super().__init__(every)
        self.me = psutil.Process()
        self.driver = self.largest = self.total = 0.0

    def sample(self) -> None:
        sizes = []
        for proc in self.me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                sizes.append(proc.memory_info().rss)
        driver = self.me.memory_info().rss
        self.driver = max(self.driver, driver / 2**20)
        self.largest = max(self.largest, max(sizes, default=0) / 2**20)
        self.total = max(self.total, (driver + sum(sizes)) / 2**20)

    def figures(self) -> dict:
        return {
            "driver_peak_rss_mib": round(self.driver, 1),
            "largest_worker_peak_rss_mib": round(self.largest, 1),
            "all_processes_peak_rss_mib": round(self.total, 1),
        }


@ray.remote(num_cpus=1)
def pack_share(share, cfg: Config, mult: dict, rank: int) -> dict:
    """A rank's side of the data path, in a process of its own: read its share, then pack
    one epoch of it. Counts every record the epoch packs, against the mixture's copies."""
    rss0, before = psutil.Process().memory_info().rss, private_and_shared()
    with PeakRSS() as peak:
        t0 = time.perf_counter()
        mine = read_share(share)
        read_s = time.perf_counter() - t0
        after_read = private_and_shared()
        arrays = (mine.tokens, mine.offsets, mine.n_prompt, mine.task, mine.key)
        held = sum(a.nbytes for a in arrays)
        stats = StreamStats()
        reps = np.bincount(epoch_order(mine, mult, cfg.data.seed, 0, rank), minlength=len(mine))
        want, seen, packed = int(reps.sum()), np.zeros(len(mine), dtype=np.int64), 0
        t0 = time.perf_counter()
        for batch in stream(mine, cfg, mult, rank, stats=stats):
            take = batch["records"][: want - packed]  # the next epoch's records come after
            np.add.at(seen, take, 1)
            packed += len(take)
            if packed == want:
                break
        pack_s = time.perf_counter() - t0
    return {
        "records": len(mine),
        "tokens": int(len(mine.tokens)),
        "epoch_records": want,
        "packed_as_mixed": bool(np.array_equal(seen, reps)),  # none lost, none twice
        "each_once": bool((reps == 1).all()),
        "read_s": round(read_s, 1),
        "pack_s": round(pack_s, 1),
        "rows": stats.rows,
        "share_mib": round(held / 2**20, 1),
        "share_bytes_per_record": round(held / max(len(mine), 1), 1),
        "rss_before_mib": round(rss0 / 2**20, 1),
        "peak_rss_mib": round(peak.driver, 1),
        "memory_before": before,
        "memory_after_read": after_read,
    }


def private_and_shared() -> dict:
    """This process' resident memory of its own (RssAnon) and shared memory it maps
    (RssShmem: the object store's pages), in MiB, from /proc/self/status; {} without it."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    names = {"private_mib": "RssAnon", "shared_mib": "RssShmem"}
    return {k: round(int(fields[v].split()[0]) / 1024, 1) for k, v in names.items() if v in fields}


def corpus_path(
    cfg: Config, records: int, files: int, world: int, store_mib: int = 0, words: int = 0
) -> dict:
    """The data path on a generated corpus (see the module's docstring); returns its figures."""
    cpus = os.cpu_count() or 1
    store = {"object_store_memory": store_mib * 2**20} if store_mib else {}
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, **store)
    folder = Path(tempfile.mkdtemp(prefix="ecomtrain-corpus-"))
    out: dict = {"records": records, "files": files, "world": world, "cpus": cpus}
    try:
        model_path = resolve_model(cfg.model)
        t0 = time.perf_counter()
        paths, bad = write_corpus(folder, records, files, words)
        out["write_s"] = round(time.perf_counter() - t0, 1)
        cfg.data.corpus, cfg.data.rejects = paths, str(folder / "rejects.jsonl")
        with PeakRSS() as peak:
            t0 = time.perf_counter()
            scan = scan_corpus(paths, cfg.data)
            log.info(check_scan(scan, cfg.data))
            seconds = time.perf_counter() - t0
        out["scan"] = {
            "seconds": round(seconds, 1),
            "records_per_s_per_core": round(records / seconds / cpus),
            "bad_found": scan["bad"],
            "bad_written": bad,
            "records_counted": scan["records"],
            "held_out": sum(t["eval"] for t in scan["tasks"].values()),
        } | peak.figures()
        with PeakRSS() as peak:
            t0 = time.perf_counter()
            shares, mult = train_dataset(cfg, model_path, [], world)
            seconds = time.perf_counter() - t0
        train = sum(t["train"] for t in scan["tasks"].values())
        out["tokenise_mix_share"] = {
            "seconds": round(seconds, 1),
            "records_per_s_per_core": round(train / seconds / cpus),
            "training_records": train,
        } | peak.figures()
        with PeakRSS() as peak:
            t0 = time.perf_counter()
            ranks = ray.get([pack_share.remote(s, cfg, mult, r) for r, s in enumerate(shares)])
            seconds = time.perf_counter() - t0
        packed = sum(r["records"] for r in ranks)
        out["read_and_pack"] = {
            "seconds": round(seconds, 1),
            "records_per_s_per_core": round(packed / seconds / min(cpus, world)),
            "records_in_shares": packed,
            "every_record_packed_as_mixed": all(r["packed_as_mixed"] for r in ranks),
            "every_record_once_per_epoch": all(r["each_once"] for r in ranks),
            "ranks": ranks,
        } | peak.figures()
        out["object_store_spilled"] = spilled()
    finally:
        ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
    return out


def spilled() -> str:
    """What the object store spilled to disk (Ray's memory summary line), "none", or "" if
    Ray would not say."""
    try:
        from ray._private.internal_api import memory_summary

        text = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    except Exception:  # an internal API: the figure is optional
        return ""
    return next((line.strip() for line in text.splitlines() if "Spilled" in line), "none")


SCALE_SPACE = [
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ecomtrain.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "which",
        choices=[
            "asha",
            "throughput",
            "ablation",
            "raytax",
            "mfu",
            "data",
            "eval",
            "scale",
            "corpus",
        ],
    )
    parser.add_argument(
        "--shape",
        choices=["tiny", *sorted(SHAPES)],
        help="mfu's model (default 1b); throughput's, ablation's and raytax's (default "
        "tiny: the configured model)",
    )
    parser.add_argument(
        "--steps", type=int, default=10, help="mfu's timed steps (ablation's micro-batches)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        help="data's world sizes (default 1 2 4 8); eval's (default 2)",
    )
    parser.add_argument(
        "--repeats", type=int, help="raytax's runs of each side (default 2); throughput's (1)"
    )
    parser.add_argument("--trials", type=int, default=500, help="scale's simulated trials")
    parser.add_argument("--gpus", type=int, default=64, help="scale's simulated GPUs")
    parser.add_argument("--nodes", type=int, default=4, help="scale's simulated GPU nodes")
    parser.add_argument("--step-s", type=float, default=1.0, help="scale's sleep per interval")
    parser.add_argument("--records", type=int, default=10_000_000, help="corpus' records")
    parser.add_argument("--files", type=int, default=100, help="corpus' files")
    parser.add_argument("--world", type=int, default=2, help="corpus' ranks")
    parser.add_argument(
        "--object-store-mib", type=int, default=0, help="corpus' object store (default: Ray's)"
    )
    parser.add_argument("--words", type=int, default=0, help="corpus' words added to inputs")
    parser.add_argument(
        "--grid", metavar="DIR", help="asha: replay a finished full-grid sweep's output"
    )
    parser.add_argument(
        "--matrix",
        nargs="?",
        const=",".join(MFU_DIMENSIONS),
        metavar="DIMS",
        help="mfu: a row per attention kernel x gradient checkpointing x torch.compile "
        "(or only the DIMS given, e.g. attn,checkpointing; the others as configured)",
    )
    parser.add_argument(
        "--device",
        choices=["cuda", "cpu"],
        default="cuda",
        help="mfu's (cpu: the same step, to check it; no MFU without a GPU's peak)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--config", help="YAML config (default: configs/demo.yaml)")
    parser.add_argument("overrides", nargs="*", help="a.b=c config overrides")
    console.add_arguments(parser)
    args = parser.parse_intermixed_args(argv)
    console.setup(args)
    if args.grid and args.which != "asha":
        parser.error("--grid is asha's")
    if args.matrix and "=" in args.matrix:  # `--matrix a.b=c`: an override, not dimensions
        args.overrides.append(args.matrix)
        args.matrix = ",".join(MFU_DIMENSIONS)
    if args.which == "mfu" and args.shape == "tiny":
        parser.error("mfu measures a GPU on a real model's shape: --shape 1b, 7b, ...")
    spaces = {
        "asha": ASHA_GRID + ASHA_RULE,
        "throughput": THROUGHPUT_SPACE,
        "raytax": RAYTAX_SPACE,
        "data": DATA_SPACE,
        "scale": SCALE_SPACE,
        "corpus": CORPUS_SPACE,
    }
    space = spaces.get(args.which, [])
    config = args.config or ("world.yaml" if args.which == "asha" else None)
    cfg = None if args.grid else load_config(config, space + args.overrides)
    if args.grid:
        try:
            figures = asha_replay(args.grid, args.overrides)
        except (ValueError, OSError) as e:  # not a finished grid's output (ConfigError too)
            print(f"error: {e}", file=sys.stderr)
            return 2
    elif args.which == "mfu" and args.matrix:
        try:
            variants = mfu_variants(cfg, args.matrix.split(","))
        except ConfigError as e:
            parser.error(str(e))
        figures = mfu_matrix(
            args.config, args.overrides, args.shape or "1b", args.steps, args.device, variants
        )
    elif args.which == "mfu":
        figures = mfu(cfg, args.shape or "1b", args.steps, device=args.device)
    elif args.which == "scale":
        figures = scale(cfg, args.trials, args.gpus, args.nodes, args.step_s)
    elif args.which == "corpus":
        figures = corpus_path(
            cfg, args.records, args.files, args.world, args.object_store_mib, args.words
        )
    else:
        connect(log_to_driver=console.verbose())
        if args.which == "data":
            figures = data_work(cfg, args.workers or [1, 2, 4, 8])
        elif args.which == "eval":
            figures = eval_work(cfg, max(args.workers or [2]))
        elif args.which == "ablation":
            figures = ablation(cfg, args.shape or "tiny", args.steps)
        elif args.which == "raytax":
            figures = raytax(cfg, args.shape or "tiny", args.repeats or 2)
        elif args.which == "asha":
            figures = asha_payoff(cfg)
        else:
            figures = throughput(cfg, args.shape or "tiny", args.repeats or 1)
    for key, value in figures.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):  # one per line
            for row in value:
                print("  ".join(f"{k} {v}" for k, v in row.items() if k != "trials"))
        else:
            print(f"{key:>26}: {value}")
    if args.json:
        atomic_write(args.json, json.dumps(figures, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
