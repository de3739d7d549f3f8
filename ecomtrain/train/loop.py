"""The per-worker training loop: share -> step -> evaluate -> checkpoint -> report.

Read it top to bottom. The objective is the mean token loss over every supervised token
of an optimizer step, on every rank and accumulation step alike, so it does not change
with `num_workers` or `grad_accum`. Resuming is exact: a checkpoint holds the adapter,
optimizer and scheduler state and the random number generators of every rank, the step
and the loss history; the data stream is deterministic, so a resumed run skips exactly
the micro-batches already trained on. A step takes `grad_accum` micro-batches from each of
the trial's shares (one per worker of its largest world) and seeds each one's dropout by
(seed, step, share), so an elastic run that resumes with fewer or more workers trains
every step on the same records, tokens and masks (`shares_of`, `step_batches`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import ray.train
import torch
import torch.distributed as dist

from ecomtrain.config import Config
from ecomtrain.data.shard import Share, StreamStats, read_share, stream
from ecomtrain.evaluate.answer import EXTRA_SCORES_FILE, SCORES_FILE, evaluate_rows, predictions
from ecomtrain.experts import UNROUTED
from ecomtrain.model import load_model, load_tokenizer, save_adapter, training_model
from ecomtrain.train.engine import gathered, initialize, load_state, save_state, zero3_loading
from ecomtrain.train.inputs import model_inputs, packed_loss, to_device, training_attention
from ecomtrain.train.trial import TRIAL_FILE, TrialInputs, TrialMeta

log = logging.getLogger(__name__)

STATE_FILE = "ecomtrain_state.json"  # the loop's `LoopState`, as JSON
RNG_FILE = "rng_rank{rank}.pt"  # every rank's random number generators, in each checkpoint
HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"  # how often Ray Train's controller
HEALTH_CHECK_DEFAULT_S = 2.0  # polls the workers (Ray's default; train.driver.fit sets 0.5)


def train_fn_per_worker(config: dict) -> None:
    """Fine-tune a LoRA adapter with DeepSpeed on this worker's shares of the records
    (`config["inputs"]`: the run's TrialInputs)."""
    train_loop(config["inputs"], RayTrainRun())


class RayTrainRun:
    """Where the loop meets Ray Train: this worker's rank, its shares (Ray Data), the latest
    checkpoint and the reports. `bench raytax` runs the same loop as plain torch.distributed
    processes through another object with these members."""

    def __init__(self):
        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        # Ray Train takes a worker's reports one per poll of its controller, and a report
        # waits while the one before is not taken: reporting more often than the polls
        # would stall training (docs/benchmarks.md, "raytax"). Training metrics are
        # reported no more often; their window runs on to the next log step.
        self.report_gap_s = float(os.environ.get(HEALTH_CHECK_ENV, HEALTH_CHECK_DEFAULT_S))

    def share(self, i: int) -> Share:
        return read_share(ray.train.get_dataset_shard(f"train_{i}"))

    def checkpoint(self):
        """The latest checkpoint as a context giving a local folder, or None."""
        checkpoint = ray.train.get_checkpoint()
        return None if checkpoint is None else checkpoint.as_directory()

    def report(self, metrics: dict, checkpoint: str | None = None) -> None:
        """Report `metrics`, with the folder `checkpoint` (every rank's) when given: Ray
        Train copies it into the run's storage before this returns."""
        saved = None if checkpoint is None else ray.train.Checkpoint.from_directory(checkpoint)
        ray.train.report(metrics, checkpoint=saved)


def train_loop(inputs: TrialInputs, run) -> None:
    """The loop, on this process's rank of `run` (RayTrainRun or a stand-in)."""
    cfg, trial = inputs.cfg, inputs.trial
    rank, world_size = run.rank, run.world_size
    mine = shares_of(rank, world_size, cfg.train.num_workers)
    # Each step takes grad_accum micro-batches from every share, whatever the world size;
    # a rank with fewer shares than another pads with zero-weight repeats (step_batches).
    per_rank = -(-cfg.train.num_workers // world_size) * cfg.train.grad_accum

    torch.manual_seed(cfg.train.seed)
    tokenizer = load_tokenizer(inputs.model_path)
    zero3 = zero3_loading(cfg.train)  # noqa: F841  (must outlive the model)
    attn = training_attention(cfg.model.attn_implementation)
    base = load_model(inputs.model_path, attn, cfg.train.precision, cfg.model.quantization)
    routes = trial.routes  # the experts of a label-routed adapter (ecomtrain.experts)
    model = training_model(base, cfg.lora, cfg.train.gradient_checkpointing, routes)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    engine, schedule = initialize(model, dataclasses.replace(cfg.train, grad_accum=per_rank))
    device = engine.device

    state = restore(engine, run)  # step 0 on a fresh start
    if state.step >= cfg.train.max_steps:
        # Resumed after its last checkpoint but perhaps before the sweep recorded the report
        # that came with it (the driver lost in between): that report again, so the trial
        # ends with its score and checkpoint whatever was recorded.
        with run.checkpoint() as path:
            run.report(state.report or {"step": state.step}, path if rank == 0 else None)
        return
    if rank == 0 and world_size < cfg.train.num_workers:
        log.info(
            f"elastic: {world_size} of {cfg.train.num_workers} workers from step {state.step}; "
            f"rank 0 trains shares {mine}, {per_rank} micro-batches a step"
        )
    data = StreamStats()  # of this rank's first share
    micro_done = state.step * cfg.train.grad_accum
    streams = []
    for i in mine:
        share = run.share(i)
        batches = stream(share, cfg, inputs.mult, i, micro_done, data if i == rank else None)
        streams.append((i, share, batches))
    # Every rank evaluates: its share of the batches, exchanged (about 1 / world_size of the
    # time); under ZeRO-3, whose forward passes are collective, every batch on every rank.
    eval_share = (0, 1) if cfg.train.zero_stage == 3 else (rank, world_size)
    eval_rows, extra_rows = inputs.held_out, inputs.extra_eval
    scored: dict[str, list] = {}  # per-record scores of the last evaluation, by file name

    t0 = window_t0 = time.time()
    window_loss, window_steps, window_tokens = 0.0, 0, 0
    for step in range(state.step + 1, cfg.train.max_steps + 1):
        micro, ledger = step_batches(streams, cfg, step, routes, per_rank)
        micro = [dataclasses.replace(m, inputs=to_device(m.inputs, device)) for m in micro]
        loss_value, tokens = optimizer_step(engine, micro, world_size)
        if not np.isfinite(loss_value):
            raise FloatingPointError(f"trial {trial.name}: non-finite loss at step {step}")
        state.history.append([step, loss_value])
        state.clock.append([step, round(time.time(), 3)])  # its end, Unix time
        # Rank 0 says whether a report is due (see RayTrainRun.report_gap_s); the flag
        # rides on the ledger's all-reduce, so every rank decides alike at no extra cost.
        due = rank == 0 and time.time() - window_t0 >= run.report_gap_s
        records, digest, due = sum_over_ranks([*ledger, float(due)], world_size, device)
        state.ledger.append([step, int(records), int(digest) % DIGEST_MOD])
        window_loss, window_steps = window_loss + loss_value, window_steps + 1
        window_tokens += tokens

        last = step == cfg.train.max_steps
        evaluate = last or (cfg.train.eval_every > 0 and step % cfg.train.eval_every == 0)
        if not (evaluate or (step % cfg.train.log_every == 0 and due)):
            continue
        metrics = {
            "step": step,
            "loss": window_loss / window_steps,  # mean since the last report
            "lr": schedule.get_last_lr()[0],
            "tokens_per_s": window_tokens / (time.time() - window_t0),  # supervised, all ranks
            "step_s": (time.time() - window_t0) / window_steps,
            "window_steps": window_steps,  # the steps these means cover
            "peak_memory_gib": peak_memory_gib(device, world_size),  # the largest rank's
            "trainable_params": trainable,
            "elapsed_s": time.time() - t0,
            "epoch": data.epochs,  # epochs of its share rank 0 has begun
            "packing_efficiency": data.packing_efficiency,
        }
        if not evaluate:
            run.report(metrics)
        else:
            if eval_rows:
                held, scored[SCORES_FILE] = score_adapter(
                    engine.module, tokenizer, eval_rows, cfg, trial, eval_share
                )
                metrics |= held
                # sample answers for W&B's predictions table (tracking.predictions_table)
                metrics["predictions"] = predictions(
                    eval_rows, scored[SCORES_FILE], cfg.eval.predictions
                )
            if extra_rows:  # ShopBench's own generation budget on the extra files
                budget = dataclasses.replace(cfg.eval, max_new_tokens=cfg.eval.extra_max_new_tokens)
                extra, scored[EXTRA_SCORES_FILE] = score_adapter(
                    engine.module,
                    tokenizer,
                    extra_rows,
                    dataclasses.replace(cfg, eval=budget),
                    trial,
                    eval_share,
                )
                metrics |= {f"extra/{k}": v for k, v in extra.items()}
            mixture = trial.mixture  # diversity of what this run trains on
            metrics |= {f"mixture/{k}": v for k, v in mixture.items()}
            metrics["task_entropy"] = mixture.get("task_entropy", float("nan"))
            state.step, state.report = step, metrics  # the report, for a resume at the end
            with tempfile.TemporaryDirectory(prefix="ecomtrain-ckpt-") as path:
                save_checkpoint(Path(path), engine, tokenizer, trial, state, rank, scored)
                run.report(metrics, checkpoint=path)
        window_loss, window_steps, window_tokens, window_t0 = 0.0, 0, 0, time.time()


def shares_of(rank: int, world_size: int, shares: int) -> list[int]:
    """The shares rank `rank` of `world_size` ranks trains on. A trial's records are cut into
    one share per worker of its largest world (train.num_workers); fewer workers (elastic)
    deal the shares out round-robin, so a step trains on the same records at any world size."""
    return list(range(rank, shares, world_size))


@dataclasses.dataclass
class Micro:
    """One micro-batch of a step: model inputs, its weight in the step's loss (0 for a
    rank's padding) and the seed of its dropout masks."""

    inputs: dict
    weight: float = 1.0
    seed: int = 0


DIGEST_MOD = 2**31 - 1  # a step's records digest: sum of their source keys modulo this prime


def step_batches(streams: list, cfg: Config, step: int, routes: dict | None, per_rank: int):
    """This rank's micro-batches of one optimizer step: `grad_accum` from each of its shares
    (`streams`: (share index, share, stream)), then zero-weight repeats up to `per_rank`, so
    every rank runs as many (DeepSpeed's collectives). Each micro-batch's dropout seed
    follows (train.seed, step, share, micro-batch): the same masks at any world size.
    Also returns [records, digest] of the records trained (the state's ledger)."""
    micro, records, digest = [], 0, 0
    for i, share, batches in streams:
        for j in range(cfg.train.grad_accum):
            batch = next(batches)
            keys = share.key[batch["records"]]
            records, digest = records + len(keys), digest + int((keys % DIGEST_MOD).sum())
            seed = int(np.random.SeedSequence([cfg.train.seed, step, i, j]).generate_state(1)[0])
            micro.append(
                Micro(inputs(batch, cfg.model.attn_implementation, share, routes), 1.0, seed)
            )
    padding = [Micro(m.inputs, 0.0, m.seed) for m in micro[: per_rank - len(micro)]]
    return micro + padding, [records, digest % DIGEST_MOD]


def inputs(batch: dict, attn_implementation: str, share: Share, routes: dict | None) -> dict:
    """A micro-batch of the stream (numpy) as model inputs; with a label-routed adapter,
    each record's expert by its task family (`routes["of_family"]`)."""
    rows = {k: torch.from_numpy(batch[k]) for k in ("input_ids", "labels", "segment_ids")}
    record_routes = None
    if routes:
        expert = np.array([routes["of_family"].get(t, UNROUTED) for t in share.tasks])
        record_routes = torch.from_numpy(expert[share.task[batch["records"]]])
    return model_inputs(rows, attn_implementation, record_routes)


def optimizer_step(engine, micro_batches: list[Micro], world_size: int) -> tuple[float, int]:
    """One optimizer step over this rank's micro-batches (model inputs on the device).

    Its gradient is that of the summed token loss over every supervised token of the step,
    on every rank, divided by their number: each token weighs the same whatever micro-batch
    or rank it falls in (a zero-weight micro-batch adds nothing). DeepSpeed averages
    gradients over ranks, hence the factor `world_size`; its own division by the accumulation
    steps is turned off. Returns the step's mean token loss and its supervised tokens (both
    over all ranks); every rank must call this."""
    local = sum(len(m.inputs["targets"]) * m.weight for m in micro_batches)
    (total,) = sum_over_ranks([local], world_size, engine.device)
    loss_sum = torch.zeros((), device=engine.device)
    for m in micro_batches:
        torch.manual_seed(m.seed)
        loss = packed_loss(engine, **m.inputs)
        engine.backward(loss * (m.weight * world_size / max(total, 1.0)), scale_wrt_gas=False)
        engine.step()  # DeepSpeed steps the optimizer on accumulation boundaries only
        loss_sum += m.weight * loss.detach()
    (loss_total,) = sum_over_ranks([loss_sum], world_size, engine.device)
    return loss_total / max(total, 1.0), int(total)


def score_adapter(
    model, tokenizer, rows: list[dict], cfg: Config, trial: TrialMeta, share: tuple[int, int]
) -> tuple:
    """Flat metrics and per-record scores of the adapter (see evaluate.answer.evaluate_rows;
    `share`: this rank's part of the batches, every rank calls it). A model compiled for
    training (train.compile) runs eagerly here: each batch's shapes would compile anew."""
    with torch.compiler.set_stance("force_eager"):
        metrics, entries = evaluate_rows(model, tokenizer, rows, cfg, trial.tasks, share)
    model.train()
    return metrics, entries


def save_checkpoint(
    path: Path, engine, tokenizer, trial: TrialMeta, state: LoopState, rank: int, scored: dict
):
    """Every rank saves its DeepSpeed state and random number generators into `path`; rank 0
    adds the PEFT adapter (safetensors), the tokenizer, the trial's metadata, the loss
    history and the evaluation's per-record scores (JSON Lines). Ray Train merges the ranks'
    folders into one checkpoint."""
    save_state(engine, str(path), client_state={"step": state.step})
    torch.save(rng_state(), path / RNG_FILE.format(rank=rank))
    with gathered(engine):
        if rank == 0:
            save_adapter(engine.module, path)
    if rank == 0:
        tokenizer.save_pretrained(path)
        (path / TRIAL_FILE).write_text(json.dumps(trial.as_dict(), indent=1))
        (path / STATE_FILE).write_text(state.to_json())
        for name, entries in scored.items():
            (path / name).write_text("".join(json.dumps(e) + "\n" for e in entries))


@dataclasses.dataclass
class LoopState:
    """Where a run stands: saved in every checkpoint (STATE_FILE), restored on a resume."""

    step: int = 0  # the last step trained
    history: list = dataclasses.field(default_factory=list)  # [step, loss]
    # [step, records, digest of their keys]: the same at any world size
    ledger: list = dataclasses.field(default_factory=list)
    clock: list = dataclasses.field(default_factory=list)  # [step, Unix time at its end]
    starts: list[int] = dataclasses.field(default_factory=lambda: [0])  # each attempt's step
    workers: list[int] = dataclasses.field(default_factory=list)  # each attempt's world size
    report: dict | None = None  # the last evaluation's report (a resume at max_steps sends it)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LoopState:
        saved = json.loads(text)
        return cls(**{f.name: saved[f.name] for f in dataclasses.fields(cls) if f.name in saved})


def restore(engine, run) -> LoopState:
    """The state of the latest checkpoint after a failure or a resumed sweep, else a fresh
    one, with this attempt's start and world size added. This rank's random number
    generators continue where they were (a rank the checkpoint's world lacked keeps its own:
    dropout is reseeded per micro-batch, step_batches)."""
    checkpoint = run.checkpoint()
    if checkpoint is None:
        return LoopState(workers=[run.world_size])
    with checkpoint as path:
        load_state(engine, path)
        state = LoopState.from_json((Path(path) / STATE_FILE).read_text())
        rng = Path(path) / RNG_FILE.format(rank=run.rank)
        if rng.exists():
            set_rng_state(torch.load(rng, weights_only=True))
    state.starts.append(state.step)  # where each attempt began
    state.workers.append(run.world_size)  # and with how many workers
    return state


def rng_state() -> dict:
    """Python's, numpy's and torch's (CPU and CUDA) random number generator states."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.copy()), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def peak_memory_gib(device: torch.device, world_size: int) -> float:
    """Peak memory of the largest rank: GPU memory allocated, or on CPU the peak RSS of
    the worker process (every rank must call this)."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    value = torch.tensor(float(peak), device=device)
    if world_size > 1:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return float(value) / 2**30


def sum_over_ranks(values: list, world_size: int, device: torch.device) -> list[float]:
    """Sum scalars (numbers or 0-d tensors) over the process group, in float64 (exact for
    integers below 2**53); every rank must call this."""
    value = torch.stack([torch.as_tensor(v, device=device).detach().double() for v in values])
    if world_size > 1:
        dist.all_reduce(value)
    return value.tolist()
