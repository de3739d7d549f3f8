"""Answering for evaluation: batched greedy generation, and scoring of held-out rows.

Used inside the training loop (rank 0 scores its adapter), for a sweep's untrained baseline
and by the actor pool. `evaluate_rows` returns the flat metrics a run reports and one entry
per record (its score, and its answer's loss under teacher forcing), from which every
uncertainty in the report is computed.
"""

from __future__ import annotations

import json
import math
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ecomtrain.config import Config
from ecomtrain.data.packing import IGNORE, Prompt, encode, prompt_text, truncate
from ecomtrain.evaluate.metrics import aggregate, record_scores, standard_error, task_values
from ecomtrain.experts import route_rows

SCORES_FILE = "scores.jsonl"  # per-record entries of the held-out sample, in each checkpoint
# The parts of the held-out sample (a row's "part", set by evaluate.held_out.with_parts):
# trials are ranked and stopped on the selection part; the confirmation part scores only
# confirm/*, its metrics of these prefixes.
SELECT, CONFIRM = "select", "confirm"
SHOWN = ("score", "track/", "task/")
EXTRA_SCORES_FILE = "extra_scores.jsonl"  # and of the extra eval files
INPUT_CHARS = 500  # of each prediction's input (see `predictions`)


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


def respond(
    model,
    tokenizer,
    rows: list[dict],
    max_new_tokens: int,
    batch_size: int,
    prompt: Prompt,
    share: tuple[int, int] = (0, 1),
):
    """One response per row (rows carry `input` and `task_type`), in row order.

    `share` (rank, world): answer only every world-th batch from the rank-th on (None for
    the other rows); the batches are the same whatever the share, so the ranks' answers
    put together equal one process's, bit for bit."""
    responses: list[str | None] = [None if share[1] > 1 else ""] * len(rows)
    by_budget: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        by_budget.setdefault(new_tokens_for(row["task_type"], max_new_tokens), []).append(i)
    batches = []
    for budget, idx in by_budget.items():
        idx.sort(key=lambda i: -len(rows[i]["input"]))  # similar lengths share a batch
        batches += [(budget, idx[i : i + batch_size]) for i in range(0, len(idx), batch_size)]
    for budget, idx in batches[share[0] :: share[1]]:
        route_rows(model, [rows[i] for i in idx])
        prompts = [prompt_text(tokenizer, rows[i]["input"], prompt) for i in idx]
        for i, text in zip(idx, generate(model, tokenizer, prompts, budget, len(idx)), strict=True):
            responses[i] = text
    return responses


def as_records(rows: list[dict]) -> list[dict]:
    """Held-out rows (as produced by ecomtrain.data) as records the metrics score."""
    return [
        {
            "output_field": json.loads(r["output_json"]),
            "metric": r["metric"],
            "task_type": r["task_type"],
            "task_name": r["task_family"] or r["task_name"],
            "capability": r["capability"],
        }
        for r in rows
    ]


@torch.no_grad()
def answer_losses(
    model, tokenizer, rows: list[dict], cfg: Config, share: tuple[int, int] = (0, 1)
) -> list[tuple[float, int] | None]:
    """Per row: the summed next-token loss of its answer under teacher forcing, and the
    number of answer tokens (prompts cut as in training, `data.max_seq_len`). `share` as
    in `respond`: only every world-th batch from the rank-th on (None for the others)."""
    out: list = [None] * len(rows)
    model.eval()
    starts = range(0, len(rows), cfg.eval.batch_size)
    for i in starts[share[0] :: share[1]]:
        seqs = []
        route_rows(model, rows[i : i + cfg.eval.batch_size])
        for r in rows[i : i + cfg.eval.batch_size]:
            ids, labels = encode(tokenizer, r["input"], r["answer"], Prompt.of(cfg))
            seqs.append(truncate(ids, labels, cfg.data.max_seq_len)[:2])
        width = max(len(ids) for ids, _ in seqs)
        ids = torch.full((len(seqs), width), tokenizer.pad_token_id)
        labels = torch.full((len(seqs), width), IGNORE)
        for j, (x, y) in enumerate(seqs):
            ids[j, : len(x)], labels[j, : len(y)] = torch.tensor(x), torch.tensor(y)
        mask = (torch.arange(width)[None] < torch.tensor([len(x) for x, _ in seqs])[:, None]).long()
        logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
        target = labels[:, 1:].to(model.device)
        loss = F.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), target, ignore_index=IGNORE, reduction="none"
        )
        values = zip(loss.sum(1).tolist(), (target != IGNORE).sum(1).tolist(), strict=True)
        out[i : i + len(seqs)] = list(values)
    return out


