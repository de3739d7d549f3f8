"""Data sets of other shapes (`data.sources`), read as ShopBench records.

Instruction sets (`instruction`/`input`/`output`), session logs and query-product
relevance sets name their fields their own way. A source maps them: `input` is a column or
a template over the columns, `output` the answer's column; for multiple choice, `options`
holds the list of choices, or gives them for every row as "a|b|c" (rendered numbered from
0, as ShopBench lists them), and `answer` the right one (its index, or its text). The task is a built-in family (its task type and
metric) or a task of the user's own (`task_type`, `metric`, `capability` in the source).

Rows keep their line (JSON Lines, CSV: the line a row starts on; JSON arrays: the element's
line; Parquet: the row's number); a row the mapping cannot fill is an `Item` with an error
naming the column, never a silent drop.
"""

from __future__ import annotations

import csv
import io
import string
from collections.abc import Iterator
from pathlib import Path

from ecomtrain.config import SOURCE_FORMATS, DataConfig, SourceConfig
from ecomtrain.data.corpus import HUB_PREFIX, Item, elements, hub_file
from ecomtrain.data.records import Problem, render_options
from ecomtrain.tasks import FAMILIES, METRICS_BY_TYPE


def source_path(source: SourceConfig) -> str:
    """The local file a source reads (a hub data set is loaded once into the cache)."""
    if source.path.startswith(HUB_PREFIX):
        return str(hub_file(source.path))
    return str(Path(source.path).resolve())


def source_for(cfg: DataConfig, path: str) -> SourceConfig | None:
    """The source that reads `path`, if any."""
    for source in cfg.sources:
        if source_path(source) == path:
            return source
    return None


def items(path: str, data: bytes | None, source: SourceConfig) -> Iterator[Item]:
    """The source's rows as ShopBench records (or errors), in file order, up to its limit."""
    kept = 0
    for item in _rows(path, data, source):
        if item.error is None:
            item.record, item.error = to_record(item.record, source)
        yield item
        kept += item.error is None
        if source.limit and kept >= source.limit:
            return


def _rows(path: str, data: bytes | None, source: SourceConfig) -> Iterator[Item]:
    fmt = source.format or _format_of(path)
    if fmt in ("jsonl", "json"):
        yield from elements(path, data)
        return
    if data is None:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            yield Item(1, None, error=("file", f"cannot read: {e.strerror or e}"), fatal=True)
            return
    if fmt == "csv":
        text = data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        line = 2
        try:
            for row in reader:
                yield Item(line, None, row)
                line = reader.line_num + 1
        except csv.Error as e:
            yield Item(line, None, error=("csv", str(e)), fatal=True)
        return
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 (pyarrow's errors have no common base)
        yield Item(1, None, error=("parquet", str(e)), fatal=True)
        return
    for i, row in enumerate(table.to_pylist(), 1):
        yield Item(i, None, row)


def _format_of(path: str) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    return suffix if suffix in SOURCE_FORMATS else "jsonl"


def to_record(row, source: SourceConfig) -> tuple[object, Problem | None]:
    """A ShopBench record from one row of a source, or (row, problem)."""
    if not isinstance(row, dict):
        return row, ("record", f"expected an object, got {type(row).__name__}")
    family = FAMILIES.get(source.task)
    task_type = family.task_type if family else source.task_type
    metric = source.metric or (family.metric if family else METRICS_BY_TYPE[task_type][0])
    text, bad = _input(row, source.input)
    if bad:
        return row, bad
    if source.options:
        fixed = "|" in source.options  # the same choices for every row: "a|b|c"
        options = source.options.split("|") if fixed else row.get(source.options)
        if not isinstance(options, list) or len(options) < 2:
            return row, (source.options, f"expected a list of choices, got {options!r}")
        answer, bad = _choice(row, source.answer, [str(o) for o in options])
        if bad:
            return row, bad
        text, output = f"{text}\n{render_options([str(o) for o in options])}", answer
    else:
        if source.output not in row:
            return row, (source.output, "missing (the source's output column)")
        output = row[source.output]
    record = {
        "input_field": text,
        "output_field": output,
        "task_type": task_type,
        "metric": metric,
        "task_name": source.task,
    }
    return record | ({"capability": source.capability} if source.capability else {}), None


def _input(row: dict, spec: str) -> tuple[str, Problem | None]:
    if "{" not in spec:
        value = row.get(spec)
        if value is None:
            return "", (spec, "missing (the source's input column)")
        return str(value), None
    fields = [name for _, name, _, _ in string.Formatter().parse(spec) if name]
    missing = [name for name in fields if row.get(name) is None]
    if missing:
        return "", (missing[0], "missing (named in the source's input template)")
    return spec.format_map({name: row[name] for name in fields}), None


def _choice(row: dict, column: str, options: list[str]) -> tuple[int, Problem | None]:
    value = row.get(column)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(options):
        return value, None
    if isinstance(value, str) and value.strip().isdigit() and int(value) < len(options):
        return int(value), None
    if isinstance(value, str) and value in options:
        return options.index(value), None
    return 0, (column, f"{value!r} is neither a choice's index nor one of {options}")
