"""Quality gate for generated records: parse model output, balance answers, validate.

Every failure is a `Reject` with a short reason code (counted in the stats) and a detail
(written to the rejects file), so malformed output is never silently dropped.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter

from ecomtrain.data.records import CorpusError, answer_text, render_options, split_options, validate
from ecomtrain.tasks import FAMILIES

_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?|\n?```\s*$")
LENGTH_BUCKETS = (200, 500, 1000, 2000)  # input_field characters: <200, 200-499, ...


class Reject(Exception):
    """A work item that produced no record: `reason` is a stats code, `detail` says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def parse_completion(text: str, finish_reason: str = "") -> dict:
    """The {"input_field", "output_field"} object in a completion (code fences allowed)."""
    body = _FENCE.sub("", text.strip()).strip()
    if not body:
        raise Reject("empty", "the completion is empty")
    start = body.find("{")
    try:
        obj, _ = json.JSONDecoder().raw_decode(body, max(start, 0))
    except json.JSONDecodeError as e:
        cut = finish_reason == "length" and start >= 0  # JSON began, then the budget ran out
        reason = "truncated" if cut else "bad_json"
        raise Reject(reason, f"{e.msg} at column {e.colno}: {body[:120]!r}") from None
    if not isinstance(obj, dict):
        raise Reject("fields", f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("input_field", "output_field") if k not in obj]
    extra = sorted(set(obj) - {"input_field", "output_field"})
    if missing or extra:
        raise Reject("fields", f"missing {missing}, unexpected {extra}")
    return obj


def dedup_texts(record: dict) -> tuple[str, str]:
    """(question, question + answer): the texts exact and near duplicates are judged on.

    Multiple-choice options are sorted (reordered options are the same question) and the
    answer is the correct option's text. Near duplicates include the answer, so the same
    title asked for another language or entity type is not a duplicate; an identical
    question is one, whatever its answer.
    """
    text, out = record["input_field"], record.get("output_field", "")
    parts = split_options(text) if record.get("task_type") == "multiple-choice" else None
    if parts:
        head, options, tail = parts
        text = "\n".join([*head, *sorted(options), *tail])
        if isinstance(out, int) and 0 <= out < len(options):
            out = options[out]
    return text, f"{text}\n{answer_text(out)}"


def balance(record: dict, positions: Counter, key: str) -> dict:
    """Move the correct option to the least-used answer position for its option count.

    Ties are broken by the work key, so the choice is deterministic for a given history;
    `positions` counts (option count, position) over records already written.
    """
    parts = split_options(record["input_field"])
    if parts is None:
        raise Reject("options", "no numbered option list 0..n-1 in input_field")
    head, options, tail = parts
    answer = record["output_field"]
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(options):
        raise Reject("invalid", f"output_field: answer {answer!r} is not an option index")
    n = len(options)
    offset = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % n
    order = [(offset + k) % n for k in range(n)]
    target = min(order, key=lambda p: positions[(n, p)])
    options[answer], options[target] = options[target], options[answer]
    text = "\n".join([*head, render_options(options), *tail])
    return {**record, "input_field": text, "output_field": target}


def to_record(obj: dict, family_name: str, where: str) -> dict:
    """A ShopBench record of the family from a parsed completion, checked by corpus.validate."""
    family = FAMILIES[family_name]
    record = {
        "input_field": obj["input_field"],
        "output_field": obj["output_field"],
        "task_type": family.task_type,
        "metric": family.metric,
        "task_name": family.name,
        "capability": family.capability,
    }
    check(record, where)
    return record


def check(record: dict, where: str) -> None:
    """corpus.validate, with its error turned into a Reject."""
    try:
        validate(record, where)
    except CorpusError as e:
        raise Reject("invalid", str(e).removeprefix(f"{where}: ")) from None


def answer_position(record: dict) -> str:
    """The multiple-choice answer as a stats label ("2 of 4"); "-" for other task types."""
    if record["task_type"] != "multiple-choice":
        return "-"
    parts = split_options(record["input_field"])
    n = len(parts[1]) if parts else "?"
    return f"{record['output_field']} of {n}"


def length_bucket(text: str) -> str:
    """A label for the input's length in characters."""
    lo = 0
    for hi in LENGTH_BUCKETS:
        if len(text) < hi:
            return f"{lo}-{hi - 1}"
        lo = hi
    return f">={lo}"
