"""The training objective does not depend on how a step is cut up: every supervised token of
an optimizer step weighs the same, whether the step runs on 1, 2 or 4 workers with 4, 2 or
1 accumulation steps, or unevenly over 2 workers, one padded with zero-weight micro-batches
as an elastic trial's smaller world pads (DeepSpeed ZeRO-2, gloo, the tiny model); nor
whether the model is compiled (train.compile), whose evaluation then runs eagerly."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ecomtrain.config import Config, LoraConfig, ModelConfig, TrainConfig
from ecomtrain.data.demo import demo_records
from ecomtrain.data.packing import Prompt, encode, layout
from ecomtrain.data.records import render_answer
from ecomtrain.model import load_model, load_tokenizer, training_model
from ecomtrain.tiny_model import resolve_model
from ecomtrain.train.engine import initialize
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
    rank: int, world: int, split: list, path: str, port: int, out: str, held_out: list = ()
) -> None:
    """Rank `rank` takes micro-batches split[rank] (indices), padded to the longest split
    with zero-weight repeats. With `held_out` rows, the model is compiled (train.compile)
    and, after the step, scored on them as the loop scores it."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank))
    os.environ.update(LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    base = load_model(path, training_attention("sdpa"))
    model = training_model(base, LoraConfig(rank=4, alpha=8.0), gradient_checkpointing=False)
    grads: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.register_hook(lambda g, n=name: grads.__setitem__(n, grads.get(n, 0) + g.detach()))
    accum = max(len(part) for part in split)
    cfg = TrainConfig(zero_stage=2, micro_batch_size=1, grad_accum=accum, grad_clip=0.0)
    cfg.compile = bool(held_out)
    engine, _ = initialize(model, cfg)
    batches = micro_batches(path)
    mine = [Micro(batches[i]) for i in split[rank]]
    mine += [Micro(mine[k % len(mine)].inputs, weight=0.0) for k in range(accum - len(mine))]
    loss, tokens = optimizer_step(engine, mine, world)
    flat = torch.cat([grads[n].flatten() for n in sorted(grads)])
    dist.all_reduce(flat)  # DeepSpeed averages the ranks' gradients; so do we
    result = {"grad": flat / world, "loss": loss, "tokens": tokens}
    if held_out:
        result |= compiled_evaluation(engine.module, path, held_out)
    if rank == 0:
        torch.save(result, out)
    dist.destroy_process_group()


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


def test_one_step_has_the_same_gradient_however_it_is_split(tmp_path):
    path = resolve_model(ModelConfig())
    tokens = [len(b["targets"]) for b in micro_batches(path)]
    assert max(tokens) > 3 * min(tokens)  # a per-micro-batch mean would weigh these unevenly
    got = {}
    splits = {
        "1x4": [[0, 1, 2, 3]],
        "2x2": [[0, 1], [2, 3]],
        "4x1": [[0], [1], [2], [3]],
        "2 uneven": [[0, 2, 3], [1]],  # rank 1 pads with two zero-weight micro-batches
    }
    for key, split in splits.items():
        out = tmp_path / f"{key}.pt"
        world = len(split)
        mp.spawn(_worker, args=(world, split, path, _free_port(), str(out)), nprocs=world)
        got[key] = torch.load(out, weights_only=True)
    ref = got["1x4"]
    assert ref["tokens"] == sum(tokens)
    for key, step in got.items():
        assert step["tokens"] == ref["tokens"], key
        assert step["loss"] == pytest.approx(ref["loss"], rel=1e-6), key
        torch.testing.assert_close(step["grad"], ref["grad"], rtol=0, atol=1e-5, msg=str(key))
    # the step's gradient is that of the mean token loss over all four micro-batches
    assert ref["grad"].abs().max() > 1e-3


@pytest.mark.slow
def test_a_compiled_model_has_the_same_gradient_and_evaluates_eagerly(tmp_path):
    """train.compile: the step's loss and gradient are the eager step's (inductor on CPU);
    the evaluation's generation and answer losses run eagerly, compiling nothing."""
    from test_evaluate_shards import held_out_rows

    path = resolve_model(ModelConfig())
    got = {}
    for key, held_out in {"eager": [], "compiled": held_out_rows(8)}.items():
        out = tmp_path / f"{key}.pt"
        mp.spawn(_worker, args=(1, [[0, 1, 2, 3]], path, _free_port(), str(out), held_out))
        got[key] = torch.load(out, weights_only=True)
    eager, compiled = got["eager"], got["compiled"]
    assert compiled["trained_frames"] > 0  # the step ran through torch.compile
    assert compiled["evaluated_frames"] == 0, compiled
    assert 0 <= compiled["score"] <= 1
    assert compiled["tokens"] == eager["tokens"]
    assert compiled["loss"] == pytest.approx(eager["loss"], rel=1e-5)
    torch.testing.assert_close(compiled["grad"], eager["grad"], rtol=0, atol=1e-5)
