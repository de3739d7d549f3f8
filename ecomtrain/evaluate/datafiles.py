"""Evaluation files: ShopBench data to score, responses files, score tables and JSON.

Bad input stops with an `EvalError` naming file and line.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from ecomtrain.data import shopping_mmlu
from ecomtrain.data.corpus import read_records
from ecomtrain.data.records import CorpusError, TaskLabels, assign_family, validate
from ecomtrain.evaluate.metrics import TASK_TYPE_BY_METRIC, aggregate
from ecomtrain.files import atomic_open, atomic_write
from ecomtrain.tasks import CAPABILITIES, METRICS_BY_TYPE, track_of

log = logging.getLogger(__name__)


class EvalError(ValueError):
    """A data or responses file that cannot be scored; the message reads `PATH:LINE: reason`."""


def load_data(path: str, need_truth: bool = True) -> tuple[list[dict], list[str]]:
    """Records of a ShopBench file, or of a Shopping MMLU data folder or file, and where
    each is (`file:line`), with `task_name` and `track` filled in. Validated for scoring
    (a task_name that is no built-in family is a task of its own, scored by the metric it
    declares), or with `need_truth=False` only for generation (a prompt and a task_type),
    so files without answers can be generated for."""
    try:
        paths = shopping_mmlu.data_files(path, "--data")
    except CorpusError as e:
        raise EvalError(str(e)) from e
    records, places = [], []
    labels, ids = TaskLabels(), {}
    for file in paths:
        for lineno, record in read_records(file):
            where = f"{file}:{lineno}"
            if need_truth:
                metric = record.get("metric") if isinstance(record, dict) else None
                if isinstance(metric, str) and metric not in TASK_TYPE_BY_METRIC:
                    raise EvalError(f"{where}: metric: unknown {metric!r}")  # (others: validate)
                validate(record, where, any_task=True)
            else:
                _check_prompt(record, where)
            labelled = _labelled(record, file)
            if need_truth:  # what a task is scored as
                field = "track" if record.get("track") else "capability"
                _check_task(labelled, field, where, labels)
            if record.get("id") is not None:
                first = ids.setdefault(str(record["id"]), where)
                if first != where:
                    raise EvalError(
                        f"{where}: id: {record['id']!r} again (first at {first}); responses "
                        "are matched by id, so each record needs its own"
                    )
            records.append(labelled)
            places.append(where)
    if not records:
        raise EvalError(f"{path}: no records")
    return records, places


def _check_task(record: dict, field: str, where: str, labels: TaskLabels) -> None:
    """A record agrees with its task's first on the track, task_type and metric
    (records.TaskLabels): else scores would be filed under another track or mixed."""
    path, _, line = where.rpartition(":")
    kind = (record["track"], record["task_type"], record.get("metric"))
    if bad := labels.check(record["task_name"], kind, field, path, int(line)):
        raise EvalError(f"{where}: {bad[0]}: {bad[1]}")


def _labelled(record: dict, path: str) -> dict:
    """A record without task_name gets its family's name (as in training: a recognised
    built-in family, else its file's name); a record without track gets its capability's."""
    name = record.get("task_name")
    if not name:  # a file to generate for may hold no answers
        name = assign_family(record, path, {}, {})[0] if "output_field" in record else "unnamed"
    return record | {"task_name": name, "track": track_of(record | {"task_name": name})}


def _check_prompt(record, where: str) -> None:
    if not isinstance(record, dict):
        raise EvalError(f"{where}: record: expected an object, got {type(record).__name__}")
    if not isinstance(record.get("input_field"), str) or not record["input_field"].strip():
        raise EvalError(f"{where}: input_field: must be a non-empty string")
    task_type = record.get("task_type")
    if not (isinstance(task_type, str) and task_type in METRICS_BY_TYPE):
        raise EvalError(f"{where}: task_type: unknown {task_type!r}")


def read_responses(path: str, data_path: str, records: list[dict], places: list[str]) -> list[str]:
    """One response per data record, in record order, from a JSON Lines file of
    `{"index": i, "response": ...}` (i: the record's 0-based position in the data file) or
    `{"id": ..., "response": ...}` (the record's own `id`), matched by that key, so a shuffled
    file scores right and a missing or repeated answer is an error. Without either key the
    responses are matched by position, with a warning."""
    if Path(path).is_dir():
        raise EvalError(f"{path}: is a directory, not a responses file")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EvalError(f"{path}: responses file not found") from None
    except OSError as e:  # under a file, unreadable, ...
        raise EvalError(f"{path}: cannot read the responses file ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise EvalError(f"{path}: encoding: invalid UTF-8 at byte {e.start}") from None
    text_lines = [line.rstrip("\r") for line in text.split("\n")]  # JSON never holds a raw "\n"
    while text_lines and not text_lines[-1].strip():
        text_lines.pop()
    objs = []
    for lineno, line in enumerate(text_lines, 1):  # a blank line inside the file is an error
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError, ValueError) as e:
            raise EvalError(f"{path}:{lineno}: json: {getattr(e, 'msg', e)}") from None
        if not isinstance(obj, dict) or "response" not in obj:
            raise EvalError(f'{path}:{lineno}: response: missing (expected {{"response": "..."}})')
        if not isinstance(obj["response"], str):
            kind = type(obj["response"]).__name__
            raise EvalError(f"{path}:{lineno}: response: expected a string, got {kind}")
        objs.append((lineno, obj))
    keyed = {key for _, obj in objs for key in ("index", "id") if key in obj}
    if not keyed:
        return _by_position(path, data_path, objs, places)
    if len(keyed) > 1 or any(next(iter(keyed)) not in obj for _, obj in objs):
        raise EvalError(f"{path}: every response needs the same key, 'index' or 'id'")
    key = keyed.pop()
    wanted = (
        {i: i for i in range(len(records))}
        if key == "index"
        else {str(r.get("id")): i for i, r in enumerate(records) if r.get("id") is not None}
    )
    out: list[str | None] = [None] * len(records)
    for lineno, obj in objs:
        value = obj[key] if key == "index" else str(obj[key])
        if not isinstance(value, int | str) or isinstance(value, bool) or value not in wanted:
            raise EvalError(f"{path}:{lineno}: {key}: {obj[key]!r} is no record of {data_path}")
        if out[wanted[value]] is not None:
            raise EvalError(f"{path}:{lineno}: {key}: {obj[key]!r} answered twice")
        out[wanted[value]] = obj["response"]
    missing = [i for i, r in enumerate(out) if r is None]
    if missing:
        raise EvalError(
            f"{path}: missing response for {len(missing)} record(s) of {data_path} "
            f"(first unanswered: {places[missing[0]]})"
        )
    return out


def _by_position(path: str, data_path: str, objs: list, places: list[str]) -> list[str]:
    n = len(places)
    log.warning(
        f"warning: {path}: responses carry no 'index' or 'id'; matched to {data_path} by "
        "position (a shuffled or gapped file would score wrong)"
    )
    if len(objs) > n:
        raise EvalError(f"{path}:{objs[n][0]}: extra response: {data_path} has {n} records")
    if len(objs) < n:
        raise EvalError(
            f"{path}:{len(objs) + 1}: missing response: {path} has {len(objs)}, {data_path} "
            f"has {n} records (first unanswered: {places[len(objs)]})"
        )
    return [obj["response"] for _, obj in objs]


def score_files(data: str, responses: str) -> dict:
    """ShopBench scores (overall, tracks, tasks) of a responses file against a data file."""
    records, places = load_data(data)
    return aggregate(records, read_responses(responses, data, records, places))


def _natural(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def table(result: dict) -> str:
    """Per-track scores, the overall score, then one line per task."""
    tracks = sorted(result["tracks"], key=lambda t: (t not in CAPABILITIES, _index(t), t))
    counts = {t: sum(v["track"] == t for v in result["tasks"].values()) for t in tracks}
    out = [f"{'track':<34}{'tasks':>6}{'score':>9}", "-" * 49]
    out += [f"{t:<34}{counts[t]:>6}{result['tracks'][t]:>9.4f}" for t in tracks]
    out += ["-" * 49, f"{'overall':<40}{result['overall']:>9.4f}", ""]
    w = max([30] + [len(name) + 2 for name in result["tasks"]])
    out += [f"{'task':<{w}}{'track':<34}{'metric':<18}{'n':>5}{'score':>9}", "-" * (w + 66)]
    for name in sorted(result["tasks"], key=_natural):
        t = result["tasks"][name]
        out.append(f"{name:<{w}}{t['track']:<34}{t['metric']:<18}{t['n']:>5}{t['score']:>9.4f}")
    return "\n".join(out)


def _index(track: str) -> int:
    return CAPABILITIES.index(track) if track in CAPABILITIES else 0


def write_json(path: str | Path, obj: dict) -> None:
    if Path(path).is_dir():
        raise EvalError(f"{path}: is a directory; --out names the file to write")
    atomic_write(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def write_responses(path: str | Path, responses: list[str]) -> None:
    """Responses as JSON Lines, one `{"index": i, "response": ...}` per record, in order."""
    if Path(path).is_dir():
        raise EvalError(f"{path}: is a directory; --out names the responses file to write")
    with atomic_open(path) as f:
        for i, r in enumerate(responses):
            f.write(json.dumps({"index": i, "response": r}, ensure_ascii=False) + "\n")
