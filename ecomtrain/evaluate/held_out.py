"""The held-out sample every trial of a sweep is scored on, and the untrained base model's
scores on it (the baseline the report compares every cell with).

Per task, the first records in the order of a hash of their normalised input: a stable,
unbiased sample (not the first records by text) that is the same for every trial whatever
it trains on; an exact duplicate of a record is scored once. How many: `held_out_sizes`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import ray

from ecomtrain.config import Config
from ecomtrain.data.overlap import exact_key
from ecomtrain.data.pipeline import task_split
from ecomtrain.data.scan import Duplicates
from ecomtrain.evaluate.answer import evaluate_rows
from ecomtrain.evaluate.metrics import task_weights
from ecomtrain.model import DTYPES, load_model, load_tokenizer


def held_out_sample(rows: Iterable[dict], cfg: Config) -> tuple[list[dict], str]:
    """The scored sample of the held-out rows (exact duplicates once), and a line saying
    what it is."""
    by_task: dict[str, list[dict]] = {}
    for row in rows:
        by_task.setdefault(row["task_family"], []).append(row)
    duplicates = Duplicates()
    for task, task_rows in by_task.items():
        task_rows.sort(key=lambda r: (exact_key(r["input"]), r["source"]))
        by_task[task] = [r for r in task_rows if not duplicates.add(r)]
    tracks = {task: task_rows[0]["capability"] for task, task_rows in by_task.items()}
    sizes, bound = held_out_sizes({t: len(r) for t, r in by_task.items()}, tracks, cfg)
    message = (
        f"eval: {sum(sizes.values())} held-out records over {len(sizes)} tasks; standard "
        f"error of the score at most {bound:.4f} (any scores in [0, 1]; "
        f"eval.target_se {cfg.eval.target_se or 'off'})"
    )
    if duplicates.count:
        message += f"; {duplicates.count} exact duplicate(s) left out (first: {duplicates.example})"
    return [r for task in sorted(by_task) for r in by_task[task][: sizes[task]]], message


def held_out_sizes(available: dict[str, int], tracks: dict[str, str], cfg: Config) -> tuple:
    """Records to score per task, and the resulting worst-case standard error of the score.

    The score averages tasks within tracks and tracks overall, so task t weighs
    w_t = 1 / (tracks x tasks in its track); with per-record scores in [0, 1] (variance at
    most 1/4) the score's variance is at most sum_t w_t^2 / (4 n_t). With `eval.target_se`,
    n_t is the smallest allocation that reaches it (n_t proportional to w_t, capped by the
    records a task has); else every task gets `data.max_eval_per_task` (0: all it has)."""
    w = task_weights(tracks)
    cap = {t: min(n, cfg.data.max_eval_per_task or n) for t, n in available.items()}
    if cfg.eval.target_se > 0:
        sizes, free = {}, set(cap)
        while free:  # tasks that hit their cap are fixed; the rest share what is left
            budget = cfg.eval.target_se**2 - sum(w[t] ** 2 / (4 * sizes[t]) for t in sizes)
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
