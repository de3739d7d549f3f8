"""Corpus data: from task files to the packed, mixed stream a trial trains on.

    sources    locate corpus files (local, built-in, hub) and read them with line numbers
    records    what a record must hold (checks), its task family, its answer text
    overlap    exact and near duplicates, decontamination against eval sets
    scan       parse every file into rows or bad records; count them per task (cached)
    mixture    how many records of each task one epoch holds
    packing    tokenise with the chat template, mask the prompt, pack into rows
    pipeline   the Ray Data pipeline of a trial: read, split, tokenise, one share per rank
    shard      a rank's share, and the endless stream of packed micro-batches it trains on
    demo       the built-in demo corpus
    world      the shopping world: a generated catalogue with planted transfer and a control

CLI: `python -m ecomtrain.data validate|stats PATH...`.
"""

from ecomtrain.data.pipeline import check_scan, mixture_stats, task_split, train_dataset
from ecomtrain.data.records import Bad, CorpusError, render_answer, validate
from ecomtrain.data.scan import parse_file, scan_corpus
from ecomtrain.data.sources import load_corpus, read_records, resolve_corpus

__all__ = [
    "Bad",
    "CorpusError",
    "check_scan",
    "load_corpus",
    "mixture_stats",
    "parse_file",
    "read_records",
    "render_answer",
    "resolve_corpus",
    "scan_corpus",
    "task_split",
    "train_dataset",
    "validate",
]
