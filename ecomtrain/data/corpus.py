"""Corpus sources: locate files (local, built-in, hub) and read their records with line numbers.

Every source is read into one record schema (ShopBench's): ShopBench/KDD JSON Lines,
EC-Guide JSON arrays, the files ecomtrain generates, and the Shopping MMLU benchmark's
folders, CSV and JSON Lines files (data.shopping_mmlu). Reading yields every element with
its line (and, in arrays, its index); an element that cannot be decoded is an `Item` with
an error, never a silent drop.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ecomtrain.config import BUILTIN_CORPORA, Config, ConfigError
from ecomtrain.data import shopping_mmlu
from ecomtrain.data.demo import demo_records
from ecomtrain.data.ood import ood_records
from ecomtrain.data.records import Bad, CorpusError, fingerprint, validate
from ecomtrain.data.world import (
    DEFAULT_PRODUCTS,
    MAX_PRODUCTS,
    MIN_PRODUCTS,
    world_effect_records,
    world_records,
    world_synthetic_records,
)
from ecomtrain.files import atomic_open, cache_dir

log = logging.getLogger("ecomtrain")
HUB_PREFIX = "hf:"  # corpus entry "hf:owner/name[:split]" loads a hub dataset


@dataclass
class Item:
    """One decoded element of a corpus file, or why it could not be decoded."""

    line: int
    index: int | None  # position in a JSON array; None in JSON Lines
    record: object = None
    error: tuple[str, str] | None = None  # (field, reason) when undecodable
    fatal: bool = False  # the rest of the file cannot be read after this error


# Built-in corpora (config.BUILTIN_CORPORA): name -> (default size, smallest, largest,
# records of a size and generator seed). "NAME:N@SEED": size N, seed SEED (default 0).
WORLD_SIZES = (DEFAULT_PRODUCTS, MIN_PRODUCTS, MAX_PRODUCTS)  # "world:N": N products
BUILTIN = {
    "demo": (60, 1, None, demo_records),  # "demo:N": N records per family
    "world": (*WORLD_SIZES, world_records),
    "world-synthetic": (*WORLD_SIZES, world_synthetic_records),  # its simulated twin
    "world-effects": (*WORLD_SIZES, world_effect_records),  # its effects of known size
    "ood": (60, 1, None, ood_records),  # "ood:N": N records per out-of-domain family
}
assert set(BUILTIN) == set(BUILTIN_CORPORA)
# The offline tiny model read the questions the built-in corpora keep in training at any
# data.eval_fraction up to this (base_model.pretraining_records): a config holds out no more.
BUILTIN_EVAL_FRACTION_MAX = 0.5


@dataclass(frozen=True)
class Builtin:
    """A built-in corpus entry: its name, size and generator seed."""

    name: str
    size: int
    seed: int

    def records(self) -> list[dict]:
        return BUILTIN[self.name][3](self.size, self.seed)


def builtin_corpus(entry: str) -> Builtin | None:
    """The built-in corpus an entry names (NAME, NAME:N, NAME@SEED, NAME:N@SEED), or None
    when it names none (a file, a hub dataset); a size or seed that is not a whole number
    in range raises CorpusError."""
    head, at, seed = entry.partition("@")
    name, colon, size = head.partition(":")
    if name not in BUILTIN:
        return None
    default, smallest, largest, _ = BUILTIN[name]
    form = f"expected {name}, {name}:N, {name}@SEED or {name}:N@SEED"
    if colon and not size.isdigit():
        raise CorpusError(f"{entry}: {form}, with N a whole number (the size), got {size!r}")
    if at and not seed.isdigit():
        raise CorpusError(f"{entry}: {form}, with SEED a whole number >= 0, got {seed!r}")
    n = int(size) if colon else default
    if n < smallest or (largest is not None and n > largest):
        bounds = f"{smallest} to {largest}" if largest is not None else f"at least {smallest}"
        raise CorpusError(f"{entry}: size {n} is out of range ({name}:N takes {bounds})")
    return Builtin(name, n, int(seed) if at else 0)


def resolve_corpus(paths: list[str]) -> list[str]:
    """Absolute paths of the corpus files; built-in corpora (`builtin_corpus`) and hub
    datasets are written to the cache."""
    out = []
    for p in paths:
        builtin = builtin_corpus(p)
        if builtin:
            default = BUILTIN[builtin.name][0]
            size = f"-{builtin.size}" if builtin.size != default else ""
            seed = f"@{builtin.seed}" if builtin.seed else ""
            version = fingerprint(Builtin(builtin.name, default, 0).records())
            target = cache_dir() / f"{builtin.name}-corpus-{version}{size}{seed}.jsonl"
            if not target.exists():
                with atomic_open(target) as f:
                    f.writelines(
                        json.dumps(r, ensure_ascii=False) + "\n" for r in builtin.records()
                    )
            out.append(str(target))
        elif p.startswith(HUB_PREFIX):
            out.append(str(hub_file(p)))
        elif shopping_mmlu.is_folder(p):
            out += shopping_mmlu.files(p)
        elif Path(p).is_dir():
            raise CorpusError(
                f"{p}: is a directory, not a corpus file (nor a Shopping MMLU folder)"
            )
        elif not Path(p).is_file():
            raise CorpusError(f"{p}: corpus file not found (or not readable)")
        else:
            out.append(str(Path(p).resolve()))
    return out


def check_files(cfg: Config, source: str) -> None:
    """Every corpus, decontamination and extra eval file exists (built-in corpora and hub
    datasets aside; any entry may be a Shopping MMLU folder); a built-in corpus' size and seed
    are in range, and no more of it is held out than BUILTIN_EVAL_FRACTION_MAX.
    Entry points call it before starting Ray; `load_config` does not, so a cluster's config
    (paths on the cluster's storage) loads anywhere."""
    files = [(f"data.corpus[{i}]", p) for i, p in enumerate(cfg.data.corpus)]
    files += [(f"data.decontaminate[{i}]", p) for i, p in enumerate(cfg.data.decontaminate)]
    files += [(f"eval.extra_files[{i}]", p) for i, p in enumerate(cfg.eval.extra_files)]
    files += [(f"data.sources[{i}].path", s.path) for i, s in enumerate(cfg.data.sources)]
    for i, p in enumerate(cfg.data.corpus):
        if shopping_mmlu.is_benchmark(p):
            log.warning(
                "warning: data.corpus[%d]: %s is Shopping MMLU, the benchmark's test data: a "
                "model trained on it has no honest score there (use it in data.decontaminate "
                "and eval.extra_files)",
                i,
                p,
            )
    for where, p in files:
        try:
            if builtin_corpus(p) or p.startswith(HUB_PREFIX):
                continue
        except CorpusError as e:
            raise ConfigError(f"{source}: {where}: {e}") from None
        if shopping_mmlu.is_folder(p):
            continue
        if Path(p).is_dir():
            raise ConfigError(f"{source}: {where}: {p} is a directory, not a file")
        if not Path(p).is_file():
            raise ConfigError(f"{source}: {where}: file not found: {p}")
    builtin = [p for p in cfg.data.corpus if builtin_corpus(p)]
    if builtin and cfg.data.eval_fraction > BUILTIN_EVAL_FRACTION_MAX:
        raise ConfigError(
            f"{source}: data.eval_fraction: {cfg.data.eval_fraction} holds out more than "
            f"{BUILTIN_EVAL_FRACTION_MAX} of the built-in corpus {builtin[0]}, whose other "
            "questions the offline tiny model read in pretraining"
        )


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


BOM = b"\xef\xbb\xbf"


def iter_items(path: str, data: bytes | None = None) -> Iterator[Item]:
    """Every record of a file (or of its bytes), with its line: the elements of a JSON Lines
    or JSON array file, the rows of a Shopping MMLU multiple-choice CSV file; a Shopping
    MMLU JSON file's elements become ShopBench records (data.shopping_mmlu).

    The file is opened once (a pipe or /dev/stdin works too). JSON Lines are read line by
    line; a JSON array is decoded element by element. A UTF-8 byte-order mark is skipped.
    Undecodable bytes are kept as surrogate escapes so the record they sit in, not the
    whole file, is rejected (by `records.problem`); an element that cannot be decoded (bad
    JSON, nesting too deep, an integer too long) is an Item with an error; an empty file, or
    data after an array's end, is one too.
    """
    if shopping_mmlu.is_multiple_choice_csv(path):
        if data is None:
            with _open(path) as f:
                data = f.read()
        for line, record, bad in shopping_mmlu.read_csv(path, data):
            yield Item(line, None, record, bad)
        return
    convert = shopping_mmlu.converter(path)
    for item in elements(path, data):
        if convert and item.error is None:
            item.record, item.error = convert(item.record)
        yield item


def _open(path: str):
    try:
        return open(path, "rb")  # noqa: SIM115 (callers close it)
    except IsADirectoryError:
        raise CorpusError(f"{path}: is a directory, not a corpus file") from None
    except OSError as e:
        raise CorpusError(f"{path}: cannot read: {e.strerror or e}") from None


def elements(path: str, data: bytes | None) -> Iterator[Item]:
    """The elements of a JSON Lines or JSON array file (or of its bytes), with their lines."""
    if data is None:
        with _open(path) as f:
            head = f.read(4096).removeprefix(BOM)
            if head.lstrip().startswith(b"["):
                yield from _array((head + f.read()).decode("utf-8", errors="surrogateescape"))
            else:
                yield from _jsonl(_lines(head, f))
        return
    data = data.removeprefix(BOM)
    if data.lstrip().startswith(b"["):
        yield from _array(data.decode("utf-8", errors="surrogateescape"))
    else:
        yield from _jsonl(iter(data.split(b"\n")))


def _lines(head: bytes, f) -> Iterator[bytes]:
    """The lines of a stream whose first bytes were already read as `head`."""
    rest = head
    for chunk in iter(lambda: f.read(1 << 16), b""):
        *lines, rest = (rest + chunk).split(b"\n")
        yield from lines
    yield from rest.split(b"\n")


def _decode(text: str, pos: int = 0):
    """json.JSONDecoder().raw_decode, with the failures it can raise besides bad JSON
    (nesting deeper than the interpreter's stack, integers over Python's digit limit)
    turned into JSONDecodeError."""
    try:
        return json.JSONDecoder().raw_decode(text, pos)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, pos) from None
    except ValueError as e:
        if isinstance(e, json.JSONDecodeError):
            raise
        raise json.JSONDecodeError("a number too long to read", text, pos) from None


