"""Evaluation by the Amazon KDD Cup 2024 ShopBench rules.

    metrics   the official parsers, metrics and task -> track -> overall aggregation
    answer    batched greedy answers of a model, and scores of held-out rows (in-loop)
    held_out  the held-out sample every trial is scored on, and the base model's scores
    pool      a Ray Data pool of model actors answering a whole file (HF or vLLM)
    datafiles data and responses files, score tables, written atomically

CLI: `python -m ecomtrain.evaluate score|generate|run`.
"""
