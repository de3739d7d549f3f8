"""Evaluation files: ShopBench data to score, responses files, score tables and JSON.

Bad input stops with an `EvalError` naming file and line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ecomtrain.data.records import assign_family, validate
from ecomtrain.data.sources import read_records
from ecomtrain.evaluate.metrics import TASK_TYPE_BY_METRIC, aggregate
from ecomtrain.files import atomic_open, atomic_write
from ecomtrain.tasks import CAPABILITIES, METRICS_BY_TYPE, track_of


class EvalError(ValueError):
    """A data or responses file that cannot be scored; the message reads `PATH:LINE: reason`."""


def load_data(path: str, need_truth: bool = True) -> tuple[list[dict], list[int]]:
    """Records of a ShopBench file and their line numbers, with `task_name` and `track` filled
    in. Validated for scoring, or with `need_truth=False` only for generation (a prompt and a
    task_type), so files without answers can be generated for."""
    if not Path(path).is_file():
        raise EvalError(f"{path}: data file not found")
    records, lines = [], []
    for lineno, record in read_records(path):
        where = f"{path}:{lineno}"
        if need_truth:
            metric = record.get("metric") if isinstance(record, dict) else None
            if metric is not None and metric not in TASK_TYPE_BY_METRIC:
                raise EvalError(f"{where}: metric: unknown {metric!r}")
            validate(record, where)
        else:
            _check_prompt(record, where)
        records.append(_labelled(record, path))
        lines.append(lineno)
    if not records:
        raise EvalError(f"{path}: no records")
    return records, lines


def _labelled(record: dict, path: str) -> dict:
    """A record without task_name gets its family's name (the metric's when none is
    recognised); a record without track gets its capability's."""
    name = record.get("task_name")
    if not name and "output_field" in record:
        name = assign_family(record, path, {})[0]
    name = name or record.get("metric") or record["task_type"]
    return record | {"task_name": name, "track": track_of(record | {"task_name": name})}


def _check_prompt(record, where: str) -> None:
    if not isinstance(record, dict):
        raise EvalError(f"{where}: record: expected an object, got {type(record).__name__}")
    if not isinstance(record.get("input_field"), str) or not record["input_field"].strip():
        raise EvalError(f"{where}: input_field: must be a non-empty string")
    if record.get("task_type") not in METRICS_BY_TYPE:
        raise EvalError(f"{where}: task_type: unknown {record.get('task_type')!r}")


def read_responses(path: str, data_path: str, data_lines: list[int]) -> list[str]:
    """The `response` of each line of a JSON Lines file, one per data record, in order."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EvalError(f"{path}: responses file not found") from None
    except UnicodeDecodeError as e:
        raise EvalError(f"{path}: encoding: invalid UTF-8 at byte {e.start}") from None
    lines = [line.rstrip("\r") for line in text.split("\n")]  # JSON never holds a raw "\n"
    while lines and not lines[-1].strip():
        lines.pop()
    n, out = len(data_lines), []
    for lineno, line in enumerate(lines, 1):
        if lineno > n:
            raise EvalError(f"{path}:{lineno}: extra response: {data_path} has {n} records")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise EvalError(f"{path}:{lineno}: json: {e.msg} (column {e.colno})") from None
        if not isinstance(obj, dict) or "response" not in obj:
            raise EvalError(f'{path}:{lineno}: response: missing (expected {{"response": "..."}})')
        if not isinstance(obj["response"], str):
            kind = type(obj["response"]).__name__
            raise EvalError(f"{path}:{lineno}: response: expected a string, got {kind}")
        out.append(obj["response"])
    if len(out) < n:
        raise EvalError(
            f"{path}:{len(out) + 1}: missing response: {path} has {len(out)}, {data_path} has "
            f"{n} records (first unanswered: {data_path}:{data_lines[len(out)]})"
        )
    return out


def score_files(data: str, responses: str) -> dict:
    """ShopBench scores (overall, tracks, tasks) of a responses file against a data file."""
    records, lines = load_data(data)
    return aggregate(records, read_responses(responses, data, lines))


def _natural(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def table(result: dict) -> str:
    """Per-track scores, the overall score, then one line per task."""
    tracks = sorted(result["tracks"], key=lambda t: (t not in CAPABILITIES, _index(t), t))
    counts = {t: sum(v["track"] == t for v in result["tasks"].values()) for t in tracks}
    out = [f"{'track':<34}{'tasks':>6}{'score':>9}", "-" * 49]
    out += [f"{t:<34}{counts[t]:>6}{result['tracks'][t]:>9.4f}" for t in tracks]
    out += ["-" * 49, f"{'overall':<40}{result['overall']:>9.4f}", ""]
    out += [f"{'task':<30}{'track':<34}{'metric':<18}{'n':>5}{'score':>9}", "-" * 96]
    for name in sorted(result["tasks"], key=_natural):
        t = result["tasks"][name]
        out.append(f"{name:<30}{t['track']:<34}{t['metric']:<18}{t['n']:>5}{t['score']:>9.4f}")
    return "\n".join(out)


def _index(track: str) -> int:
    return CAPABILITIES.index(track) if track in CAPABILITIES else 0


def write_json(path: str | Path, obj: dict) -> None:
    atomic_write(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def write_responses(path: str | Path, responses: list[str]) -> None:
    """Responses as JSON Lines, one `{"response": ...}` per record, in record order."""
    with atomic_open(path) as f:
        for r in responses:
            f.write(json.dumps({"response": r}, ensure_ascii=False) + "\n")
