"""`ablation` runs ecomtrain's training step (forward and backward, one process) on the same
packed micro-batches of the configured corpus with each of its choices undone in turn:
logits at every token, every record of a micro-batch in one attention call, and no packing
(each record its own padded row). It prints the seconds and supervised tokens/s of each, the
time each choice saves (`ecomtrain_gain`: the variant's seconds over ecomtrain's) and how far
each one's loss is from ecomtrain's on every micro-batch, warm-up included
(`loss_max_relative_difference`, and `losses_equal_bit_for_bit`): the choices change the
cost, not the result. `--shape` as for `throughput`, `--steps` micro-batches timed.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from ecomtrain import console
from ecomtrain.bench.models import SHAPES, head_share, shape_model
from ecomtrain.config import Config
from ecomtrain.connect import connect
from ecomtrain.data.packing import IGNORE
from ecomtrain.data.pipeline import checked_scan, train_dataset
from ecomtrain.data.share import read_share, stream
from ecomtrain.model import load_model, training_model
from ecomtrain.train.inputs import GROUP_SLACK, model_inputs, packed_loss, training_attention

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
    corpus: supervised tokens/s of each, what each choice gains, and how far each one's
    loss is from ecomtrain's on every micro-batch (the choices change the cost, not the
    result)."""
    model_path = shape_model(cfg, shape)
    shares, mult = train_dataset(cfg, model_path, cfg.data.tasks, 1, checked_scan(cfg.data))
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
        losses = []
        for i, inputs in enumerate(prepared):
            if i == warmup:
                t0 = time.perf_counter()
            loss = ablation_loss(model, name, inputs)
            loss.backward()
            model.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
        seconds = time.perf_counter() - t0
        rows.append(
            {
                "step": name,
                "what": what,
                "seconds": round(seconds, 3),
                "tokens_per_s": round(supervised_tokens / seconds, 1),
                "losses": losses,  # of every micro-batch, warm-up included
            }
        )
    full, reference = rows[0]["seconds"], rows[0]["losses"]
    for row in rows:
        row["ecomtrain_gain"] = round(row["seconds"] / full, 3)
        row["loss_max_relative_difference"] = max(
            abs(a - b) / abs(b) for a, b in zip(row["losses"], reference, strict=True)
        )
    out["rows"] = rows
    out["loss_max_relative_difference"] = max(r["loss_max_relative_difference"] for r in rows)
    out["losses_equal_bit_for_bit"] = all(r["losses"] == reference for r in rows)
    return out


SPACE: list[str] = []


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shape", choices=["tiny", *sorted(SHAPES)], default="tiny", help="the model's shape"
    )
    parser.add_argument("--steps", type=int, default=10, help="timed micro-batches")


def run(args: argparse.Namespace, config) -> dict:
    connect(log_to_driver=console.verbose())
    return ablation(config(), args.shape, args.steps)
