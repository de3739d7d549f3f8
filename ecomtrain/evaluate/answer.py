"""Answering for evaluation: batched greedy generation, and scoring of held-out rows.

Used inside the training loop (rank 0 scores its adapter) and by the actor pool.
"""

from __future__ import annotations

import json

import torch

from ecomtrain.data.packing import prompt_text
from ecomtrain.evaluate.metrics import aggregate


def new_tokens_for(task_type: str, max_new_tokens: int) -> int:
    """ShopBench's budget: one token answers multiple choice, the rest get the default."""
    return 1 if task_type == "multiple-choice" else max_new_tokens


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int):
    """Greedy completions of chat-formatted prompts, left-padded in batches."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    model.eval()
    out: list[str] = []
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(
                prompts[i : i + batch_size],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            ).to(model.device)
            ids = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new = ids[:, enc["input_ids"].shape[1] :]
            out += tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return out


def respond(model, tokenizer, rows: list[dict], max_new_tokens: int, batch_size: int, prefix: bool):
    """One response per row (rows carry `input` and `task_type`), in row order."""
    responses = [""] * len(rows)
    by_budget: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        by_budget.setdefault(new_tokens_for(row["task_type"], max_new_tokens), []).append(i)
    for budget, idx in by_budget.items():
        idx.sort(key=lambda i: -len(rows[i]["input"]))  # similar lengths share a batch
        prompts = [prompt_text(tokenizer, rows[i]["input"], prefix) for i in idx]
        for i, text in zip(
            idx, generate(model, tokenizer, prompts, budget, batch_size), strict=True
        ):
            responses[i] = text
    return responses


def score_rows(
    model, tokenizer, rows: list[dict], max_new_tokens: int, batch_size: int, prefix: bool
):
    """ShopBench scores of `model` on held-out rows (as produced by ecomtrain.data)."""
    responses = respond(model, tokenizer, rows, max_new_tokens, batch_size, prefix)
    records = [
        {
            "output_field": json.loads(r["output_json"]),
            "metric": r["metric"],
            "task_type": r["task_type"],
            "task_name": r["task_family"] or r["task_name"],
            "capability": r["capability"],
        }
        for r in rows
    ]
    return aggregate(records, responses), responses
