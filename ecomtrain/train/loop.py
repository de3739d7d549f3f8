"""The per-worker training loop: shard -> step -> evaluate -> checkpoint -> report.

Read it top to bottom. Resuming is exact: a checkpoint holds the adapter, optimizer and
scheduler state of every rank, the step, and the loss history; the data stream is
deterministic, so a resumed run skips exactly the micro-batches already trained on.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import tempfile
import time
from pathlib import Path

import ray.train
import torch
import torch.distributed as dist

from ecomtrain.config import Config, from_dict
from ecomtrain.evaluate.answer import score_rows
from ecomtrain.model import load_model, load_tokenizer, training_model
from ecomtrain.train.engine import gathered, initialize, load_state, save_state, zero3_loading
from ecomtrain.train.inputs import model_inputs, packed_loss, to_device, training_attention

STATE_FILE = "ecomtrain_state.json"
EPOCH_CACHE_BYTES = 2**30  # a rank keeps a stream up to this size in memory (see striped)


def train_fn_per_worker(loop_config: dict) -> None:
    """Fine-tune a LoRA adapter with DeepSpeed on this worker's share of the stream."""
    cfg = from_dict(loop_config["cfg"])
    model_path, trial = loop_config["model_path"], loop_config["trial"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()

    torch.manual_seed(cfg.train.seed)
    tokenizer = load_tokenizer(model_path)
    zero3 = zero3_loading(cfg.train)  # noqa: F841  (must outlive the model)
    attn = training_attention(cfg.model.attn_implementation)
    base = load_model(model_path, attn, cfg.train.precision)
    model = training_model(base, cfg.lora, cfg.train.gradient_checkpointing)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    engine, schedule = initialize(model, cfg.train)
    device = engine.device

    state = restore(engine)  # {"step", "history"}; step 0 on a fresh start
    resumed = state["step"] > 0
    micro_done = state["step"] * cfg.train.grad_accum
    batches = striped(ray.train.get_dataset_shard("train"), cfg, rank, world, skip=micro_done)
    all_ranks_generate = cfg.train.zero_stage == 3  # ZeRO-3 forward passes are collective
    eval_rows = held_out_rows(cfg) if rank == 0 or all_ranks_generate else []
    extra_rows = loop_config.get("extra_eval", []) if eval_rows else []

    t0 = window_t0 = time.time()
    window_loss, window_steps, window_tokens = 0.0, 0, 0
    for step in range(state["step"] + 1, cfg.train.max_steps + 1):
        if step == cfg.train.inject_failure_at_step and rank == 1 and not resumed:
            os.kill(os.getpid(), signal.SIGKILL)  # fault injection for the resume test
        step_loss = torch.zeros((), device=device)
        for _ in range(cfg.train.grad_accum):
            batch = to_device(next(batches), device)
            loss = packed_loss(engine, **batch)
            engine.backward(loss)
            engine.step()  # DeepSpeed steps the optimizer on accumulation boundaries only
            step_loss += loss.detach() / cfg.train.grad_accum
            window_tokens += len(batch["targets"])  # supervised tokens
        loss_value = mean_over_ranks(step_loss, world)
        if not torch.isfinite(torch.tensor(loss_value)):
            raise FloatingPointError(f"trial {trial['name']}: non-finite loss at step {step}")
        state["history"].append([step, loss_value])
        window_loss, window_steps = window_loss + loss_value, window_steps + 1

        last = step == cfg.train.max_steps
        evaluate = last or (cfg.train.eval_every > 0 and step % cfg.train.eval_every == 0)
        if not (evaluate or step % cfg.train.log_every == 0):
            continue
        metrics = {
            "step": step,
            "loss": window_loss / window_steps,  # mean since the last report
            "lr": schedule.get_last_lr()[0],
            "tokens_per_s": window_tokens * world / (time.time() - window_t0),
            "step_s": (time.time() - window_t0) / window_steps,
            "peak_memory_gib": peak_memory_gib(device, world),  # the largest rank's
            "trainable_params": trainable,
            "elapsed_s": time.time() - t0,
        }
        checkpoint = None
        if evaluate:
            if eval_rows:
                metrics |= evaluate_adapter(engine.module, tokenizer, eval_rows, cfg)
            if extra_rows:
                extra = evaluate_adapter(engine.module, tokenizer, extra_rows, cfg)
                metrics |= {f"extra/{k}": v for k, v in extra.items()}
            mixture = trial.get("mixture", {})  # diversity of what this run trains on
            metrics |= {f"mixture/{k}": v for k, v in mixture.items()}
            metrics["task_entropy"] = mixture.get("task_entropy", float("nan"))
            state["step"] = step
            checkpoint = save_checkpoint(engine, tokenizer, trial, state, rank)
        ray.train.report(metrics, checkpoint=checkpoint)
        window_loss, window_steps, window_tokens, window_t0 = 0.0, 0, 0, time.time()


def striped(shard, cfg: Config, rank: int, world: int, skip: int):
    """Endless model-ready micro-batches: rank r takes batch r of every group of `world`.

    Every rank reads the same deterministic stream, so all ranks take the same number of
    steps (a trailing partial group is dropped by all) and a resumed run can skip exactly
    `skip` micro-batches. Every epoch is the same stream, so a rank keeps its share of
    it in memory, model-ready (up to EPOCH_CACHE_BYTES of packed rows), rather than
    reading and preparing it again each epoch.
    """
    seen, kept, room = 0, None, EPOCH_CACHE_BYTES
    while True:
        fresh, epoch, n = kept is None, [], 0
        for batch in read_share(shard, cfg, rank, world) if fresh else kept:
            if fresh:
                room -= batch_bytes(batch)
                batch = model_inputs(batch, cfg.model.attn_implementation)
                if room >= 0:
                    epoch.append(batch)
            if seen >= skip:
                yield batch
            seen, n = seen + 1, n + 1
        if n == 0:
            raise RuntimeError(f"rank {rank}: the training stream holds no full step")
        if fresh and room >= 0:
            kept = epoch  # else every epoch is read from the object store again


def batch_bytes(batch: dict) -> int:
    return sum(v.nbytes for v in batch.values())


def read_share(shard, cfg: Config, rank: int, world: int):
    """This rank's micro-batches of one epoch of the stream."""
    group = []
    for batch in shard.iter_torch_batches(batch_size=cfg.train.micro_batch_size, drop_last=True):
        group.append(batch)
        if len(group) == world:
            yield {k: group[rank][k] for k in ("input_ids", "labels", "segment_ids")}
            group = []


def held_out_rows(cfg: Config) -> list[dict]:
    """The trial's held-out rows, capped per task, in a fixed order."""
    rows = list(ray.train.get_dataset_shard("eval").iter_rows())
    rows.sort(key=lambda r: (r["task_family"], r["input"]))
    kept, per_task = [], {}
    for r in rows:
        per_task[r["task_family"]] = per_task.get(r["task_family"], 0) + 1
        if per_task[r["task_family"]] <= cfg.data.max_eval_per_task:
            kept.append(r)
    return kept


def evaluate_adapter(model, tokenizer, rows: list[dict], cfg: Config) -> dict:
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


def save_checkpoint(engine, tokenizer, trial: dict, state: dict, rank: int):
    """Every rank saves its DeepSpeed state; rank 0 adds the PEFT adapter (safetensors),
    the tokenizer, the trial's metadata and the loss history. Ray merges the ranks' files."""
    path = Path(tempfile.mkdtemp(prefix="ecomtrain-ckpt-"))
    save_state(engine, str(path), client_state={"step": state["step"]})
    with gathered(engine):
        if rank == 0:
            engine.module.save_pretrained(path)
    if rank == 0:
        tokenizer.save_pretrained(path)
        (path / "ecomtrain_trial.json").write_text(json.dumps(trial, indent=1))
        (path / STATE_FILE).write_text(json.dumps(state))
    return ray.train.Checkpoint.from_directory(str(path))


def restore(engine) -> dict:
    """State of the latest checkpoint after a failure or a resumed sweep, else a fresh one."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return {"step": 0, "history": [], "starts": [0]}
    with checkpoint.as_directory() as path:
        load_state(engine, path)
        state = json.loads((Path(path) / STATE_FILE).read_text())
    state["starts"] = [*state.get("starts", [0]), state["step"]]  # where each attempt began
    return state


def peak_memory_gib(device: torch.device, world: int) -> float:
    """Peak memory of the largest rank: GPU memory allocated, or on CPU the peak RSS of
    the worker process (every rank must call this)."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    value = torch.tensor(float(peak), device=device)
    if world > 1:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return float(value) / 2**30


def mean_over_ranks(value: torch.Tensor, world: int) -> float:
    """Average a scalar over the process group (every rank must call this)."""
    value = value.detach().float().clone()
    if world > 1:
        dist.all_reduce(value)
    return float(value) / world
