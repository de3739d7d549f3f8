"""Evaluation by the Amazon KDD Cup 2024 ShopBench rules.

    metrics   the official parsers, metrics and task -> track -> overall aggregation
    answer    batched greedy answers of a model, and scores of held-out rows (in-loop)
    pool      a Ray Data pool of model actors answering a whole file (HF or vLLM)
    files     data and responses files, score tables, written atomically

CLI: `python -m ecomtrain.evaluate score|generate|run`.
"""

from ecomtrain.evaluate.answer import respond, score_rows
from ecomtrain.evaluate.files import EvalError, load_data, score_files
from ecomtrain.evaluate.metrics import aggregate, parse, task_score
from ecomtrain.evaluate.pool import Settings, generate_responses

__all__ = [
    "EvalError",
    "Settings",
    "aggregate",
    "generate_responses",
    "load_data",
    "parse",
    "respond",
    "score_files",
    "score_rows",
    "task_score",
]
