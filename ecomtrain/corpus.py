"""Corpus files: locate, read (JSON Lines or JSON arrays), validate, render answers.

Every error names the file, the line and the field, so a bad record can be fixed
where it lives.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ecomtrain.tasks import FAMILIES, METRICS_BY_TYPE

REQUIRED = ("input_field", "output_field", "task_type", "metric")
TRACK_PREFIX = "amazon-kdd-cup-24-"


class CorpusError(ValueError):
    """A record or file that cannot be used; the message reads `PATH:LINE: field: reason`."""


def cache_dir() -> Path:
    """Where ecomtrain caches what it builds (tiny models, the demo corpus)."""
    return Path(os.environ.get("ECOMTRAIN_CACHE", Path.home() / ".cache" / "ecomtrain"))


def resolve_corpus(paths: list[str]) -> list[str]:
    """Absolute paths of the corpus files; "demo" is written to the cache on first use."""
    from ecomtrain.demo import fingerprint, write_demo_corpus

    out = []
    for p in paths:
        if p == "demo":
            target = cache_dir() / f"demo-corpus-{fingerprint()}.jsonl"
            out.append(str(target if target.exists() else write_demo_corpus(target)))
        elif not Path(p).is_file():
            raise CorpusError(f"{p}: corpus file not found")
        else:
            out.append(str(Path(p).resolve()))
    return out


def read_records(path: str, data: bytes | None = None) -> list[tuple[int, dict]]:
    """(line, record) pairs of a JSON Lines or JSON array file (its bytes, if given)."""
    data = Path(path).read_bytes() if data is None else data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise CorpusError(f"{path}:{line}: encoding: invalid UTF-8 at byte {e.start}") from None
    if text.lstrip().startswith("["):
        return _read_array(path, text)
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            raise CorpusError(f"{path}:{lineno}: json: {e.msg} (column {e.colno})") from None
    return out


def _read_array(path: str, text: str) -> list[tuple[int, dict]]:
    """Decode a JSON array element by element, keeping the line each element starts on."""
    decoder, out = json.JSONDecoder(), []
    pos, line, last = text.index("[") + 1, 1, 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return out
        line += text.count("\n", last, pos)
        last = pos
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{path}:{e.lineno}: json: {e.msg} (column {e.colno})") from None
        out.append((line, item))


def validate(record, where: str) -> None:
    """Raise CorpusError `where: field: reason` if a record cannot be trained or scored on."""
    if not isinstance(record, dict):
        raise CorpusError(f"{where}: record: expected an object, got {type(record).__name__}")
    for key in REQUIRED:
        if key not in record:
            raise CorpusError(f"{where}: {key}: missing")
    if not isinstance(record["input_field"], str) or not record["input_field"].strip():
        raise CorpusError(f"{where}: input_field: must be a non-empty string")
    task_type, metric = record["task_type"], record["metric"]
    if task_type not in METRICS_BY_TYPE:
        raise CorpusError(f"{where}: task_type: unknown {task_type!r}")
    if metric not in METRICS_BY_TYPE[task_type]:
        raise CorpusError(f"{where}: metric: {metric!r} is not allowed for {task_type}")
    name = record.get("task_name")
    if name is not None and name not in FAMILIES and not str(name).startswith("task"):
        raise CorpusError(f"{where}: task_name: unknown task family {name!r}")


def load_corpus(paths: list[str]) -> list[dict]:
    """Read and validate every record of the given files (used for small eval files)."""
    out = []
    for path in paths:
        for lineno, record in read_records(path):
            validate(record, f"{path}:{lineno}")
            out.append(record)
    return out


def capability_of(record: dict) -> str:
    """The record's capability (track): explicit field, its track, or its family's."""
    if record.get("capability"):
        return record["capability"]
    if record.get("track"):
        return record["track"].removeprefix(TRACK_PREFIX)
    family = FAMILIES.get(record.get("task_name", ""))
    return family.capability if family else "unknown"


def render_answer(record: dict) -> str:
    """The training target text for a record, in the format the ShopBench parsers read."""
    out, task_type = record["output_field"], record["task_type"]
    if task_type == "ranking":  # truth holds relevance weights; answer with the order
        order = sorted(range(len(out)), key=lambda i: -out[i])
        return ",".join(str(i + 1) for i in order)
    if task_type == "retrieval":
        return ",".join(str(i) for i in out)
    if task_type == "named_entity_recognition":
        return ", ".join(out)
    return str(out)
