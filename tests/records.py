"""Records for tests to start from (and break): valid ShopBench records of each task type,
and corpus files of them."""

from __future__ import annotations

import json
from pathlib import Path


def mc(input_field: str = "Pick one.\n0. a\n1. b\nAnswer:", answer: int = 1, **fields) -> dict:
    """A multiple-choice record (accuracy), its options numbered from 0 in its input."""
    record = {"input_field": input_field, "output_field": answer}
    return record | {"task_type": "multiple-choice", "metric": "accuracy"} | fields


def generation(input_field: str, output: str, metric: str = "rougel", **fields) -> dict:
    """A generation record."""
    record = {"input_field": input_field, "output_field": output}
    return record | {"task_type": "generation", "metric": metric} | fields


def write_jsonl(path: Path, records: list[dict]) -> Path:
    """`records` as a JSON Lines corpus file at `path`."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path
