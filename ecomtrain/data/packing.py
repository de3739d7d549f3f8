"""Prompts (chat template or raw text), tokenisation, over-long records, and packing.

- The prompt: the official ShopBench prefix (optional) and the question, through the
  tokenizer's chat template (`model.prompt_format: chat`), or as plain text after the BOS
  token with the answer and EOS appended (`raw`: a base model's format, and the protocol of
  the benchmark's own scripts).

- Loss only on the answer: prompt tokens are labelled IGNORE.
- Over-long records (`truncate`): the prompt loses tokens from its middle (the instruction
  at its start and the question, choices and answer cue at its end stay) until prompt +
  answer fit `max_seq_len`; a record whose answer alone (plus one prompt token) does not fit
  is dropped, counted and logged with its file and line.
- Packing: records are packed first-fit-decreasing into rows of exactly `max_seq_len` tokens
  with `segment_ids` (1, 2, ... per record, 0 for padding). A rank packs its share of the
  records anew each epoch (ecomtrain.data.share); the training side turns a batch of rows
  into model inputs (ecomtrain.train.inputs).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ecomtrain.data.mixture import source_keys
from ecomtrain.model import load_tokenizer, require_chat_template

IGNORE = -100
log = logging.getLogger("ecomtrain.data")
# The official ShopBench baseline prompt prefix.
PROMPT_PREFIX = (
    "You are a helpful online shopping assistant. Please answer the following question "
    "about online shopping and follow the given instructions.\n\n"
)


@dataclass(frozen=True)
class Prompt:
    """How a question becomes the text a model sees."""

    prefix: bool = True  # the official ShopBench prompt prefix before the question
    raw: bool = False  # plain text (base models), not the chat template

    @classmethod
    def of(cls, cfg) -> Prompt:
        """The prompt of a run's config (eval.prompt_prefix, model.prompt_format)."""
        return cls(cfg.eval.prompt_prefix, cfg.model.prompt_format == "raw")


@functools.lru_cache(maxsize=4)
def tokenizer_at(path: str):
    """The model's tokenizer, loaded once per process."""
    return load_tokenizer(path)


def prompt_text(tokenizer, question: str, prompt: Prompt) -> str:
    """The prompt the model sees, ending where the answer starts (special tokens as text:
    tokenise it with add_special_tokens=False)."""
    content = (PROMPT_PREFIX if prompt.prefix else "") + question
    if prompt.raw:
        return (tokenizer.bos_token or "") + content
    require_chat_template(tokenizer)
    messages = [{"role": "user", "content": content}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode(tokenizer, question: str, answer: str, prompt: Prompt) -> tuple[list[int], list[int]]:
    """Token ids of prompt+answer and labels that are IGNORE over the prompt."""
    return encode_many(tokenizer, [question], [answer], prompt)[0]


def encode_many(tokenizer, questions, answers, prompt: Prompt) -> list[tuple[list, list]]:
    """`encode` of many records, with one tokenizer call for their prompts and one for their
    answers (a fast tokenizer encodes a batch in parallel, without a call's overhead each)."""
    texts, rests = [], []
    for question, answer in zip(questions, answers, strict=True):
        text = prompt_text(tokenizer, question, prompt)
        if prompt.raw:
            full = text + answer + (tokenizer.eos_token or "")
        else:
            content = (PROMPT_PREFIX if prompt.prefix else "") + question
            full = tokenizer.apply_chat_template(
                [{"role": "user", "content": content}, {"role": "assistant", "content": answer}],
                tokenize=False,
            )
        if not full.startswith(text):
            raise ValueError("chat template renders the prompt differently with an answer")
        texts.append(text)
        rests.append(full[len(text) :])
    if not texts:
        return []
    p_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(rests, add_special_tokens=False)["input_ids"]
    return [(p + a, [IGNORE] * len(p) + a) for p, a in zip(p_ids, a_ids, strict=True)]


def truncate(ids: list[int], labels: list[int], max_len: int) -> tuple[list, list, str]:
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


def tokenize_records(batch: dict, model_path: str, max_len: int, prompt: Prompt) -> pa.Table:
    """Records -> their token ids within max_len (a Ray Data UDF).

    Columns out, one row per kept record: ids (prompt + answer, an Arrow list column: flat
    int32 ids and offsets, which a rank reads into its share without a Python object per
    record: ecomtrain.data.share.read_share), n_prompt (prompt tokens,
    masked from the loss), truncated, task_family, key (its source's key, for the
    mixture's rotation: ecomtrain.data.mixture.positions). A record whose answer does not
    fit is left out and logged with its file and line; the caller counts what is missing.
    """
    tok = tokenizer_at(model_path)
    out: dict[str, list] = {
        k: [] for k in ("ids", "n_prompt", "truncated", "task_family", "source")
    }
    encoded = encode_many(tok, list(batch["input"]), list(batch["answer"]), prompt)
    for (ids, labels), family, src in zip(
        encoded, batch["task_family"], batch["source"], strict=True
    ):
        ids, labels, status = truncate(ids, labels, max_len)
        if status == "dropped":
            log.warning("%s: dropped: answer does not fit max_seq_len %d", src, max_len)
            continue
        out["ids"].append(np.asarray(ids, dtype=np.int32))
        out["n_prompt"].append(labels.count(IGNORE))  # labels: IGNORE * prompt + answer
        out["truncated"].append(status == "truncated")
        out["task_family"].append(family)
        out["source"].append(src)
    return pa.table(
        {
            "ids": pa.array(out["ids"], type=pa.list_(pa.int32())),
            "n_prompt": pa.array(out["n_prompt"], type=pa.int64()),
            "truncated": pa.array(out["truncated"], type=pa.bool_()),
            "task_family": pa.array(out["task_family"], type=pa.string()),
            "key": pa.array(source_keys(out["source"])),
        }
    )


def layout(seqs: list[tuple], max_len: int, pad: int, rows: list[list[int]] | None = None):
    """(ids, labels) sequences laid out in rows of max_len tokens (`rows`: the sequences of
    each row, by default first-fit decreasing): input_ids, labels, segment_ids (1, 2, ...
    per record, 0 for padding), and per row its record count (samples) and tokens."""
    rows = pack([len(s[0]) for s in seqs], max_len) if rows is None else rows
    n = len(rows)
    out = {
        "input_ids": np.full((n, max_len), pad, dtype=np.int64),
        "labels": np.full((n, max_len), IGNORE, dtype=np.int64),
        "segment_ids": np.zeros((n, max_len), dtype=np.int32),
        "samples": np.array([len(r) for r in rows], dtype=np.int64),
        "tokens": np.array([sum(len(seqs[i][0]) for i in r) for r in rows], dtype=np.int64),
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