def _jsonl(lines: Iterator[bytes]) -> Iterator[Item]:
    empty = True
    for lineno, raw in enumerate(lines, 1):
        line = raw.decode("utf-8", errors="surrogateescape")
        if not line.strip():
            continue
        empty = False
        try:
            record, end = _decode(line, len(line) - len(line.lstrip()))
            if line[end:].strip():
                raise json.JSONDecodeError("Extra data", line, end)
            yield Item(lineno, None, record)
        except json.JSONDecodeError as e:
            yield Item(lineno, None, error=("json", f"{e.msg} (column {e.colno})"))
    if empty:
        yield Item(1, None, error=("file", "empty: no records"))


def _array(text: str) -> Iterator[Item]:
    """Decode a JSON array element by element, keeping the line each element starts on;
    elements must be separated by single commas, and nothing may follow the array."""
    pos, line, last, index = text.index("[") + 1, 1, 0, 0

    def skip(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    def at(pos: int) -> int:
        return line + text.count("\n", last, pos)

    while True:
        pos = skip(pos)
        if pos < len(text) and text[pos] == "]" and index == 0:
            yield Item(at(pos), None, error=("file", "empty: the JSON array holds no records"))
            pos += 1
            break
        line, last = at(pos), pos
        try:
            item, pos = _decode(text, pos)
        except json.JSONDecodeError as e:
            reason = f"{e.msg} (line {e.lineno} column {e.colno}); the rest of the file is unread"
            yield Item(line, index, error=("json", reason), fatal=True)
            return
        yield Item(line, index, item)
        index += 1
        pos = skip(pos)
        if pos < len(text) and text[pos] == "]":
            pos += 1
            break
        if pos >= len(text) or text[pos] != ",":
            found = "the end of the file" if pos >= len(text) else repr(text[pos])
            yield Item(
                at(pos),
                index,
                error=(
                    "json",
                    f"expected ',' or ']' after element "
                    f"{index - 1}, found {found}; the rest of the file is unread",
                ),
                fatal=True,
            )
            return
        pos += 1
    pos = skip(pos)
    if pos < len(text):
        yield Item(
            at(pos),
            None,
            error=("json", "data after the end of the JSON array; the rest of the file is unread"),
            fatal=True,
        )


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
