"""The per-worker training loop: share -> step -> evaluate -> checkpoint -> report.

Read it top to bottom. The objective is the mean token loss over every supervised token
of an optimizer step, on every rank and accumulation step alike, so it does not change
with `num_workers` or `grad_accum`. A step takes `grad_accum` micro-batches from each of
the trial's shares (one per worker of its largest world) and seeds every random draw of
each one's forward pass (dropout) by (seed, step, share, micro-batch), so an elastic run
that resumes with fewer or more workers trains every step on the same records, tokens and
masks (`shares_of`, `step_batches`).

What makes a resume exact, and nothing else: the checkpoint's DeepSpeed state (adapter,
optimizer, scheduler) and step; the data stream, deterministic, which a resumed run
replays past the micro-batches already trained on; and those per-micro-batch seeds, which
leave no step depending on the random generators' state before it (tests/
test_train_objective.py checks a step is the same bit for bit whatever they held). The
fault tests assert each resumed step's loss within 1e-5 of an undisturbed run's
(tests/test_train_fault.py).

A run trains one adapter, a `Member`; a pack of trials (ecomtrain.train.pack) trains
several over one copy of the base, each step every member's optimizer step in turn, each
member with all of the above of its own; one report carries every member's metrics, and
one checkpoint a folder per member.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import ray.train
import torch
import torch.distributed as dist

from ecomtrain.config import Config
from ecomtrain.data.share import Share, StreamStats, read_share, stream
from ecomtrain.evaluate.answer import EXTRA_SCORES_FILE, SCORES_FILE, evaluate_rows, predictions
from ecomtrain.experts import UNROUTED
from ecomtrain.files import is_uri
from ecomtrain.model import (
    load_model,
    load_tokenizer,
    save_adapter,
    trainable_count,
    training_model,
)
from ecomtrain.train.engine import gathered, initialize, load_state, save_state, zero3_loading
from ecomtrain.train.inputs import model_inputs, packed_loss, to_device, training_attention
from ecomtrain.train.pack import MemberRun, member_trees, read_pack_file, write_pack_file
from ecomtrain.train.trial import STATE_FILE, TRIAL_FILE, PackInputs, TrialInputs, TrialMeta

log = logging.getLogger(__name__)

HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"  # how often Ray Train's controller
HEALTH_CHECK_DEFAULT_S = 2.0  # polls the workers (Ray's default; train.driver.fit sets 0.5)


def train_fn_per_worker(config: dict) -> None:
    """Fine-tune LoRA adapters with DeepSpeed on this worker's shares of the records
    (`config["inputs"]`: the run's TrialInputs, or a pack's PackInputs)."""
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

    def share(self, i: int, member: int | None = None) -> Share:
        return read_share(ray.train.get_dataset_shard(share_name(i, member)))

    def checkpoint(self):
        """The latest checkpoint as a context giving a local folder, or None."""
        checkpoint = ray.train.get_checkpoint()
        return None if checkpoint is None else checkpoint.as_directory()

    def report(self, metrics: dict, checkpoint: str | None = None) -> None:
        """Report `metrics`, with the folder `checkpoint` (every rank's) when given: Ray
        Train copies it into the run's storage before this returns."""
        saved = None if checkpoint is None else ray.train.Checkpoint.from_directory(checkpoint)
        ray.train.report(metrics, checkpoint=saved)


def share_name(i: int, member: int | None = None) -> str:
    """The Ray Dataset of a run's share `i` (of member `member` of a pack)."""
    return f"train_{i}" if member is None else f"train_{member}_{i}"


def train_loop(inputs: TrialInputs | PackInputs, run) -> None:
    """The loop, on this process's rank of `run` (RayTrainRun or a stand-in): one adapter
    (TrialInputs), or a pack's adapters over one copy of the base (PackInputs,
    ecomtrain.train.pack), each a `Member` trained as it would be alone."""
    pack = inputs if isinstance(inputs, PackInputs) else None
    first = pack.members[0] if pack else inputs
    cfg = first.cfg  # a pack's members share its model and train keys (pack.pack_key)
    rank, world_size = run.rank, run.world_size
    tokenizer = load_tokenizer(first.model_path)
    zero3 = zero3_loading(cfg.train)  # noqa: F841  (must outlive the model)
    attn = training_attention(cfg.model.attn_implementation)
    base = load_model(first.model_path, attn, cfg.train.precision, cfg.model.quantization)
    left: dict[str, str] = {}  # members that left the pack: name -> "stopped" or "failed"
    if pack is None:
        members = [Member(inputs, base, tokenizer, run)]
        if members[0].step >= cfg.train.max_steps:
            # Resumed after its last checkpoint but perhaps before the sweep recorded the
            # report that came with it (the driver lost in between): that report again, so
            # the trial ends with its score and checkpoint whatever was recorded.
            with run.checkpoint() as path:
                report = members[0].state.report or {"step": members[0].step}
                run.report(report, path if rank == 0 else None)
            return
    else:
        members, left = pack_members(pack, base, tokenizer, run)
    for m in members:
        m.open(run)
    if members and rank == 0 and world_size < cfg.train.num_workers:
        log.info(
            f"elastic: {world_size} of {cfg.train.num_workers} workers from step "
            f"{members[0].step}; rank 0 trains shares {[i for i, _, _ in members[0].streams]}, "
            f"{members[0].per_rank} micro-batches a step"
        )
    # Every rank evaluates: its share of the batches, exchanged (about 1 / world_size of the
    # time); under ZeRO-3, whose forward passes are collective, every batch on every rank.
    eval_share = (0, 1) if cfg.train.zero_stage == 3 else (rank, world_size)
    device = members[0].engine.device if members else torch.device("cpu")

    t0 = window_t0 = poll_t0 = time.time()
    first_step = min((m.step for m in members), default=cfg.train.max_steps)
    for step in range(first_step + 1, cfg.train.max_steps + 1):
        trained = {m.name: m.train(step, device) for m in members if m.step < step}
        # Rank 0 says whether a report is due (see RayTrainRun.report_gap_s) and which
        # members the sweep stopped (asked at most as often); both ride on the ledgers'
        # all-reduce, so every rank decides alike at no extra cost.
        now = time.time()
        due = rank == 0 and now - window_t0 >= run.report_gap_s
        stopped: set[str] = set()
        if pack and pack.board is not None and rank == 0 and now - poll_t0 >= run.report_gap_s:
            stopped, poll_t0 = set(ray.get(pack.board.left.remote(pack.name))), now
        flat = [x for m in members for x in trained.get(m.name, (0, 0, [0, 0]))[2]]
        flat += [float(due)] + [float(m.name in stopped) for m in members]
        sums = sum_over_ranks(flat, world_size, device)
        failed = {}
        for i, m in enumerate(members):
            if m.name not in trained:
                continue
            loss, tokens, _ = trained[m.name]
            if not np.isfinite(loss):  # the same on every rank: the loss is all-reduced
                failed[m.name] = f"trial {m.name}: non-finite loss at step {step}"
            else:
                m.record(step, loss, tokens, *sums[2 * i : 2 * i + 2])
        if failed and pack is None:
            raise FloatingPointError(failed[first.trial.name])
        due = sums[2 * len(members)] > 0
        flags = sums[2 * len(members) + 1 :]
        left |= {m.name: "stopped" for m, flag in zip(members, flags, strict=True) if flag}
        left |= dict.fromkeys(failed, "failed")
        members = [m for m in members if m.name not in left]

        last = step == cfg.train.max_steps
        evaluate = last or (cfg.train.eval_every > 0 and step % cfg.train.eval_every == 0)
        if not (evaluate or failed or (step % cfg.train.log_every == 0 and due)):
            if not members:
                return
            continue
        reporting = [m for m in members if m.window_steps]
        peak = peak_memory_gib(device, world_size) if reporting else 0.0  # the largest rank's
        reports = {m.name: m.metrics(step, t0, window_t0, peak) for m in reporting}
        if evaluate:
            for m in reporting:
                m.evaluate(step, reports[m.name], eval_share)
        if pack is None:
            report = reports[first.trial.name]
        else:
            report = {"step": step, "members": reports, "failed": failed}
        if not (evaluate and members):
            run.report(report)
        else:
            with tempfile.TemporaryDirectory(prefix="ecomtrain-ckpt-") as path:
                if pack is None:
                    members[0].save(Path(path), rank)
                else:
                    save_pack(Path(path), members, left, rank)
                run.report(report, checkpoint=path)
        for m in members:
            m.new_window()
        window_t0 = time.time()
        if not members:
            return


class Member:
    """One adapter of a run: its model over the base (`tree`, with the adapter added here,
    seeded by its own train.seed), its DeepSpeed engine (AdamW state, gradient clipping,
    learning-rate schedule), its streams of its own shares, its evaluations, its state and
    its report window. A run trains one; a pack several, one after the other."""

    def __init__(self, inputs: TrialInputs, tree, tokenizer, run, start=None, index=None):
        cfg = self.cfg = inputs.cfg
        self.inputs, self.trial, self.name = inputs, inputs.trial, inputs.trial.name
        self.tokenizer, self.index, self.world_size = tokenizer, index, run.world_size
        # Each step takes grad_accum micro-batches from every share, whatever the world size;
        # a rank with fewer shares than another pads with zero-weight repeats (step_batches).
        self.per_rank = -(-cfg.train.num_workers // run.world_size) * cfg.train.grad_accum
        torch.manual_seed(cfg.train.seed)  # the adapter's initialisation
        routes = self.trial.routes  # the experts of a label-routed adapter (ecomtrain.experts)
        model = training_model(tree, cfg.lora, cfg.train.gradient_checkpointing, routes)
        self.trainable = trainable_count(model)
        train = dataclasses.replace(cfg.train, grad_accum=self.per_rank)
        self.engine, self.schedule = initialize(model, train)
        # step 0 on a fresh start; `start`: the member's view of a pack's checkpoint
        self.state = restore(self.engine, start or run)
        self.step = self.state.step  # the last step trained
        self.streams: list = []
        self.data = StreamStats()  # of this rank's first share
        self.scored: dict[str, list] = {}  # per-record scores of the last evaluation, by file
        self.new_window()

    def open(self, run) -> None:
        """The streams of this rank's shares, past the micro-batches already trained."""
        cfg, rank = self.cfg, run.rank
        micro_done = self.step * cfg.train.grad_accum
        for i in shares_of(rank, run.world_size, cfg.train.num_workers):
            share = run.share(i) if self.index is None else run.share(i, self.index)
            stats = self.data if i == rank else None
            self.streams.append(
                (i, share, stream(share, cfg, self.inputs.mult, i, micro_done, stats))
            )

    def new_window(self) -> None:
        self.window_loss, self.window_steps, self.window_tokens = 0.0, 0, 0

    def train(self, step: int, device) -> tuple[float, int, list]:
        """One optimizer step: its loss, supervised tokens (all ranks) and this rank's
        [records, digest] (every rank must call this)."""
        micro, ledger = step_batches(self.streams, self.cfg, step, self.trial.routes, self.per_rank)
        micro = [dataclasses.replace(m, inputs=to_device(m.inputs, device)) for m in micro]
        loss, tokens = optimizer_step(self.engine, micro, self.world_size)
        return loss, tokens, ledger

    def record(self, step: int, loss: float, tokens: int, records: float, digest: float) -> None:
        """A step trained: its loss, its end (Unix time) and its records (all ranks)."""
        self.step = step
        self.state.history.append([step, loss])
        self.state.clock.append([step, round(time.time(), 3)])
        self.state.ledger.append([step, int(records), int(digest) % DIGEST_MOD])
        self.window_loss, self.window_steps = self.window_loss + loss, self.window_steps + 1
        self.window_tokens += tokens

    def metrics(self, step: int, t0: float, window_t0: float, peak: float) -> dict:
        """The training metrics of the window since the last report. In a pack, the time
        figures are the run's: a window's seconds hold every member's steps."""
        seconds = time.time() - window_t0
        return {
            "step": step,
            "loss": self.window_loss / self.window_steps,  # mean since the last report
            "lr": self.schedule.get_last_lr()[0],
            "tokens_per_s": self.window_tokens / seconds,  # supervised, all ranks
            "step_s": seconds / self.window_steps,
            "window_steps": self.window_steps,  # the steps these means cover
            "peak_memory_gib": peak,
            "trainable_params": self.trainable,
            "elapsed_s": time.time() - t0,
            "epoch": self.data.epochs,  # epochs of its share rank 0 has begun
            "packing_efficiency": self.data.packing_efficiency,
        }

    def evaluate(self, step: int, metrics: dict, eval_share: tuple[int, int]) -> None:
        """Score the adapter on the held-out sample and the extra files into `metrics`,
        keep the per-record scores for the checkpoint, and the report for a resume at the
        end (every rank must call this)."""
        cfg, trial, inputs = self.cfg, self.trial, self.inputs
        if inputs.held_out:
            held, self.scored[SCORES_FILE] = score_adapter(
                self.engine.module, self.tokenizer, inputs.held_out, cfg, trial, eval_share
            )
            metrics |= held
            # sample answers for W&B's predictions table (tracking.predictions_table)
            metrics["predictions"] = predictions(
                inputs.held_out, self.scored[SCORES_FILE], cfg.eval.predictions
            )
        if inputs.extra_eval:  # ShopBench's own generation budget on the extra files
            budget = dataclasses.replace(cfg.eval, max_new_tokens=cfg.eval.extra_max_new_tokens)
            extra, self.scored[EXTRA_SCORES_FILE] = score_adapter(
                self.engine.module,
                self.tokenizer,
                inputs.extra_eval,
                dataclasses.replace(cfg, eval=budget),
                trial,
                eval_share,
            )
            metrics |= {f"extra/{k}": v for k, v in extra.items()}
        mixture = trial.mixture  # diversity of what this run trains on
        metrics |= {f"mixture/{k}": v for k, v in mixture.items()}
        metrics["task_entropy"] = mixture.get("task_entropy", float("nan"))
        self.state.report = metrics  # the report, for a resume at the end

    def save(self, path: Path, rank: int) -> None:
        """This member's checkpoint into `path` (every rank must call this)."""
        self.state.step = self.step
        save_checkpoint(
            path, self.engine, self.tokenizer, self.trial, self.state, rank, self.scored
        )


def pack_members(pack: PackInputs, base, tokenizer, run) -> tuple[list[Member], dict]:
    """A pack's members that still train, each over its own tree of `base` and restored from
    its folder of the run's latest checkpoint (or, when the run has none of it, its own
    earlier one: `pack.resume`); and the members that left the pack (name -> why): those
    the checkpoint lists and those the sweep stopped since. A member whose last checkpoint
    is at max_steps reports it again, as a single run does, and trains no more."""
    rank, max_steps = run.rank, pack.members[0].cfg.train.max_steps
    with contextlib.ExitStack() as stack:
        opened = run.checkpoint()
        root = None if opened is None else stack.enter_context(opened)
        left = read_pack_file(root)["left"]
        if pack.board is not None and rank == 0:
            stopped = ray.get(pack.board.left.remote(pack.name))
            left |= {name: "stopped" for name in stopped if name not in left}
        if run.world_size > 1:  # rank 0's answer, on every rank
            box = [left]
            dist.broadcast_object_list(box, src=0)
            left = box[0]
        staying = [(i, x) for i, x in enumerate(pack.members) if x.trial.name not in left]
        trees = member_trees(base, len(staying))
        members, folders = [], {}
        for (i, x), tree in zip(staying, trees, strict=True):
            name = x.trial.name
            folder = Path(root, name) if root else None
            if folder is None or not folder.is_dir():
                folder = pack.resume.get(name)
                if folder and is_uri(folder):
                    folder = stack.enter_context(ray.train.Checkpoint(folder).as_directory())
            folders[name] = folder
            start = MemberRun(rank, run.world_size, None if folder is None else str(folder))
            members.append(Member(x, tree, tokenizer, run, start, index=i))
        done = [m for m in members if m.step >= max_steps]
        if done:
            report = {
                "step": max_steps,
                "members": {m.name: m.state.report or {"step": m.step} for m in done},
                "failed": {},
            }
            with tempfile.TemporaryDirectory(prefix="ecomtrain-ckpt-") as path:
                if rank == 0:
                    for m in done:
                        shutil.copytree(folders[m.name], Path(path, m.name))
                    write_pack_file(Path(path), [m.name for m in done], left)
                run.report(report, path if rank == 0 else None)
    return [m for m in members if m not in done], left


def save_pack(path: Path, members: list[Member], left: dict[str, str], rank: int) -> None:
    """A pack's checkpoint: a folder per member (a single run's layout) and PACK_FILE."""
    for m in members:
        (path / m.name).mkdir()
        m.save(path / m.name, rank)
    if rank == 0:
        write_pack_file(path, [m.name for m in members], left)


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
    """Every rank saves its DeepSpeed state into `path`; rank 0 adds the PEFT adapter
    (safetensors), the tokenizer, the trial's metadata, the loss history and the
    evaluation's per-record scores (JSON Lines). Ray Train merges the ranks' folders into
    one checkpoint."""
    save_state(engine, str(path), client_state={"step": state.step})
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
    one, with this attempt's start and world size added. No random generator state is kept
    or restored: every micro-batch seeds its own (step_batches)."""
    checkpoint = run.checkpoint()
    if checkpoint is None:
        return LoopState(workers=[run.world_size])
    with checkpoint as path:
        load_state(engine, path)
        state = LoopState.from_json((Path(path) / STATE_FILE).read_text())
    state.starts.append(state.step)  # where each attempt began
    state.workers.append(run.world_size)  # and with how many workers
    return state


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
