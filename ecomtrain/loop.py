"""The per-worker training loop: shard -> step -> evaluate -> report. Read it top to bottom."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import ray.train
import torch
import torch.distributed as dist

from ecomtrain.config import from_dict
from ecomtrain.data import model_inputs
from ecomtrain.engine import initialize
from ecomtrain.generation import score_rows
from ecomtrain.model import add_lora, load_model, load_tokenizer


def train_fn_per_worker(loop_config: dict) -> None:
    """Fine-tune a LoRA adapter with DeepSpeed on this worker's shard; rank 0 evaluates."""
    cfg = from_dict(loop_config["cfg"])
    model_path, trial = loop_config["model_path"], loop_config["trial"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()

    torch.manual_seed(cfg.train.seed)
    tokenizer = load_tokenizer(model_path)
    model = add_lora(load_model(model_path), cfg.lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    engine, _, schedule = initialize(model, cfg.train, world)
    device = engine.device

    batches = cycle(ray.train.get_dataset_shard("train"), cfg.train.micro_batch_size)
    eval_rows = held_out_rows(cfg) if rank == 0 else []

    t0 = window_t0 = time.time()
    window_loss, window_steps, window_tokens = torch.zeros((), device=device), 0, 0
    for step in range(1, cfg.train.max_steps + 1):
        step_loss = torch.zeros((), device=device)
        for _ in range(cfg.train.grad_accum):
            batch = {k: v.to(device) for k, v in next(batches).items()}
            loss = engine(**batch).loss
            engine.backward(loss)
            engine.step()  # DeepSpeed steps the optimizer on accumulation boundaries only
            step_loss += loss.detach() / cfg.train.grad_accum
            window_tokens += int((batch["labels"] != -100).sum())
        if not torch.isfinite(step_loss):
            raise FloatingPointError(f"trial {trial['name']}: non-finite loss at step {step}")
        window_loss, window_steps = window_loss + step_loss, window_steps + 1

        last = step == cfg.train.max_steps
        evaluate = last or (cfg.train.eval_every > 0 and step % cfg.train.eval_every == 0)
        if not (evaluate or step % cfg.train.log_every == 0):
            continue
        metrics = {
            "step": step,
            "loss": mean_over_ranks(window_loss / window_steps, world),  # mean since last report
            "lr": schedule.get_last_lr()[0],
            "tokens_per_s": window_tokens * world / (time.time() - window_t0),
            "trainable_params": trainable,
            "elapsed_s": time.time() - t0,
        }
        checkpoint = None
        if evaluate and rank == 0:
            metrics |= evaluate_adapter(engine.module, tokenizer, eval_rows, cfg)
        if evaluate:
            checkpoint = save_adapter(engine.module, tokenizer, trial, step, rank)
        ray.train.report(metrics, checkpoint=checkpoint)
        window_loss, window_steps, window_tokens = torch.zeros((), device=device), 0, 0
        window_t0 = time.time()


def cycle(shard, batch_size: int):
    """Endless model-ready micro-batches of a shard, epoch after epoch.

    Every rank's shard holds the same number of rows (Ray splits with equal=True) and
    partial batches are dropped, so all ranks take the same number of steps.
    """
    while True:
        for batch in shard.iter_torch_batches(batch_size=batch_size, drop_last=True):
            yield model_inputs(batch)


def held_out_rows(cfg) -> list[dict]:
    """The trial's held-out rows, capped per task, in a fixed order."""
    rows = list(ray.train.get_dataset_shard("eval").iter_rows())
    rows.sort(key=lambda r: (r["task_family"], r["input"]))
    kept, per_task = [], {}
    for r in rows:
        per_task[r["task_family"]] = per_task.get(r["task_family"], 0) + 1
        if per_task[r["task_family"]] <= cfg.data.max_eval_per_task:
            kept.append(r)
    return kept


def evaluate_adapter(model, tokenizer, rows: list[dict], cfg) -> dict:
    """Flat ShopBench metrics: score, track/<name>, task/<name>."""
    t = time.time()
    result, _ = score_rows(
        model, tokenizer, rows, cfg.eval.max_new_tokens, cfg.eval.batch_size, cfg.eval.prompt_prefix
    )
    model.train()
    flat = {"score": result["overall"], "eval_records": len(rows), "eval_s": time.time() - t}
    flat |= {f"track/{k}": v for k, v in result["tracks"].items()}
    flat |= {f"task/{k}": v["score"] for k, v in result["tasks"].items()}
    return flat


def save_adapter(model, tokenizer, trial: dict, step: int, rank: int):
    """Rank 0 writes the PEFT adapter (safetensors) and trial metadata; others return None."""
    if rank != 0:
        return None
    path = Path(tempfile.mkdtemp(prefix="ecomtrain-ckpt-"))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "ecomtrain_trial.json").write_text(json.dumps({**trial, "step": step}, indent=1))
    return ray.train.Checkpoint.from_directory(str(path))


def mean_over_ranks(value: torch.Tensor, world: int) -> float:
    """Average a scalar over the process group (every rank must call this)."""
    value = value.detach().float().clone()
    if world > 1:
        dist.all_reduce(value)
    return float(value) / world