def evaluate_rows(
    model,
    tokenizer,
    rows: list[dict],
    cfg: Config,
    trained: list[str] = (),
    share: tuple[int, int] = (0, 1),
):
    """Flat metrics of `model` on held-out rows, and one entry per row.

    `share` (rank, world): every rank of a process group answers its share of the batches
    and the ranks exchange their answers, so each returns the whole result (equal to one
    process's, bit for bit) in about 1 / world of the time.

    Metrics, on the rows of the selection part (rows without a "part": all of them): score,
    track/<name>, task/<name> (ShopBench); score_se (its standard error from the records' own
    scores); score_seen and score_unseen (on the tasks in `trained` and on the others, when
    there are both); eval_loss and eval_loss/<task> (mean answer-token loss); eval_likelihood
    (`likelihood`). On the confirmation part's rows (evaluate.held_out.with_parts), when there
    are any: confirm/score, confirm/score_se, confirm/track/<name>, confirm/task/<name>,
    confirm/records. Entries, one per row of either part: id (the record's file:line), part,
    task, track, metric, score (with TP, FP and FN for micro F1), loss, tokens and the
    response."""
    t = time.time()
    e = cfg.eval
    responses = respond(
        model, tokenizer, rows, e.max_new_tokens, e.batch_size, Prompt.of(cfg), share
    )
    losses = answer_losses(model, tokenizer, rows, cfg, share)
    if share[1] > 1:
        responses, losses = merge_shares((responses, losses), share[1])
    records = as_records(rows)
    scores = record_scores(records, responses)
    entries = []
    for row, record, score, (loss, tokens), response in zip(
        rows, records, scores, losses, responses, strict=True
    ):
        entry = {"id": row["source"], "part": row.get("part", SELECT)}
        entry |= {"task": record["task_name"], "track": row["capability"]}
        entry |= {"metric": row["metric"], **score, "loss": loss, "tokens": tokens}
        entries.append(entry | {"response": response})
    select = [i for i, x in enumerate(entries) if x["part"] != CONFIRM]
    confirm = [i for i, x in enumerate(entries) if x["part"] == CONFIRM]
    if not select:
        raise ValueError(f"none of the {len(rows)} rows is in the selection part")
    flat = part_metrics(select, records, responses, entries, trained)
    flat |= {"eval_records": len(rows), "eval_s": time.time() - t}
    if confirm:
        picked = part_metrics(confirm, records, responses, entries, ())
        flat |= {f"confirm/{k}": v for k, v in picked.items() if k.startswith(SHOWN)}
        flat["confirm/records"] = len(confirm)
    return flat, entries


def part_metrics(
    idx: list[int], records: list[dict], responses: list, entries: list[dict], trained
) -> dict:
    """The flat metrics of the rows `idx` (see `evaluate_rows`)."""
    result = aggregate([records[i] for i in idx], [responses[i] for i in idx])
    mine = [entries[i] for i in idx]
    flat = {"score": result["overall"], "score_se": standard_error(mine)}
    flat |= {f"track/{k}": v for k, v in result["tracks"].items()}
    flat |= {f"task/{k}": v["score"] for k, v in result["tasks"].items()}
    seen = [i for i in idx if records[i]["task_name"] in set(trained)]
    unseen = [i for i in idx if records[i]["task_name"] not in set(trained)]
    for name, part in (("score_seen", seen), ("score_unseen", unseen)):
        if seen and unseen:
            picked = aggregate([records[i] for i in part], [responses[i] for i in part])
            flat[name] = picked["overall"]
    flat["eval_loss"] = mean_loss(mine)
    flat["eval_likelihood"] = likelihood(mine)
    for task in result["tasks"]:
        flat[f"eval_loss/{task}"] = mean_loss([e for e in mine if e["task"] == task])
    return flat


def merge_shares(mine: tuple[list, ...], world: int) -> tuple[list, ...]:
    """Every rank's lists, None where another rank answered, put together (a collective:
    every rank of the process group calls it)."""
    parts: list = [None] * world
    dist.all_gather_object(parts, mine)
    return tuple(
        [next(p[k][i] for p in parts if p[k][i] is not None) for i in range(len(mine[k]))]
        for k in range(len(mine))
    )


def mean_loss(entries: list[dict]) -> float:
    """Mean answer-token loss over the entries' tokens."""
    return sum(e["loss"] for e in entries) / max(1, sum(e["tokens"] for e in entries))


def likelihood(entries: list[dict]) -> float:
    """The score's task -> track -> overall weighting over each record's reference
    likelihood, exp(-mean answer-token loss): the geometric mean probability the model gives
    the reference's tokens, in [0, 1] like a record's score. It moves smoothly with training
    (no 0/1 jumps of a generated answer) and, unlike the pooled loss, is not dominated by
    the tasks a trial never trained on (their records sit near 0, as their scores do). Where
    measured it still favoured subsets that cover more tasks, unlike the score
    (docs/benchmarks.md, "asha"); likely because most tokens of a trained task's templated answers become
    predictable whether or not its facts are right."""
    by_task, w = task_values(
        entries, lambda e: math.exp(-e["loss"] / e["tokens"]) if e["tokens"] else None
    )
    return sum(w[task] * sum(v) / len(v) for task, v in by_task.items())


def predictions(rows: list[dict], entries: list[dict], n: int) -> list[dict]:
    """Up to `n` held-out answers beside their gold answers, taken in turn from each task
    (the first records of each, so every evaluation of a run shows the same questions)."""
    by_task: dict[str, list[dict]] = {}
    for row, entry in zip(rows, entries, strict=True):
        by_task.setdefault(entry["task"], []).append(
            {
                "task": entry["task"],
                "input": row["input"][:INPUT_CHARS],
                "gold": row["answer"],
                "answer": entry["response"],
                "score": entry["score"],
            }
        )
    out = []
    for turn in range(max((len(v) for v in by_task.values()), default=0)):
        for task in sorted(by_task):
            if len(out) < n and turn < len(by_task[task]):
                out.append(by_task[task][turn])
    return out
