"""Evaluation by the Amazon KDD Cup 2024 ShopBench rules.

    metrics   the official parsers, metrics and task -> track -> overall aggregation
    answer    batched greedy answers of a model, and scores of held-out rows (in-loop)
    held_out  the held-out sample every trial is scored on, and the base model's scores
    pool      a Ray Data pool of model actors answering a whole file (HF or vLLM)
    files     data and responses files, score tables, written atomically

CLI: `python -m ecomtrain.evaluate score|generate|run`.
"""

from ecomtrain.evaluate.answer import evaluate_rows, respond
from ecomtrain.evaluate.files import EvalError, load_data, score_files
from ecomtrain.evaluate.metrics import aggregate, parse, task_score
from ecomtrain.evaluate.pool import Settings, generate_responses

__all__ = [
    "EvalError",
    "Settings",
    "aggregate",
    "evaluate_rows",
    "generate_responses",
    "load_data",
    "parse",
    "respond",
    "score_files",
    "task_score",
]
