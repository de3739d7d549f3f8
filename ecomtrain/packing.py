"""Tokenisation with the chat template, over-long records, sequence packing, model inputs.

- Loss only on the answer: prompt tokens are labelled IGNORE.
- Over-long records: the prompt loses tokens from its middle (the instruction at its start
  and the question, choices and answer cue at its end stay) until prompt + answer fit
  `max_seq_len`; a record whose answer alone (plus one prompt token) does not fit is dropped,
  counted and logged with its file and line.
- Packing: records are packed first-fit-decreasing into rows of exactly `max_seq_len` tokens
  with `segment_ids` (1, 2, ... per record, 0 for padding).
- `model_inputs` turns a batch of packed rows into one flat row of its real tokens
  (padding dropped) with positions restarting at 0 per record and the record boundaries
  for the attention kernel: flash-attention's varlen kernel (`cu_seq_lens_*`) on GPU, or
  `packed_sdpa` below, which runs sdpa over records of similar length batched together.
  Either way attention costs the sum of the records' squared lengths, not the rows', and
  no token attends across records. Logits are computed only where a label is predicted
  (`logits_to_keep`): with prompts masked that is a small share of the tokens, and the
  vocabulary projection is the largest matrix of a small model and the largest
  activation of a large one.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

IGNORE = -100
log = logging.getLogger("ecomtrain.data")
PACKED_SDPA = "packed_sdpa"  # the attention function below, as transformers knows it
GROUP_SLACK = 1.5  # packed_sdpa batches records whose lengths are within this factor
# cuDNN attention builds a plan per new shape (seen: over a second of CPU time per training
# step on an H200 at 1B scale); packed groups change shape every step, so it is left out.
SHAPE_FREE_KERNELS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
# The official ShopBench baseline prompt prefix.
PROMPT_PREFIX = (
    "You are a helpful online shopping assistant. Please answer the following question "
    "about online shopping and follow the given instructions.\n\n"
)


@functools.lru_cache(maxsize=4)
def tokenizer_at(path: str):
    """The model's tokenizer, loaded once per process."""
    from ecomtrain.model import load_tokenizer

    return load_tokenizer(path)


def prompt_text(tokenizer, question: str, prefix: bool) -> str:
    """The chat-formatted prompt the model sees, ending where the answer starts."""
    content = (PROMPT_PREFIX if prefix else "") + question
    messages = [{"role": "user", "content": content}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode(tokenizer, question: str, answer: str, prefix: bool) -> tuple[list[int], list[int]]:
    """Token ids of prompt+answer and labels that are IGNORE over the prompt."""
    prompt = prompt_text(tokenizer, question, prefix)
    content = (PROMPT_PREFIX if prefix else "") + question
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}, {"role": "assistant", "content": answer}],
        tokenize=False,
    )
    if not full.startswith(prompt):
        raise ValueError("chat template renders the prompt differently with an answer")
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    return p_ids + a_ids, [IGNORE] * len(p_ids) + a_ids


def fit(ids: list[int], labels: list[int], max_len: int) -> tuple[list, list, str]:
    """(ids, labels, status) within max_len; status "ok", "truncated" or "dropped"."""
    if len(ids) <= max_len:
        return ids, labels, "ok"
    n_prompt = next((i for i, y in enumerate(labels) if y != IGNORE), len(labels))
    budget = max_len - (len(ids) - n_prompt)  # prompt tokens that fit beside the answer
    if budget < 1:
        return [], [], "dropped"
    head = budget // 2
    keep = list(range(head)) + list(range(n_prompt - (budget - head), len(ids)))
    return [ids[i] for i in keep], [labels[i] for i in keep], "truncated"


def pack(lengths: list[int], max_len: int) -> list[list[int]]:
    """First-fit decreasing: indices of the records each row holds (lengths <= max_len)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(max_len - lengths[i])
    return rows


def tokenize_and_pack(batch: dict, model_path: str, max_len: int, prefix: bool, pad_id=None):
    """A window of records -> packed rows of exactly max_len tokens (a Ray Data UDF).

    Columns out: input_ids, labels, segment_ids (per token); samples, tokens, truncated
    and dropped (per row; a window's dropped records are counted on its first row, and
    logged with their file and line).
    """
    tok = tokenizer_at(model_path)
    pad = tok.pad_token_id if pad_id is None else pad_id
    seqs, truncated, dropped = [], [], 0
    for q, a, src in zip(batch["input"], batch["answer"], batch["source"], strict=True):
        ids, labels, status = fit(*encode(tok, q, a, prefix), max_len)
        if status == "dropped":
            dropped += 1
            log.warning("%s: dropped: answer does not fit max_seq_len %d", src, max_len)
            continue
        seqs.append((ids, labels))
        truncated.append(status == "truncated")
    out = layout(seqs, truncated, max_len, pad)
    if len(out["samples"]):
        out["dropped"][0] = dropped
    return out


def layout(seqs: list[tuple], truncated: list[bool], max_len: int, pad: int) -> dict:
    """(ids, labels) sequences packed into rows of max_len: the columns tokenize_and_pack
    returns, with no dropped records counted."""
    rows = pack([len(s[0]) for s in seqs], max_len)
    n = len(rows)
    out = {
        "input_ids": np.full((n, max_len), pad, dtype=np.int64),
        "labels": np.full((n, max_len), IGNORE, dtype=np.int64),
        "segment_ids": np.zeros((n, max_len), dtype=np.int32),
        "samples": np.array([len(r) for r in rows], dtype=np.int64),
        "tokens": np.array([sum(len(seqs[i][0]) for i in r) for r in rows], dtype=np.int64),
        "truncated": np.array([sum(truncated[i] for i in r) for r in rows], dtype=np.int64),
        "dropped": np.zeros(n, dtype=np.int64),
    }
    for r, members in enumerate(rows):
        pos = 0
        for seg, i in enumerate(members, 1):
            ids, labels = seqs[i]
            end = pos + len(ids)
            out["input_ids"][r, pos:end] = ids
            out["labels"][r, pos:end] = labels
            out["labels"][r, pos] = IGNORE  # a record's first token has nothing to predict it
            out["segment_ids"][r, pos:end] = seg
            pos = end
    return out


def model_inputs(batch: dict, attn_implementation: str = "sdpa") -> dict:
    """Packed rows (torch tensors) -> kwargs of `packed_loss`: one flat row of real tokens.

    `targets` are the next-token labels at the `logits_to_keep` positions; a record's last
    token never predicts the next record's first.
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
        "packed_groups": length_groups(begins, lengths, positions),
    }


def length_groups(begins: torch.Tensor, lengths: torch.Tensor, positions: torch.Tensor):
    """Records batched by similar length for packed_sdpa: (gathers, scatter).

    Each gather is a [records, longest] index into the flat row, the shorter records
    padded at their end (causal attention never looks past a query, so real tokens never
    see the padding); `scatter` takes each token's output back from the groups' outputs
    laid end to end. A group's longest record is at most GROUP_SLACK times its shortest.
    """
    order = torch.argsort(lengths, descending=True, stable=True).tolist()
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[i] * GROUP_SLACK >= lengths[groups[-1][0]]:
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


def packed_loss(model, targets: torch.Tensor, **inputs) -> torch.Tensor:
    """Mean next-token cross-entropy over the batch's labelled tokens (as HF computes it)."""
    logits = model(**inputs).logits[0].float()
    return F.cross_entropy(logits, targets, reduction="sum") / max(1, len(targets))


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
