"""The held-out sample every trial of a sweep is scored on, and the untrained base model's
scores on it (the baseline the report compares every cell with).

Per task, the first records in the order of a hash of their normalised input: a stable,
unbiased sample (not the first records by text) that is the same for every trial whatever
it trains on. How many: `held_out_sizes`.

The sample has two parts (`with_parts`, the one rule, stamps each row's "part"): the
selection part, which every metric trials are ranked and stopped on comes from (score,
track/*: Tune, ASHA, checkpoint retention, the best adapter), and the confirmation part
(about `eval.confirm_fraction` of the records), which only scores confirm/* and the
report's claims about the selected best: records that chose nothing. A record's part
follows from its own text (`part_of`), so it stays the same when the sample grows, and a
search that proposes something on selection records can confirm it on these; the one
exception keeps every task in the selection part: a task whose records would all be
confirmation records keeps them for selection.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

import ray

from ecomtrain.config import Config
from ecomtrain.data.overlap import exact_key, words
from ecomtrain.data.pipeline import task_split
from ecomtrain.evaluate.answer import CONFIRM, SELECT, evaluate_rows
from ecomtrain.evaluate.metrics import task_weights
from ecomtrain.model import DTYPES, load_model, load_tokenizer

CONFIRM_SALT = b"ecomtrain-confirm"  # not the train/eval split's hash (data.scan.is_eval)


def part_of(row: dict, fraction: float) -> str:
    """The part of the held-out sample a record is in by its own text: CONFIRM when a salted
    hash of its normalised input falls below `fraction`, else SELECT (`with_parts` applies
    it to a sample). Records equal after normalisation share a part; the salt keeps the
    parts independent of the train/eval split and of the sample's order, which hash the
    same text unsalted."""
    text = " ".join(words(row["input"])).encode("utf-8")
    digest = hashlib.blake2b(text, digest_size=8, key=CONFIRM_SALT).digest()
    return CONFIRM if int.from_bytes(digest, "big") / 2**64 < fraction else SELECT


def with_parts(rows: list[dict], fraction: float) -> list[dict]:
    """The rows, each with its "part": `part_of`'s, except that the records of a task that
    would have no selection record are all selection (the trials' score keeps every task)."""
    parts = [part_of(r, fraction) for r in rows]
    kept = {r["task_family"] for r, p in zip(rows, parts, strict=True) if p == SELECT}
    return [
        r | {"part": p if r["task_family"] in kept else SELECT}
        for r, p in zip(rows, parts, strict=True)
    ]


def held_out_sample(rows: Iterable[dict], cfg: Config) -> tuple[list[dict], str]:
    """The scored sample of the held-out rows, each with its "part" (`with_parts`), and
    what it is: records per part, the score's worst-case standard error on each, and any
    task without a confirmation record (the confirmation part's scores leave it out)."""
    by_task: dict[str, list[dict]] = {}
    for row in rows:
        by_task.setdefault(row["task_family"], []).append(row)
    for task_rows in by_task.values():
        task_rows.sort(key=lambda r: (exact_key(r["input"]), r["source"]))
    tracks = {task: task_rows[0]["capability"] for task, task_rows in by_task.items()}
    sizes, _ = held_out_sizes({t: len(r) for t, r in by_task.items()}, tracks, cfg)
    fraction = cfg.eval.confirm_fraction
    sample = with_parts([r for t in sorted(by_task) for r in by_task[t][: sizes[t]]], fraction)
    counts = {
        part: {t: sum(r["part"] == part and r["task_family"] == t for r in sample) for t in sizes}
        for part in (SELECT, CONFIRM)
    }
    message = (
        f"eval: {len(sample)} held-out records over {len(sizes)} tasks; "
        f"{_part_text(counts[SELECT], tracks)} rank the trials (score, track/*), "
        f"{_part_text(counts[CONFIRM], tracks)} confirm the best (confirm/*, "
        f"eval.confirm_fraction {fraction}); any scores in [0, 1], eval.target_se "
        f"{cfg.eval.target_se or 'off'}"
    )
    empty = sorted(t for t, n in counts[CONFIRM].items() if n == 0)
    if empty and fraction > 0:
        message += (
            f"; no confirmation record for {', '.join(empty)}: the confirmation part's scores "
            f"leave {'it' if len(empty) == 1 else 'them'} out"
        )
    return sample, message


def _part_text(counts: dict[str, int], tracks: dict[str, str]) -> str:
    """One part's size, and the score's worst-case standard error on it."""
    present = {t: n for t, n in counts.items() if n}
    if not present:
        return "0 records"
    w = task_weights({t: tracks[t] for t in present})
    bound = math.sqrt(sum(w[t] ** 2 / (4 * n) for t, n in present.items()))
    return f"{sum(present.values())} records (standard error of the score at most {bound:.4f})"


def held_out_sizes(available: dict[str, int], tracks: dict[str, str], cfg: Config) -> tuple:
    """Records to score per task, and the resulting worst-case standard error of the score.

    The score averages tasks within tracks and tracks overall, so task t weighs
    w_t = 1 / (tracks x tasks in its track); with per-record scores in [0, 1] (variance at
    most 1/4) the score's variance is at most sum_t w_t^2 / (4 n_t). With `eval.target_se`,
    n_t is the smallest allocation that reaches it on the selection part (n_t proportional to
    w_t, 1 - eval.confirm_fraction of them expected there; capped by the records a task
    has); else every task gets `data.max_eval_per_task` (0: all it has). The bound returned
    is the whole sample's; `held_out_sample` says each part's."""
    w = task_weights(tracks)
    cap = {t: min(n, cfg.data.max_eval_per_task or n) for t, n in available.items()}
    if cfg.eval.target_se > 0:
        # the target is the selection part's: the whole sample's variance may be this share
        target2 = cfg.eval.target_se**2 * (1 - cfg.eval.confirm_fraction)
        sizes, free = {}, set(cap)
        while free:  # tasks that hit their cap are fixed; the rest share what is left
            budget = target2 - sum(w[t] ** 2 / (4 * sizes[t]) for t in sizes)
            total = sum(w[t] for t in free)
            want = {t: w[t] * total / (4 * budget) if budget > 0 else cap[t] for t in free}
            capped = {t for t in free if want[t] >= cap[t]}
            if not capped:
                sizes |= {t: max(1, math.ceil(want[t])) for t in free}
                break
            sizes |= {t: cap[t] for t in capped}
            free -= capped
    else:
        sizes = cap
    bound = math.sqrt(sum(w[t] ** 2 / (4 * sizes[t]) for t in sizes if sizes[t]))
    return sizes, bound


def held_out_rows(cfg: Config) -> tuple[list[dict], str]:
    """The held-out sample of the configured corpus (read through Ray Data; it does not
    depend on what a trial trains on), and a line saying what it is."""
    _, held = task_split(cfg, [])
    return held_out_sample(held.iter_rows(), cfg)


@ray.remote(num_cpus=0.5)
def base_model_scores(cfg: Config, model_path: str, rows: list[dict]) -> tuple[dict, list[dict]]:
    """The untrained base model scored on the held-out sample `rows`, as a trial is (a Ray
    task: `.options(num_gpus=1)` on a GPU cluster)."""
    model = load_model(model_path, precision=cfg.train.precision)
    if cfg.train.use_gpu:
        model = model.to("cuda", DTYPES[cfg.train.precision])
    return evaluate_rows(model, load_tokenizer(model_path), rows, cfg)
