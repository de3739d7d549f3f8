"""Packed rows as model inputs: one flat row of real tokens, attention inside each record.

`model_inputs` turns a batch of packed rows (ecomtrain.data.packing) into one flat row of
its real tokens (padding dropped) with positions restarting at 0 per record and the record
boundaries for the attention kernel: flash-attention's varlen kernel (`cu_seq_lens_*`) on
GPU, or `packed_sdpa` below, which runs sdpa over records of similar length batched
together. Either way attention costs the sum of the records' squared lengths, not the
rows', and no token attends across records. Logits are computed only where a label is
predicted (`logits_to_keep`): with prompts masked that is a small share of the tokens, and
the vocabulary projection is the largest matrix of a small model and the largest
activation of a large one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from ecomtrain.data.packing import IGNORE
from ecomtrain.experts import set_routes

PACKED_SDPA = "packed_sdpa"  # the attention function below, as transformers knows it
GROUP_SLACK = 1.5  # packed_sdpa batches records whose lengths are within this factor
# cuDNN attention builds a plan per new shape (seen: over a second of CPU time per training
# step on an H200 at 1B scale); packed groups change shape every step, so it is left out.
SHAPE_FREE_KERNELS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def model_inputs(
    batch: dict,
    attn_implementation: str = "sdpa",
    record_routes: torch.Tensor | None = None,
    group_slack: float = GROUP_SLACK,
) -> dict:
    """Packed rows (torch tensors) -> kwargs of `packed_loss`: one flat row of real tokens.

    `targets` are the next-token labels at the `logits_to_keep` positions; a record's last
    token never predicts the next record's first. `record_routes`: the expert of each record
    in row order (label-routed adapters, ecomtrain.experts), spread over its tokens as
    `routes`. `group_slack`: see `length_groups` (math.inf: every record in one group).
    """
    seg = batch["segment_ids"].long()
    real = (seg > 0).reshape(-1)
    ids = batch["input_ids"].reshape(-1)[real].long()
    labels = batch["labels"].reshape(-1)[real].long()
    record = (seg + torch.arange(len(seg))[:, None] * (int(seg.max()) + 1)).reshape(-1)[real]
    n = len(ids)
    idx = torch.arange(n)
    starts = torch.ones(n, dtype=torch.bool)
    starts[1:] = record[1:] != record[:-1]
    positions = idx - torch.cummax(torch.where(starts, idx, 0), dim=0).values
    begins = idx[starts]
    lengths = torch.diff(begins, append=torch.tensor([n]))
    targets = torch.full_like(labels, IGNORE)
    targets[:-1] = labels[1:]
    targets[begins[1:] - 1] = IGNORE
    keep = (targets != IGNORE).nonzero()[:, 0]
    out = {
        "input_ids": ids[None],
        "position_ids": positions[None],
        "logits_to_keep": keep,
        "targets": targets[keep],
    }
    if record_routes is not None:
        out["routes"] = torch.repeat_interleave(record_routes, lengths)[None]
    if attn_implementation == "flash_attention_2":
        cu = torch.cat([begins, torch.tensor([n])]).int()
        longest = int(lengths.max()) if n else 0
        return out | {
            "cu_seq_lens_q": cu,
            "cu_seq_lens_k": cu,
            "max_length_q": longest,
            "max_length_k": longest,
        }
    # An all-ones 2-D mask makes transformers skip building a mask; packed_sdpa needs none.
    return out | {
        "attention_mask": torch.ones(1, n, dtype=torch.long),
        "packed_groups": length_groups(begins, lengths, positions, group_slack),
    }


def length_groups(
    begins: torch.Tensor,
    lengths: torch.Tensor,
    positions: torch.Tensor,
    slack: float = GROUP_SLACK,
):
    """Records batched by similar length for packed_sdpa: (gathers, scatter).

    Each gather is a [records, longest] index into the flat row, the shorter records
    padded at their end (causal attention never looks past a query, so real tokens never
    see the padding); `scatter` takes each token's output back from the groups' outputs
    laid end to end. A group's longest record is at most `slack` times its shortest.
    """
    order = torch.argsort(lengths, descending=True, stable=True).tolist()
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[i] * slack >= lengths[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    n = int(lengths.sum())
    record_of = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    slot = torch.empty(len(lengths), dtype=torch.long)  # flat offset of each record's group row
    gathers, offset = [], 0
    for members in groups:
        longest = int(lengths[members[0]])
        rows = torch.tensor(members)
        gathers.append((begins[rows, None] + torch.arange(longest)).clamp(max=n - 1))
        slot[rows] = offset + torch.arange(len(members)) * longest
        offset += len(members) * longest
    return gathers, slot[record_of] + positions


def packed_sdpa(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention function: causal sdpa within each record of a flat packed row.

    Without `packed_groups` (generation, scoring) it is plain sdpa with the usual mask.
    """
    packed = kwargs.pop("packed_groups", None)
    if packed is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    gathers, scatter = packed
    # Grouped-query attention: sdpa's own support is fastest on CPU; on GPU the kv heads are
    # repeated, the form measured on the flash kernel.
    repeat = query.shape[1] // key.shape[1] if query.is_cuda else 1
    q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # [tokens, heads, dim]
    if repeat > 1:
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
    outputs = []
    with sdpa_kernel(SHAPE_FREE_KERNELS):
        for index in gathers:
            o = F.scaled_dot_product_attention(
                *(x[index].transpose(1, 2) for x in (q, k, v)),
                dropout_p=dropout,
                is_causal=True,
                scale=scaling,
                enable_gqa=repeat == 1,
            )
            outputs.append(o.transpose(1, 2).reshape(-1, *o.shape[1::2]))
    return torch.cat(outputs)[scatter][None], None


def packed_loss(model, targets: torch.Tensor, routes=None, **inputs) -> torch.Tensor:
    """Next-token cross-entropy summed over the batch's labelled tokens (the caller divides
    by the number of tokens it averages over: see ecomtrain.train.loop.optimizer_step).
    `routes`: each token's expert (label-routed adapters), kept set through the backward."""
    if routes is not None:
        set_routes(model, routes)
    logits = model(**inputs).logits[0].float()
    return F.cross_entropy(logits, targets, reduction="sum")


def to_device(inputs, device):
    """Tensors, also inside dicts, lists and tuples, moved to `device`."""
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device, non_blocking=True)
    if isinstance(inputs, dict):
        return {k: to_device(v, device) for k, v in inputs.items()}
    if isinstance(inputs, list | tuple):
        return type(inputs)(to_device(v, device) for v in inputs)
    return inputs


def training_attention(attn_implementation: str) -> str:
    """The kernel a model is loaded with for packed training."""
    return PACKED_SDPA if attn_implementation == "sdpa" else attn_implementation


AttentionInterface.register(PACKED_SDPA, packed_sdpa)
AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)
