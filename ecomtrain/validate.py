"""Record checks: what a record must hold to be trained on and scored.

`problem(record)` returns the first (field, reason) that makes a record unusable, or None.
The checks follow the ShopBench schema and scoring rules: the output's type depends on
the task_type, a multiple-choice answer must be one of the choices listed in the input,
and every string must be valid UTF-8 text within the size limit.
"""

from __future__ import annotations

import math
import re

from ecomtrain.tasks import CAPABILITIES, METRICS_BY_TYPE, family_named

REQUIRED = ("input_field", "output_field", "task_type", "metric")
TRACK_PREFIX = "amazon-kdd-cup-24-"
DEFAULT_MAX_CHARS = 20_000  # longest input_field or answer accepted (DataConfig.max_chars)

_OPTION = re.compile(r"\s*(\d{1,2})\s*[.):]")
# "on a scale of 1 to 5", "from 1 to 5", "between 1 and 5", "a 1-5 scale"
_SCALE = re.compile(r"\b(\d)\s*(?:to|and|-)\s*(\d{1,2})\b")
_SURROGATE = re.compile("[\ud800-\udfff]")  # what undecodable bytes become (surrogateescape)
_DEV_ID = re.compile(r"task\d+")

Problem = tuple[str, str]  # (field, reason)


def listed_choices(text: str) -> list[int]:
    """Choice numbers a multiple-choice input offers: its last run of lines numbered
    0, 1, 2, ... (ShopBench's option list), else an "N to M" rating scale, else []."""
    best: list[int] = []
    run: list[int] = []
    for line in text.split("\n") + [""]:
        m = _OPTION.match(line)
        n = int(m[1]) if m else None
        if n is not None and n == len(run):
            run.append(n)
            continue
        if len(run) >= 2:
            best = run
        run = [0] if n == 0 else []
    if best:
        return best
    m = _SCALE.search(text)
    if m and int(m[1]) < int(m[2]) <= int(m[1]) + 10:
        return list(range(int(m[1]), int(m[2]) + 1))
    return []


def numbered_items(text: str) -> int:
    """How many numbered candidates a retrieval/ranking input lists (its largest item number)."""
    nums = [int(m[1]) for line in text.split("\n") if (m := _OPTION.match(line))]
    return max(nums, default=0)


def problem(record, max_chars: int = DEFAULT_MAX_CHARS) -> Problem | None:
    """The first reason `record` cannot be trained or scored on, as (field, reason)."""
    if not isinstance(record, dict):
        return "record", f"expected an object, got {type(record).__name__}"
    for key in REQUIRED:
        if key not in record:
            return key, "missing"
    return (
        _check_text(record["input_field"], "input_field", max_chars)
        or _check_kind(record)
        or check_labels(record)
        or _check_output(record, max_chars)
    )


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


def check_labels(record: dict) -> Problem | None:
    """task_name, capability and track, when present, must be known and agree."""
    name = record.get("task_name")
    family = None
    if name is not None:
        family = family_named(name) if isinstance(name, str) else None
        if family is None and not (isinstance(name, str) and _DEV_ID.fullmatch(name)):
            return "task_name", f"unknown task family {name!r}"
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
        if cap not in CAPABILITIES:
            return key, f"unknown capability {value!r} (known: {', '.join(CAPABILITIES)})"
        if family and cap != family.capability:
            return key, f"{cap!r} but family {family.name} belongs to {family.capability}"
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
    elif task_type == "retrieval":
        if not isinstance(out, list) or not out or not all(_is_int(x) for x in out):
            return "output_field", f"retrieval answer must be a non-empty list of ints, got {out!r}"
        n = numbered_items(text)
        if any(x < 1 or (n and x > n) for x in out) or len(set(out)) != len(out):
            return "output_field", f"{out} must be distinct item numbers in 1..{n or 'N'}"
    elif task_type == "ranking":
        if not isinstance(out, list) or not out or not all(_is_weight(x) for x in out):
            return (
                "output_field",
                f"ranking truth must be a list of relevance weights >= 0, got {out!r}",
            )
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
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0
