"""The training objective does not depend on how a step is cut up: every supervised token of
an optimizer step weighs the same, whether the step runs on 1, 2 or 4 workers with 4, 2 or
1 accumulation steps, or unevenly over 2 workers, one padded with zero-weight micro-batches
as an elastic trial's smaller world pads (DeepSpeed ZeRO-2 and ZeRO-3, gloo, the tiny model);
nor whether the model is compiled (train.compile), whose evaluation then runs eagerly.

What is compared is what DeepSpeed applies: the LoRA parameters after one optimizer step
(gathered from ZeRO-3's partitions), not gradients hooked before DeepSpeed reduces them.
AdamW's first step moves each parameter by lr * g / (|g| + eps), which at the default eps
is lr * sign(g) whatever the gradient's scale, so a step with a wrong scale would look
right; the tests set eps and lr to 1e3, where the step is close to -g, linear in the gradient."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ecomtrain.base_model import resolve_model
from ecomtrain.config import Config, LoraConfig, ModelConfig, TrainConfig
from ecomtrain.data.demo import demo_records
from ecomtrain.data.packing import Prompt, encode, layout
from ecomtrain.data.records import render_answer
from ecomtrain.model import load_model, load_tokenizer, training_model
from ecomtrain.train.engine import gathered, initialize, zero3_loading
from ecomtrain.train.inputs import model_inputs, training_attention
from ecomtrain.train.loop import Micro, optimizer_step, score_adapter
from ecomtrain.train.trial import TrialMeta

MAX_LEN = 256


def micro_batches(path: str) -> list[dict]:
    """Four micro-batches whose supervised tokens differ a lot: multiple choice (one answer
    token a record) in the first two, long generated answers in the last two."""
    tok = load_tokenizer(path)
    by_family: dict[str, list] = {}
    for r in demo_records():
        by_family.setdefault(r["task_name"], []).append(r)
    out = []
    for family, n in [("review_rating", 6), ("numeric_reasoning", 3)] + [
        ("title_translation", 5),
        ("review_keyphrase_extraction", 2),
    ]:
        seqs = [
            encode(tok, r["input_field"], render_answer(r), Prompt(prefix=False))
            for r in by_family[family][:n]
        ]
        rows = layout(seqs, MAX_LEN, tok.pad_token_id)
        out.append(
            model_inputs(
                {k: torch.from_numpy(rows[k]) for k in ("input_ids", "labels", "segment_ids")}
            )
        )
    return out


def _worker(
    rank: int,
    world: int,
    split: list,
    path: str,
    port: int,
    out: str,
    stages: tuple = (2,),
    held_out: list = (),
) -> None:
    """Rank `rank` takes micro-batches split[rank] (indices), padded to the longest split
    with zero-weight repeats, and runs one optimizer step under each ZeRO stage of `stages`
    in turn, from the same initial adapter. With `held_out` rows, the model is compiled
    (train.compile) and, after the step, scored on them as the loop scores it."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank))
    os.environ.update(LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    accum = max(len(part) for part in split)
    batches = micro_batches(path)
    results = {}
    for stage in stages:
        cfg = TrainConfig(zero_stage=stage, micro_batch_size=1, grad_accum=accum, grad_clip=0.0)
        cfg.lr, cfg.warmup_steps, cfg.compile = 1e3, 0, bool(held_out)
        zero3 = zero3_loading(cfg)  # as the loop loads: partitioned from the start
        torch.manual_seed(0)
        base = load_model(path, training_attention("sdpa"))
        model = training_model(base, LoraConfig(rank=4, alpha=8.0), gradient_checkpointing=False)
        engine, _ = initialize(model, cfg)
        for group in engine.optimizer.param_groups:
            group["eps"] = 1e3  # with lr 1e3, a step close to -g (see the module doc)
        before = trainable(engine)
        mine = [Micro(batches[i]) for i in split[rank]]
        mine += [Micro(mine[k % len(mine)].inputs, weight=0.0) for k in range(accum - len(mine))]
        loss, tokens = optimizer_step(engine, mine, world)
        after = trainable(engine)
        results[stage] = {"step": after - before, "loss": loss, "tokens": tokens}
        if held_out:
            results[stage] |= compiled_evaluation(engine.module, path, held_out)
        del engine, model, base, zero3
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def trainable(engine) -> torch.Tensor:
    """Every trainable parameter's full value, flattened in name order (every rank calls it:
    ZeRO-3 gathers the partitions)."""
    with gathered(engine):
        named = dict(engine.module.named_parameters())
        return torch.cat(
            [named[n].detach().flatten().clone() for n in sorted(named) if named[n].requires_grad]
        )


def compiled_evaluation(model, path: str, rows: list) -> dict:
    """Frames torch.compile captured in training, and during the loop's evaluation after it."""
    from torch._dynamo.utils import counters

    trained = counters["frames"]["total"]
    cfg = Config()
    cfg.eval.batch_size, cfg.eval.max_new_tokens = 4, 4
    metrics, _ = score_adapter(
        model, load_tokenizer(path), rows, cfg, TrialMeta.of("c", "c", [], cfg), (0, 1)
    )
    evaluated = counters["frames"]["total"] - trained
    return {"trained_frames": trained, "evaluated_frames": evaluated, "score": metrics["score"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SPLITS = {
    "1x4": [[0, 1, 2, 3]],
    "2x2": [[0, 1], [2, 3]],
    "4x1": [[0], [1], [2], [3]],
    "2 uneven": [[0, 2, 3], [1]],  # rank 1 pads with two zero-weight micro-batches
}
# How far apart two cuts' parameter updates may be, relative to the largest update: float32
# sums in another order (accumulation, the ranks' reduction, ZeRO's partitions).
RTOL_STEP = 1e-5


def one_step(tmp_path, key: str, stages: tuple) -> dict:
    out, world = tmp_path / f"{key}.pt", len(SPLITS[key])
    args = (world, SPLITS[key], resolve_model(ModelConfig()), _free_port(), str(out), stages)
    mp.spawn(_worker, args=args, nprocs=world)
    return torch.load(out, weights_only=True)


def assert_same_step(got: dict, ref: dict, what: str) -> None:
    assert got["tokens"] == ref["tokens"], what
    assert got["loss"] == pytest.approx(ref["loss"], rel=1e-6), what
    atol = RTOL_STEP * float(ref["step"].abs().max())
    torch.testing.assert_close(got["step"], ref["step"], rtol=0, atol=atol, msg=what)


@pytest.mark.parametrize("stage", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_one_step_moves_the_adapter_alike_however_it_is_split(tmp_path, stage):
    """The adapter DeepSpeed leaves after one step is the same for 1x4, 2x2, 4x1 and an
    uneven 2-worker step (within RTOL_STEP of the largest update)."""
    path = resolve_model(ModelConfig())
    tokens = [len(b["targets"]) for b in micro_batches(path)]
    assert max(tokens) > 3 * min(tokens)  # a per-micro-batch mean would weigh these unevenly
    got = {key: one_step(tmp_path, key, (stage,))[stage] for key in SPLITS}
    ref = got["1x4"]
    assert ref["tokens"] == sum(tokens)
    assert ref["step"].abs().max() > 1e-4  # the step moved the adapter
    for key, step in got.items():
        assert_same_step(step, ref, f"ZeRO-{stage} {key}")


@pytest.mark.slow
def test_a_compiled_model_takes_the_same_step_and_evaluates_eagerly(tmp_path):
    """train.compile: the step's loss and update are the eager step's (inductor on CPU);
    the evaluation's generation and answer losses run eagerly, compiling nothing."""
    from test_evaluate_shards import held_out_rows

    path = resolve_model(ModelConfig())
    got = {}
    for key, held_out in {"eager": [], "compiled": held_out_rows(8)}.items():
        out = tmp_path / f"{key}.pt"
        mp.spawn(_worker, args=(1, [[0, 1, 2, 3]], path, _free_port(), str(out), (2,), held_out))
        got[key] = torch.load(out, weights_only=True)[2]
    eager, compiled = got["eager"], got["compiled"]
    assert compiled["trained_frames"] > 0  # the step ran through torch.compile
    assert compiled["evaluated_frames"] == 0, compiled
    assert 0 <= compiled["score"] <= 1
    assert compiled["tokens"] == eager["tokens"]
    assert compiled["loss"] == pytest.approx(eager["loss"], rel=1e-5)
    atol = 1e-5 * float(eager["step"].abs().max())
    torch.testing.assert_close(compiled["step"], eager["step"], rtol=0, atol=atol)


def _generators_worker(rank: int, path: str, port: int, out: str) -> None:
    """One step with LoRA dropout 0.1, three times from the same adapter: as is; after the
    process's random generators were moved on and reseeded (as a resumed process finds
    them, whatever they were); and with other micro-batch seeds."""
    import random

    import numpy as np

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0")
    os.environ.update(LOCAL_RANK="0", WORLD_SIZE="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=0, world_size=1)
    batches = micro_batches(path)
    steps = {}
    for key, first_seed in (("fresh", 100), ("moved on", 100), ("other seeds", 200)):
        torch.manual_seed(0)
        base = load_model(path, training_attention("sdpa"))
        model = training_model(base, LoraConfig(rank=4, alpha=8.0, dropout=0.1), False)
        cfg = TrainConfig(micro_batch_size=1, grad_accum=4)
        cfg.warmup_steps = 0  # a first step at lr 0 would move nothing, masks or not
        engine, _ = initialize(model, cfg)
        if key == "moved on":
            torch.manual_seed(12345), torch.rand(1000), random.seed(7), np.random.seed(7)
        before = trainable(engine)
        micro = [Micro(b, seed=first_seed + i) for i, b in enumerate(batches)]
        loss, _ = optimizer_step(engine, micro, 1)
        steps[key] = {"step": trainable(engine) - before, "loss": loss}
    torch.save(steps, out)
    dist.destroy_process_group()


def test_a_step_depends_on_its_seeds_not_on_the_generators_before_it(tmp_path):
    """What makes a resume exact with dropout (train/loop.py): each micro-batch seeds its
    own draws, so a step is the same bit for bit whatever state the process's generators
    were in; the checkpoint keeps none. Other seeds give other masks (dropout is on)."""
    out = tmp_path / "steps.pt"
    path = resolve_model(ModelConfig())
    mp.spawn(_generators_worker, args=(path, _free_port(), str(out)), nprocs=1)
    steps = torch.load(out, weights_only=True)
    assert steps["fresh"]["step"].abs().max() > 0  # the step moved the adapter
    assert steps["moved on"]["loss"] == steps["fresh"]["loss"]
    assert torch.equal(steps["moved on"]["step"], steps["fresh"]["step"])
    # other masks: another update (the first step's loss is the same, as lora_B starts at 0)
    assert not torch.equal(steps["other seeds"]["step"], steps["fresh"]["step"])
