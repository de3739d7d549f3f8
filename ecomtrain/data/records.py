"""Records: what one must hold to be trained on and scored, and how its answer is written.

`problem(record)` returns the first (field, reason) that makes a record unusable, or None.
The checks follow the ShopBench schema and scoring rules: the output's type depends on
the task_type, a multiple-choice answer must be one of the choices listed in the input,
and every string must be valid UTF-8 text within the size limit. `assign_family` files a
valid record under a task family; `render_answer` writes the training target in the form
the ShopBench parsers read. A record that fails becomes a `Bad` entry naming path, line and
field, never a silent drop.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from ecomtrain.config import PROVENANCES, TASK_NAME
from ecomtrain.tasks import (
    FAMILIES,
    LABELS,
    METRICS_BY_TYPE,
    TRACK_PREFIX,
    UNKNOWN,
    family_named,
    recognise,
)

REQUIRED = ("input_field", "output_field", "task_type", "metric")
DEFAULT_MAX_CHARS = 20_000  # longest input_field or answer accepted (DataConfig.max_chars)
MAX_WEIGHT = 100  # largest ranking relevance weight: ndcg's gain 2**w stays a finite float

_OPTION = re.compile(r"^\s*(\d{1,2})\s*[.):]\s?(.*)$")  # "0. red", "0) red", "0: red"
_INLINE_ZERO = re.compile(r"(?:^|\s)0\s*[.):]\s")  # "Products: 0. first item"
# "on a scale of 1 to 5", "from 1 to 5", "between 1 and 5", "a 1-5 scale"
_SCALE = re.compile(r"\b(\d)\s*(?:to|and|-)\s*(\d{1,2})\b")
_SURROGATE = re.compile("[\ud800-\udfff]")  # what undecodable bytes become (surrogateescape)
_DEV_ID = re.compile(r"task\d+")

Problem = tuple[str, str]  # (field, reason)


class CorpusError(ValueError):
    """A record or file that cannot be used; the message reads `PATH:LINE: field: reason`."""


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


# --- numbered option lists ----------------------------------------------------------------------


def split_options(text: str) -> tuple[list[str], list[str], list[str]] | None:
    """(lines before, options, lines after) of the last run of lines numbered 0, 1, 2, ...
    (ShopBench's option list, at least two options), or None when there is none."""
    lines = text.split("\n")
    best = None
    i = 0
    while i < len(lines):
        j, opts = i, []
        while j < len(lines) and (m := _OPTION.match(lines[j])) and int(m[1]) == len(opts):
            opts.append(m[2])
            j += 1
        if len(opts) >= 2:
            best = (lines[:i], opts, lines[j:])
        i = max(j, i + 1)
    return best


def render_options(options: list[str]) -> str:
    """Options as ShopBench lists them: one line each, numbered from 0."""
    return "\n".join(f"{i}. {o}" for i, o in enumerate(options))


def listed_choices(text: str) -> list[int]:
    """Choice numbers a multiple-choice input offers: its option list, else an "N to M"
    rating scale, else []."""
    parts = split_options(text)
    if parts:
        return list(range(len(parts[1])))
    m = _SCALE.search(text)
    if m and int(m[1]) < int(m[2]) <= int(m[1]) + 10:
        return list(range(int(m[1]), int(m[2]) + 1))
    return []


def numbered_items(text: str) -> tuple[int, int] | None:
    """(first, last) item number of the candidates a retrieval/ranking input lists, or None
    when it lists none: its last run of lines numbered n, n+1, ... ShopBench numbers from 1,
    some public sets from 0, and EC-Guide writes the first item after a label on its line
    ("Products: 0. ..." then "1. ..."). Any other first number is the caller's to refuse."""
    lines = text.split("\n")
    run: list[tuple[int, int]] = []  # (line, number) of the current run
    for i, line in enumerate(lines):
        if m := _OPTION.match(line):
            n = int(m[1])
            if not run or n != run[-1][1] + 1:
                run = []
            run.append((i, n))
    if not run:
        return None
    (start, first), last = run[0], run[-1][1]
    if first == 1 and start > 0 and _INLINE_ZERO.search(lines[start - 1]):
        first = 0
    return first, last


# --- checks -------------------------------------------------------------------------------------


def problem(record, max_chars: int = DEFAULT_MAX_CHARS, any_task: bool = False) -> Problem | None:
    """The first reason `record` cannot be trained or scored on, as (field, reason).
    With `any_task`, a task_name that is no built-in family names a task of its own, scored
    by the task_type and metric it declares (an evaluation file's, e.g. Shopping MMLU's)."""
    if not isinstance(record, dict):
        return "record", f"expected an object, got {type(record).__name__}"
    for key in REQUIRED:
        if key not in record:
            return key, "missing"
    return (
        _check_text(record["input_field"], "input_field", max_chars)
        or _check_kind(record)
        or check_labels(record, any_task)
        or _check_output(record, max_chars)
        or _check_split(record)
    )


SPLITS = ("train", "eval")  # a record's own `split`: trained on, or held out


def _check_split(record: dict) -> Problem | None:
    """A record may choose its side of the held-out split (`split`); without the field a
    hash of its input decides (data.eval_fraction)."""
    value = record.get("split")
    if value is None or value in SPLITS:
        return None
    return "split", f"expected {' or '.join(map(repr, SPLITS))} (or no split field), got {value!r}"


def _check_text(value, field: str, max_chars: int) -> Problem | None:
    if not isinstance(value, str):
        return field, f"must be a string, got {type(value).__name__}"
    if not value.strip():
        return field, "must be a non-empty string"
    if _SURROGATE.search(value):
        return field, "not valid UTF-8 (undecodable bytes or a lone surrogate escape)"
    if len(value) > max_chars:
        return field, f"{len(value)} characters, over the limit of {max_chars} (data.max_chars)"
    return None


def _check_kind(record: dict) -> Problem | None:
    task_type, metric = record["task_type"], record["metric"]
    if not isinstance(task_type, str) or task_type not in METRICS_BY_TYPE:
        return "task_type", f"unknown {task_type!r} (known: {', '.join(METRICS_BY_TYPE)})"
    if metric not in METRICS_BY_TYPE[task_type]:
        return "metric", f"{metric!r} is not allowed for {task_type}"
    flag = record.get("is_multiple_choice")
    if flag is not None and flag is not (task_type == "multiple-choice"):
        return "is_multiple_choice", f"{flag!r} contradicts task_type {task_type!r}"
    return None


def check_labels(record: dict, any_task: bool = False) -> Problem | None:
    """task_name, capability, track and provenance, when present, must be well formed and
    agree: a built-in family's task_type and capability are its records' (with `any_task`,
    an evaluation file's own labels decide, whatever the built-in families). A task_name
    that is no built-in family names a task of the user's own."""
    name = record.get("task_name")
    family = None
    if name is not None and not (isinstance(name, str) and name.strip()):
        return "task_name", f"must be a non-empty string, got {name!r}"
    if name is not None and not any_task:
        family = family_named(name)
        if family is None and not TASK_NAME.fullmatch(name):
            return (
                "task_name",
                f"{name!r} is no built-in family, and a task of its own needs a name of "
                "letters, digits and _ . + = - only",
            )
    if family and family.task_type != record["task_type"]:
        return (
            "task_type",
            f"{record['task_type']!r} but family {family.name} is {family.task_type}",
        )
    for key, prefix in (("capability", ""), ("track", TRACK_PREFIX)):
        value = record.get(key)
        if value is None:
            continue
        cap = value.removeprefix(prefix) if isinstance(value, str) else None
        if cap not in LABELS:
            return key, f"unknown capability {value!r} (known: {', '.join(LABELS)})"
        if family and cap != family.capability:
            return key, f"{cap!r} but family {family.name} belongs to {family.capability}"
    value = record.get("provenance")
    if value is not None and not (value in PROVENANCES or isinstance(value, dict)):
        return (
            "provenance",
            f"expected {' or '.join(PROVENANCES)}, or the object ecomtrain.generate writes; "
            f"got {value!r}",
        )
    return None


def _check_output(record: dict, max_chars: int) -> Problem | None:
    out, task_type, text = record["output_field"], record["task_type"], record["input_field"]
    if task_type == "multiple-choice":
        if not _is_int(out):
            return "output_field", f"multiple-choice answer must be an int, got {out!r}"
        choices = listed_choices(text)
        if not choices:
            return "output_field", "input_field lists no numbered choices or 'N to M' scale"
        if out not in choices:
            return "output_field", f"{out} is not one of the listed choices {choices}"
        if out > 9:
            return (
                "output_field",
                f"{out}: ShopBench's parser reads one digit (a response's first character), "
                "so an answer of 10 or more could never score",
            )
    elif task_type == "retrieval":
        if not isinstance(out, list) or not out or not all(_is_int(x) for x in out):
            return "output_field", f"retrieval answer must be a non-empty list of ints, got {out!r}"
        listed = numbered_items(text)
        if listed is None:
            return "input_field", "lists no numbered candidates (lines '1. ...' or '0. ...')"
        first, last = listed
        if first not in (0, 1):
            return "input_field", f"candidates numbered from {first}: expected from 0 or from 1"
        if any(x < first or x > last for x in out):
            return "output_field", f"{out} must be item numbers in {first}..{last}"
        if len(set(out)) != len(out):
            return "output_field", f"{out} repeats an item"
    elif task_type == "ranking":
        if not isinstance(out, list) or not out or not all(_is_weight(x) for x in out):
            return (
                "output_field",
                f"ranking truth must be a list of relevance weights in 0..{MAX_WEIGHT}, got "
                f"{out!r}",
            )
        listed = numbered_items(text)
        if listed and listed[0] != 1:
            return (
                "input_field",
                f"candidates numbered from {listed[0]}: ShopBench's ndcg reads a ranking "
                "answer as item numbers from 1",
            )
        if listed and len(out) != listed[1] - listed[0] + 1:
            return (
                "output_field",
                f"{len(out)} relevance weights for the {listed[1] - listed[0] + 1} candidates "
                "input_field lists",
            )
        if not any(out):
            return "output_field", "every relevance weight is 0: nothing to rank"
    elif task_type == "named_entity_recognition":
        if not isinstance(out, list) or not all(isinstance(x, str) for x in out):
            return "output_field", f"NER answer must be a list of strings, got {out!r}"
    else:
        refs = out if isinstance(out, list) and out else [out]
        for ref in refs:
            if bad := _check_text(ref, "output_field", max_chars):
                return bad
        return None
    strings = out if isinstance(out, list) else []
    for s in strings:
        if isinstance(s, str) and _SURROGATE.search(s):
            return "output_field", "not valid UTF-8 (undecodable bytes or a lone surrogate escape)"
    return None


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_weight(x) -> bool:
    return (
        isinstance(x, (int, float))
        and not isinstance(x, bool)
        and math.isfinite(x)
        and 0 <= x <= MAX_WEIGHT
    )


def validate(
    record, where: str, max_chars: int = DEFAULT_MAX_CHARS, any_task: bool = False
) -> None:
    """Raise CorpusError `where: field: reason` if a record cannot be trained or scored on
    (`any_task`: see `problem`)."""
    bad = problem(record, max_chars, any_task)
    if bad:
        raise CorpusError(f"{where}: {bad[0]}: {bad[1]}")


class TaskLabels:
    """What a task's records must agree on: its capability (track), its task_type and its
    metric (generation metrics may mix, as ShopBench's task17 mixes bleu and jp-bleu). A
    record that disagrees with its task's first record would have its score filed under
    another track, or mixed into a task score of another kind."""

    def __init__(self):
        self.first: dict[str, tuple[tuple, str, int]] = {}

    def check(
        self, task: str, labels: tuple[str, str, str], field: str, path: str, line: int
    ) -> Problem | None:
        """The first disagreement of a record's (capability, task_type, metric) with the
        first record of `task`, as (field, reason); `field` names the capability's field
        ("capability" or "track")."""
        first, where, at = self.first.setdefault(task, (labels, path, line))
        for key, mine, theirs in zip((field, "task_type", "metric"), labels, first, strict=True):
            if mine != theirs and not (key == "metric" and labels[1] == "generation"):
                place = f"line {at}" if where == path else f"{where}:{at}"
                return (
                    key,
                    f"{mine!r}, but task {task!r} is {theirs!r} ({place}); a task has one {key}",
                )
        return None


# --- families and answers ----------------------------------------------------------------------


def assign_family(
    record: dict, path: str, file_tasks: dict[str, str], file_capabilities: dict[str, str]
) -> tuple[str, str, str]:
    """(family, capability, "") for a valid record, or ("", "", reason).

    The family: the built-in one its task_name names; else a task of the user's own of that
    name; else the `data.file_tasks` entry matching its file (a built-in family, or a name
    of the user's own); else the built-in family a recogniser finds; else a task of its own
    named after its file. A well-formed record is never rejected for want of a family.
    The capability of a task of the user's own: the record's capability or track, else the
    `data.file_capabilities` entry matching its file, else "unknown"."""
    name = record.get("task_name") or ""
    family = family_named(name)
    if family:
        return family.name, family.capability, ""
    if name and not _DEV_ID.fullmatch(name):
        return name, own_capability(record, path, file_capabilities), ""
    for pattern, mapped in file_tasks.items():
        if _matches(path, pattern):
            family = FAMILIES.get(mapped)
            if family is None:
                return mapped, own_capability(record, path, file_capabilities), ""
            if family.task_type != record["task_type"]:
                return (
                    "",
                    "",
                    f"data.file_tasks maps {pattern!r} to {mapped} ({family.task_type})",
                )
            return mapped, family.capability, ""
    hits = recognise(record["input_field"], record["task_type"], render_answer(record))
    if hits:
        return hits[0], FAMILIES[hits[0]].capability, ""
    return file_task(path), own_capability(record, path, file_capabilities), ""


def file_task(path: str) -> str:
    """The task of the user's own that a file's unclaimed records make: the file's name."""
    stem = re.sub(r"[^A-Za-z0-9_.+=-]", "_", Path(path).name.split(".")[0])
    return stem if stem[:1].isalnum() else f"file_{stem}"


def own_capability(record: dict, path: str, file_capabilities: dict[str, str]) -> str:
    """The capability of a record of a task of the user's own (see `assign_family`)."""
    for key, prefix in (("track", TRACK_PREFIX), ("capability", "")):
        if record.get(key):
            return str(record[key]).removeprefix(prefix)
    for pattern, capability in file_capabilities.items():
        if _matches(path, pattern):
            return capability
    return UNKNOWN


def provenance_of(record: dict, path: str, file_provenance: dict[str, str]) -> str:
    """A valid record's provenance: synthetic when ecomtrain.generate wrote it (it carries a
    provenance object) or it is labelled so, by its own provenance or its file's
    `data.file_provenance` entry; else curated."""
    value = record.get("provenance")
    if isinstance(value, dict):
        return "synthetic"
    if value:
        return value
    for pattern, label in file_provenance.items():
        if _matches(path, pattern):
            return label
    return "curated"


def _matches(path: str, pattern: str) -> bool:
    return fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(Path(path).name, pattern)


def fingerprint(records: list[dict]) -> str:
    """Short hash of a generated corpus: cache keys change whenever its generator does."""
    blob = json.dumps(records, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha1(blob).hexdigest()[:10]


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


def answer_text(output) -> str:
    """An output_field as text: strings as they are, anything else as JSON."""
    return output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
