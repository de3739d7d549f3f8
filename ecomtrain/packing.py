"""Tokenisation with the chat template, over-long records, sequence packing, model inputs.

- Loss only on the answer: prompt tokens are labelled IGNORE.
- Over-long records: the prompt loses tokens from its middle (the instruction at its start
  and the question, choices and answer cue at its end stay) until prompt + answer fit
  `max_seq_len`; a record whose answer alone (plus one prompt token) does not fit is dropped,
  counted and logged with its file and line.
- Packing: records are packed first-fit-decreasing into rows of exactly `max_seq_len` tokens
  with `segment_ids` (1, 2, ... per record, 0 for padding).
- `model_inputs` turns packed rows into position_ids restarting at 0 per record and a 4-D
  block-diagonal causal additive float mask (0 / finfo.min), so no token attends across
  records (position_ids alone do not isolate them under sdpa or eager). With
  flash_attention_2 the batch is flattened to one row and position_ids alone mark the
  records: transformers then runs varlen attention (GPU only; not exercised on CPU).
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch

IGNORE = -100
log = logging.getLogger("ecomtrain.data")
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
    if n:
        out["dropped"][0] = dropped
    return out


def model_inputs(batch: dict, attn_implementation: str = "sdpa") -> dict:
    """Packed rows (torch tensors) -> model kwargs, trimmed to the longest row's content."""
    seg = batch["segment_ids"].long()
    n = int((seg > 0).long().cumsum(1).argmax(1).max()) + 1  # last non-pad column, over rows
    seg = seg[:, :n]
    ids, labels = batch["input_ids"][:, :n].long(), batch["labels"][:, :n].long()
    idx = torch.arange(n).expand_as(seg)
    starts = torch.ones_like(seg, dtype=torch.bool)
    starts[:, 1:] = seg[:, 1:] != seg[:, :-1]
    positions = idx - torch.cummax(torch.where(starts, idx, 0), dim=1).values
    if attn_implementation == "flash_attention_2":
        return {
            "input_ids": ids.reshape(1, -1),
            "labels": labels.reshape(1, -1),
            "position_ids": positions.reshape(1, -1),
        }
    same = seg[:, :, None] == seg[:, None, :]
    allowed = same & torch.ones(n, n, dtype=torch.bool).tril()
    mask = torch.zeros(allowed.shape, dtype=torch.float32)
    mask = mask.masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]
    return {"input_ids": ids, "labels": labels, "position_ids": positions, "attention_mask": mask}
