"""Ray Data pipeline: read corpus files -> keep the trial's tasks -> split -> tokenize.

Files are parsed inside Ray tasks (never on the driver), each record becomes a row
of plain strings, the held-out split is chosen by a hash of the input so it never
changes between trials, and the train split is tokenized with the model's chat
template, the loss masked to the answer tokens.
"""

from __future__ import annotations

import functools
import hashlib
import json

import numpy as np
import ray
import torch

from ecomtrain.config import Config, DataConfig
from ecomtrain.corpus import capability_of, read_records, render_answer, resolve_corpus, validate
from ecomtrain.tasks import FAMILIES, expand

IGNORE = -100
# Data tasks are light; a fractional CPU lets them run beside trainers holding whole CPUs.
SMALL_TASK = {"num_cpus": 0.25}
# The official ShopBench baseline prompt prefix.
PROMPT_PREFIX = (
    "You are a helpful online shopping assistant. Please answer the following question "
    "about online shopping and follow the given instructions.\n\n"
)


def is_eval(text: str, fraction: float) -> bool:
    """Deterministic held-out assignment by a hash of the record's input."""
    digest = hashlib.sha1(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def parse_file(row: dict) -> list[dict]:
    """One corpus file (bytes) -> validated rows of plain strings."""
    path = row["path"]
    rows = []
    for lineno, record in read_records(path, row["bytes"]):
        validate(record, f"{path}:{lineno}")
        name = record.get("task_name") or ""
        family = FAMILIES.get(name)
        rows.append(
            {
                "input": record["input_field"],
                "answer": render_answer(record),
                "output_json": json.dumps(record["output_field"], ensure_ascii=False),
                "task_name": name,
                "task_family": family.name if family else name,
                "capability": capability_of(record),
                "task_type": record["task_type"],
                "metric": record["metric"],
            }
        )
    return rows


def read_corpus(cfg: DataConfig) -> ray.data.Dataset:
    """All records of the configured corpus files as a Ray Dataset of string rows."""
    paths = resolve_corpus(cfg.corpus)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # one bar per operator per worker floods trial logs
    files = ray.data.read_binary_files(paths, include_paths=True, **SMALL_TASK)
    return files.flat_map(parse_file, **SMALL_TASK)


def task_split(cfg: Config, tasks: list[str]) -> tuple[ray.data.Dataset, ray.data.Dataset]:
    """(train, eval): train on `tasks`; evaluate on `cfg.eval.tasks` (all tasks if empty).

    Every trial of a sweep scores on the same held-out records whatever it trains on,
    so trials are comparable and unseen tasks show what diversity buys.
    """
    ds = read_corpus(cfg.data)
    frac = cfg.data.eval_fraction
    train = _keep(ds.filter(lambda r: not is_eval(r["input"], frac), **SMALL_TASK), tasks)
    held_out = _keep(ds.filter(lambda r: is_eval(r["input"], frac), **SMALL_TASK), cfg.eval.tasks)
    return train, held_out


def _keep(ds: ray.data.Dataset, tasks: list[str]) -> ray.data.Dataset:
    if not tasks:
        return ds
    keep = set(expand(tasks))
    return ds.filter(lambda r: r["task_family"] in keep, **SMALL_TASK)


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str):
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


def tokenize_batch(batch: dict, model_path: str, max_len: int, prefix: bool) -> dict:
    """Tokenize a batch to fixed-length arrays; over-long records are cut on the right."""
    tok = _tokenizer(model_path)
    n = len(batch["input"])
    ids = np.full((n, max_len), tok.pad_token_id, dtype=np.int64)
    labels = np.full((n, max_len), IGNORE, dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    truncated = np.zeros(n, dtype=np.int64)
    for i, (q, a) in enumerate(zip(batch["input"], batch["answer"], strict=True)):
        x, y = encode(tok, q, a, prefix)
        truncated[i] = len(x) > max_len
        x, y = x[:max_len], y[:max_len]
        ids[i, : len(x)], labels[i, : len(y)], lengths[i] = x, y, len(x)
    return {"input_ids": ids, "labels": labels, "length": lengths, "truncated": truncated}


def model_inputs(batch: dict) -> dict:
    """A tokenized batch (torch tensors) -> model kwargs, trimmed to its longest row."""
    n = int(batch["length"].max())
    mask = torch.arange(n)[None, :] < batch["length"][:, None]
    return {
        "input_ids": batch["input_ids"][:, :n],
        "attention_mask": mask.long(),
        "labels": batch["labels"][:, :n],
    }


def train_dataset(cfg: Config, model_path: str, tasks: list[str]) -> tuple:
    """Tokenized, shuffled train split and the raw held-out split for one trial."""
    train, held_out = task_split(cfg, tasks)
    train = train.random_shuffle(seed=cfg.data.seed, **SMALL_TASK).map_batches(
        tokenize_batch,
        batch_size=64,
        **SMALL_TASK,
        fn_kwargs={
            "model_path": model_path,
            "max_len": cfg.data.max_seq_len,
            "prefix": cfg.eval.prompt_prefix,
        },
    )
    return train, held_out
