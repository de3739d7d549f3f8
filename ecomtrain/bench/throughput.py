"""`throughput` trains the configured model on the configured corpus with ecomtrain's trial
(packed rows, DeepSpeed, Ray Train) and with HF Trainer + PEFT under DDP (Ray Train's
workers, as many as `train.num_workers`, with the same CPUs or GPUs each), the strongest
correct configuration its user would pick: padded batches grouped by length
(`train_sampling_strategy="group_by_length"`), and HF's padding-free collator as a second
baseline where it is correct for the attention kernel (checked on the model: a flattened
batch's logits against each record's alone; with sdpa in transformers 5.24 it attends across
records, so it is reported and not run). Same model, records, LoRA, precision, learning rate,
steps and gradient accumulation; HF's batch size in records is chosen so that its supervised
tokens per optimizer step match ecomtrain's in expectation, to half a record per micro-batch
(`hf_expected_tokens_per_step`, from the records' mean; a window's own records, grouped by
length, hold more or fewer). Both are timed over the same window, the last
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
CPU rates vary from run to run, so a single run's ratio has no interval. The order alternates
from pair to pair, HF first in the first (each run's `order`): a side that ran second in
every pair would meet warm caches, or a machine busier by then, every time; an even N gives
each side the lead equally often.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import ray
import ray.train
import torch
import torch.distributed as dist
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from transformers import (
    DataCollatorForSeq2Seq,
    DataCollatorWithFlattening,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from ecomtrain import console
from ecomtrain.bench.measure import ratio_interval
from ecomtrain.bench.models import SHAPES, head_share, shape_model
from ecomtrain.config import Config
from ecomtrain.connect import connect
from ecomtrain.data.packing import IGNORE
from ecomtrain.data.share import read_share, stream
from ecomtrain.model import add_lora, load_model, load_tokenizer
from ecomtrain.tasks import CAPABILITIES
from ecomtrain.train.driver import fit, prepare, trial_inputs
from ecomtrain.train.loop import HEALTH_CHECK_ENV
from ecomtrain.train.trial import Prepared, TrialMeta

SPACE = [
    "train.eval_every=0",
    # 100 steps of warm-up, then the timed window: the last 100 (a window of a few steps
    # lasts too short a time at the tiny shape to time; real shapes take far longer steps
    # and fewer of them: docs/benchmarks.md, "throughput")
    "train.max_steps=200",
    "train.log_every=100",
    "data.max_eval_per_task=1",  # the run's closing evaluation is not timed: keep it short
]
FLAT_TOLERANCE = 1e-3  # logits of a flattened batch against each record alone


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
    cfg = config["cfg"]
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
            "cfg": cfg,
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


def ecomtrain_window(
    cfg: Config, meta: TrialMeta, prepared: Prepared, window: int, covered: int
) -> dict:
    """ecomtrain's trial, its checkpoints in a temporary folder: the metrics of its last
    report, which must cover the timed window and the supervised tokens of its replay."""
    with tempfile.TemporaryDirectory(prefix="ecomtrain-bench-") as storage:
        ours = fit(cfg, meta, storage, prepared=prepared).metrics
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
    return ours


def throughput(cfg: Config, shape: str = "tiny", repeats: int = 1) -> dict:
    """Supervised tokens/s over the same timed window: ecomtrain's trial (packed, DeepSpeed,
    Ray Train) against HF Trainer + PEFT under DDP with the same workers, records, LoRA,
    precision, steps and supervised tokens per optimizer step (its batch size in records
    chosen to match ecomtrain's tokens), padded and grouped by length, and padding-free
    where that is correct for the attention kernel (see the module doc); `repeats` times,
    each side once a repeat, back to back, the order alternating (HF first, then
    ecomtrain first, ...)."""
    model_path = shape_model(cfg, shape)
    cfg.model.name_or_path = model_path
    meta = TrialMeta.of("bench", "all", cfg.data.tasks or list(CAPABILITIES), cfg)
    prepared = prepare(cfg, Prepared(model_path, held_out=[]))  # no evaluation
    # Ray Train's controller polls often enough to take the report at the warm-up's end
    # (the loop reports no more often than the polls: loop.RayTrainRun.report_gap_s).
    os.environ.setdefault(HEALTH_CHECK_ENV, "0.1")
    window = cfg.train.log_every  # ecomtrain's last report covers exactly these steps
    inputs, datasets = trial_inputs(cfg, meta, prepared)  # the shares fit trains on
    shares, mult = [read_share(d) for d in datasets], inputs.mult
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
    # HF's batch: its expected supervised tokens a step (records' mean) nearest ecomtrain's,
    # which the replay gives exactly (each run checks its own window against it)
    per_step, micro = covered / window, cfg.train.num_workers * cfg.train.grad_accum
    mean_record = all_supervised / len(rows)
    batch = max(1, round(per_step / micro / mean_record))
    out |= {
        "ecomtrain_tokens_per_step": round(per_step, 1),
        "hf_batch_records": batch,
        "hf_expected_tokens_per_step": round(batch * micro * mean_record, 1),
    }
    runs = []
    for r in range(repeats):
        order = [*baselines, "ecomtrain"] if r % 2 == 0 else ["ecomtrain", *baselines]
        hf = {}
        for side in order:
            if side == "ecomtrain":
                ours = ecomtrain_window(cfg, meta, prepared, window, covered)
            else:
                hf[side] = hf_trainer_window(cfg, model_path, rows, batch, baselines[side])
        ours_s = window * ours["step_s"]
        run = {"run": r, "order": order, "ecomtrain_tokens_per_s": round(ours["tokens_per_s"], 1)}
        for name, (tokens, hf_processed, seconds, passes) in hf.items():
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shape", choices=["tiny", *sorted(SHAPES)], default="tiny", help="the model's shape"
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side")


def run(args: argparse.Namespace, config) -> dict:
    connect(log_to_driver=console.verbose())
    return throughput(config(), args.shape, args.repeats)
