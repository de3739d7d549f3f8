"""Corpus files: locate, read (JSON Lines or JSON arrays), validate, assign families.

Three sources share one record schema (ShopBench's): ShopBench/KDD JSON Lines, EC-Guide
JSON arrays, and the files ecomtrain generates. Reading yields every record with its line
(and, in arrays, its index); a record that cannot be decoded, validated or assigned to a
task family becomes a `Bad` entry naming path, line and field, never a silent drop.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ecomtrain.tasks import FAMILIES, family_named, recognise
from ecomtrain.validate import DEFAULT_MAX_CHARS, REQUIRED, TRACK_PREFIX, problem

__all__ = ["REQUIRED", "TRACK_PREFIX", "CorpusError", "Bad", "Item"]
HUB_PREFIX = "hf:"  # corpus entry "hf:owner/name[:split]" loads a hub dataset


class CorpusError(ValueError):
    """A record or file that cannot be used; the message reads `PATH:LINE: field: reason`."""


@dataclass
class Item:
    """One decoded element of a corpus file, or why it could not be decoded."""

    line: int
    index: int | None  # position in a JSON array; None in JSON Lines
    record: object = None
    error: tuple[str, str] | None = None  # (field, reason) when undecodable
    fatal: bool = False  # the rest of the file cannot be read after this error


@dataclass
class Bad:
    """A rejected record: where it is, which field is wrong and why."""

    path: str
    line: int
    index: int | None
    field: str
    reason: str
    record: object = None
    fatal: bool = False  # the rest of its file could not be read

    def __str__(self) -> str:
        where = "" if self.index is None else f" (element {self.index})"
        return f"{self.path}:{self.line}: {self.field}: {self.reason}{where}"


def cache_dir() -> Path:
    """Where ecomtrain caches what it builds (tiny models, the demo corpus, scans)."""
    return Path(os.environ.get("ECOMTRAIN_CACHE", Path.home() / ".cache" / "ecomtrain"))


def resolve_corpus(paths: list[str]) -> list[str]:
    """Absolute paths of the corpus files; "demo" ("demo:N" for N records per family instead
    of 60) and hub datasets are written to the cache."""
    from ecomtrain.demo import fingerprint, write_demo_corpus

    out = []
    for p in paths:
        if p == "demo" or p.startswith("demo:"):  # "demo:N": N records per family
            n = int(p.partition(":")[2] or 60)
            name = f"demo-corpus-{fingerprint()}" + (f"-{n}" if n != 60 else "")
            target = cache_dir() / f"{name}.jsonl"
            out.append(str(target if target.exists() else write_demo_corpus(target, n)))
        elif p.startswith(HUB_PREFIX):
            out.append(str(hub_file(p)))
        elif not Path(p).is_file():
            raise CorpusError(f"{p}: corpus file not found")
        else:
            out.append(str(Path(p).resolve()))
    return out


def hub_file(spec: str) -> Path:
    """A hub dataset ("hf:owner/name[:split]") as a cached JSON Lines file, loaded once
    through `datasets.load_dataset`; offline, a clear error says to pass a local file."""
    name, _, split = spec.removeprefix(HUB_PREFIX).partition(":")
    target = cache_dir() / "hub" / f"{name.replace('/', '__')}.{split or 'train'}.jsonl"
    if target.exists():
        return target
    try:
        import datasets

        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as e:  # noqa: BLE001 (offline, unknown id, auth: all end here)
        raise CorpusError(
            f"{spec}: cannot load from the Hugging Face hub ({type(e).__name__}: {e}); "
            "download the dataset where the hub is reachable and pass its local file"
        ) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        for row in ds:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(target)
    return target


def iter_items(path: str, data: bytes | None = None) -> Iterator[Item]:
    """Every element of a JSON Lines or JSON array file (or of its bytes), with its line.

    JSON Lines files are read line by line. Undecodable bytes are kept as surrogate escapes
    so the record they sit in, not the whole file, is rejected (by `validate.problem`).
    """
    if data is None:
        with open(path, "rb") as f:
            head = f.read(4096).lstrip()
        if not head.startswith(b"["):
            with open(path, "rb") as f:
                yield from _jsonl(f)
            return
        data = Path(path).read_bytes()
    if data.lstrip().startswith(b"["):
        yield from _array(data.decode("utf-8", errors="surrogateescape"))
    else:
        yield from _jsonl(data.split(b"\n"))


def _jsonl(lines) -> Iterator[Item]:
    for lineno, raw in enumerate(lines, 1):
        line = raw.decode("utf-8", errors="surrogateescape")
        if not line.strip():
            continue
        try:
            yield Item(lineno, None, json.loads(line))
        except json.JSONDecodeError as e:
            yield Item(lineno, None, error=("json", f"{e.msg} (column {e.colno})"))


def _array(text: str) -> Iterator[Item]:
    """Decode a JSON array element by element, keeping the line each element starts on."""
    decoder = json.JSONDecoder()
    pos, line, last, index = text.index("[") + 1, 1, 0, 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return
        line += text.count("\n", last, pos)
        last = pos
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            reason = f"{e.msg} (line {e.lineno} column {e.colno}); the rest of the file is unread"
            yield Item(line, index, error=("json", reason), fatal=True)
            return
        yield Item(line, index, item)
        index += 1


def read_records(path: str, data: bytes | None = None) -> list[tuple[int, dict]]:
    """(line, record) pairs of a file; the first undecodable element raises CorpusError."""
    out = []
    for item in iter_items(path, data):
        if item.error:
            raise CorpusError(str(Bad(path, item.line, item.index, *item.error)))
        out.append((item.line, item.record))
    return out


def validate(record, where: str, max_chars: int = DEFAULT_MAX_CHARS) -> None:
    """Raise CorpusError `where: field: reason` if a record cannot be trained or scored on."""
    bad = problem(record, max_chars)
    if bad:
        raise CorpusError(f"{where}: {bad[0]}: {bad[1]}")


def load_corpus(paths: list[str]) -> list[dict]:
    """Read and validate every record of the given files (used for small eval files)."""
    out = []
    for path in paths:
        for lineno, record in read_records(path):
            validate(record, f"{path}:{lineno}")
            out.append(record)
    return out


def assign_family(record: dict, path: str, file_tasks: dict[str, str]) -> tuple[str, str]:
    """(family, "") for a valid record, or ("", reason): by its task_name, then by the
    `data.file_tasks` entry matching its file, then by the families' recognisers."""
    family = family_named(record.get("task_name") or "")
    if family:
        return family.name, ""
    for pattern, name in file_tasks.items():
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(Path(path).name, pattern):
            if FAMILIES[name].task_type != record["task_type"]:
                return (
                    "",
                    f"data.file_tasks maps {pattern!r} to {name} ({FAMILIES[name].task_type})",
                )
            return name, ""
    hits = recognise(record["input_field"], record["task_type"], render_answer(record))
    if hits:
        return hits[0], ""
    return "", "no task family: no task_name, no data.file_tasks entry, no recogniser matches"


def capability_of(record: dict) -> str:
    """The record's capability (track): explicit field, its track, or its family's."""
    if record.get("capability"):
        return record["capability"]
    if record.get("track"):
        return record["track"].removeprefix(TRACK_PREFIX)
    family = family_named(record.get("task_name") or "")
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
    if isinstance(out, list):  # generation with several references: train on the first
        return str(out[0])
    return str(out)
