"""The one trials schema: trials.csv, written from a sweep's results and read back typed.

One row per trial: what it trained on (subset, tasks, capabilities), every swept value
(LoRA rank, alpha, the seed, and each `sweep.params` key under its dotted config path, e.g.
`train.lr`), its scores (overall, `track/*`, `task/*` on the selection records; `confirm/*`
on the confirmation records), loss, wall time and error. The
report and the W&B summary read nothing else.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import yaml

from ecomtrain.files import atomic_open
from ecomtrain.tasks import CAPABILITIES, FAMILIES

REQUIRED = ("trial", "subset", "rank", "score")
SCORES = ("track/", "task/", "extra/", "confirm/")  # prefixes of the per-track/task score columns
INTS = ("rank", "seed", "n_tasks", "n_capabilities", "ladder_step", "trainable_params")
FLOATS = ("score", "loss", "wall_s", "alpha", "task_entropy", "score_se", "score_seen")
FLOATS += ("score_unseen", "eval_loss", "eval_likelihood")
LISTS = ("tasks", "capabilities")
COLUMNS = [
    "trial",
    "subset",
    "tasks",
    "n_tasks",
    "n_capabilities",
    "rank",
    "score",
    "loss",
    "wall_s",
]
# Columns a trial has when its subset, config or metrics carry them.
OPTIONAL = ["alpha", "seed", "ladder_step", "capabilities", "task_entropy", "trainable_params"]
OPTIONAL += ["metric", "score_se", "score_seen", "score_unseen", "eval_loss", "eval_likelihood"]
OPTIONAL += ["checkpoint"]


def swept_keys(row: dict) -> list[str]:
    """The dotted config paths a row carries: the `sweep.params` dimensions of its sweep."""
    return sorted(k for k in row if "." in k and not k.startswith(SCORES))


def checkpoint_uri(path: str, storage: str) -> str:
    """A checkpoint's location as readers need it: Ray Train reports the path inside its
    filesystem ("bucket/prefix/...") for cloud storage, so the storage's scheme goes back on."""
    scheme, sep, _ = storage.partition("://")
    return f"{scheme}://{path}" if sep and path and "://" not in path else path


def trial_rows(results, metric: str = "score", storage: str = "") -> list[dict]:
    """One row per trial of a Tune ResultGrid (failed trials included, score empty). `score`
    is the sweep's objective (`metric`, e.g. extra/score), named in the `metric` column;
    checkpoints are URIs when the sweep's `storage` is one."""
    rows = []
    for r in results:
        cfg, m = r.config or {}, r.metrics or {}
        subset = cfg.get("subset", {})
        row = {
            "trial": r.path.rsplit("/", 1)[-1] if r.path else "",
            "subset": subset.get("id", ""),
            "tasks": " ".join(subset.get("tasks", [])),
            "n_tasks": subset.get("n_tasks", ""),
            "n_capabilities": subset.get("n_capabilities", ""),
            "rank": cfg.get("rank", ""),
            "score": m.get(metric, ""),
            "metric": metric,
            "loss": m.get("loss", ""),
            "wall_s": round(m.get("time_total_s", 0.0), 1),
            # the last checkpoint: its scores.jsonl holds every held-out record's score
            "checkpoint": checkpoint_uri(m.get("checkpoint_path", ""), storage),
        }
        for key in OPTIONAL:
            value = subset.get(key, cfg.get(key, m.get(key)))
            if value is not None:
                row[key] = " ".join(value) if isinstance(value, list) else value
        row |= {k: _text(v) for k, v in cfg.items() if "." in k}  # sweep.params dimensions
        row |= {k: v for k, v in m.items() if k.startswith(SCORES)}
        if r.error:
            row["error"] = str(r.error).splitlines()[0][:200]
        rows.append(row)
    return sorted(rows, key=lambda x: (str(x["subset"]), int(x["rank"] or 0), x["trial"]))


def _text(value) -> str:
    """A swept value as one CSV cell (lists and mappings in YAML flow style)."""
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return str(value)


def columns(rows: list[dict]) -> list[str]:
    """trials.csv's columns: the fixed ones first, then optional ones, then the swept config
    paths, then per-track/per-task scores."""
    keys = {k for r in rows for k in r}
    optional = [k for k in OPTIONAL if k in keys]
    swept = sorted({k for r in rows for k in swept_keys(r)})
    extra = sorted(keys - set(COLUMNS) - set(optional) - set(swept))
    return COLUMNS + optional + swept + extra


def write_csv(rows: list[dict], path: Path) -> Path:
    """trials.csv of the rows `trial_rows` made."""
    with atomic_open(path) as f:
        writer = csv.DictWriter(f, fieldnames=columns(rows))
        writer.writeheader()
        writer.writerows(rows)
    return path


def typed_rows(rows: list[dict]) -> list[dict]:
    """The rows `trial_rows` made, typed exactly as `load_trials` reads them back from
    trials.csv (the same text of each cell, the same parsing), without the file."""
    names = columns(rows)
    return [
        _parse_row({k: _cell(r.get(k)) for k in names}, f"trial {r.get('trial', '?')}")
        for r in rows
    ]


def _cell(value) -> str:
    """A value as csv.DictWriter writes it."""
    return "" if value is None else str(value)


class ReportError(ValueError):
    """trials.csv is missing or malformed; the message names the file, line and column."""


# --- reading trials.csv -------------------------------------------------------------------------


def load_trials(path: Path) -> list[dict]:
    """Typed rows of trials.csv: numbers parsed, lists split, failed trials kept (score None)."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise ReportError(f"{path}:1: missing column(s) {', '.join(missing)}")
            rows = [_parse_row(raw, f"{path}:{reader.line_num}") for raw in reader]
    except FileNotFoundError:
        raise ReportError(f"{path}: not found (run a sweep into this directory first)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ReportError(f"{path}: not a readable CSV file: {e}") from None
    if not rows:
        raise ReportError(f"{path}: no trials")
    return rows


def _parse_row(raw: dict, where: str) -> dict:
    if None in raw or None in raw.values():
        raise ReportError(f"{where}: wrong number of fields")
    row: dict = {k: v.strip() for k, v in raw.items()}
    for col in INTS + FLOATS:
        if col in row or col in REQUIRED:
            row[col] = _number(row.get(col, ""), col in INTS, f"{where}: column {col!r}")
    for col in row:
        if col.startswith(SCORES):
            row[col] = _number(row[col], False, f"{where}: column {col!r}")
    if row["rank"] is None or row["rank"] < 1:
        raise ReportError(f"{where}: column 'rank' must be a positive integer")
    for col in LISTS:
        row[col] = row.get(col, "").split()
    if not row["capabilities"] and all(t in FAMILIES for t in row["tasks"]):
        covered = {FAMILIES[t].capability for t in row["tasks"]}
        row["capabilities"] = [c for c in CAPABILITIES if c in covered]
    if row.get("n_capabilities") is None and row["capabilities"]:
        row["n_capabilities"] = len(row["capabilities"])
    if row.get("n_tasks") is None and row["tasks"]:
        row["n_tasks"] = len(row["tasks"])
    row["error"] = row.get("error", "")
    if row["score"] is not None and math.isnan(row["score"]):
        row["score"] = None
    return row


def _number(text: str, integer: bool, where: str) -> float | int | None:
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ReportError(f"{where}: {text!r} is not a number") from None
    if integer:
        if not value.is_integer():
            raise ReportError(f"{where}: {text!r} is not an integer")
        return int(value)
    return value
