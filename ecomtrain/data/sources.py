"""Corpus sources: locate files (local, built-in, hub) and read their records with line numbers.

Three sources share one record schema (ShopBench's): ShopBench/KDD JSON Lines, EC-Guide
JSON arrays, and the files ecomtrain generates. Reading yields every element with its line
(and, in arrays, its index); an element that cannot be decoded is an `Item` with an error,
never a silent drop.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ecomtrain.data.demo import fingerprint, write_demo_corpus
from ecomtrain.data.records import Bad, CorpusError, validate
from ecomtrain.data.world import DEFAULT_PRODUCTS, world_fingerprint, write_world_corpus
from ecomtrain.files import atomic_open, cache_dir

HUB_PREFIX = "hf:"  # corpus entry "hf:owner/name[:split]" loads a hub dataset


@dataclass
class Item:
    """One decoded element of a corpus file, or why it could not be decoded."""

    line: int
    index: int | None  # position in a JSON array; None in JSON Lines
    record: object = None
    error: tuple[str, str] | None = None  # (field, reason) when undecodable
    fatal: bool = False  # the rest of the file cannot be read after this error


# Built-in corpora: name -> (default size, fingerprint, writer(path, size)).
BUILTIN = {
    "demo": (60, fingerprint, write_demo_corpus),  # "demo:N": N records per family
    "world": (DEFAULT_PRODUCTS, world_fingerprint, write_world_corpus),  # "world:N": N products
}


def resolve_corpus(paths: list[str]) -> list[str]:
    """Absolute paths of the corpus files; built-in corpora ("demo", "world", with ":N" for
    their size) and hub datasets are written to the cache."""
    out = []
    for p in paths:
        name, _, size = p.partition(":")
        if name in BUILTIN:
            default, stamp, write = BUILTIN[name]
            if size and not size.isdigit():
                raise CorpusError(f"{p}: expected {name} or {name}:N with N a positive number")
            n = int(size or default)
            target = cache_dir() / f"{name}-corpus-{stamp()}{f'-{n}' if n != default else ''}.jsonl"
            out.append(str(target if target.exists() else write(target, n)))
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
    with atomic_open(target) as f:
        for row in ds:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
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


def load_corpus(paths: list[str]) -> list[dict]:
    """Read and validate every record of the given files (used for small eval files)."""
    out = []
    for path in paths:
        for lineno, record in read_records(path):
            validate(record, f"{path}:{lineno}")
            out.append(record)
    return out
