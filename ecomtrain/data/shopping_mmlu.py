"""Shopping MMLU, the public release of the KDD Cup 2024 test, as ShopBench records.

Its data folder comes in two layouts, both read here:
- skill-wise: `skills/skill<k>_<skill>.json`, JSON Lines in the ShopBench schema
  (`task_name`, `task_type`, `metric`, `input_field`, `output_field`); the file's skill
  (concept, knowledge, behavior, multilingual) is the records' track.
- task-wise: `multiple_choice/<task>_dataset.csv` with columns `question`, `choices` (a
  Python list literal of 4 options) and `answer` (0-3), and
  `<type>/<task>_dataset.json` JSON Lines with `input_field` and `target_field`, for the
  types generation, ranking, retrieval and named_entity_recognition. The task is the
  file's name, the type its folder's; the metric follows the type, and for generation the
  task's name, as the benchmark's own scripts choose it. These files name no skill: their
  track is "unknown".

A multiple-choice question is rendered as the benchmark renders it: the question, then
`\\n{i}. {choice}` for each option, then `\\nAnswer: `; review rating prediction carries
its options (1-5) in the question, and its answer is the rating. `choices` is read with a
literal parser, never evaluated. A folder holding both layouts is read skill-wise (the
skill files hold the whole benchmark; the task files repeat it).
"""

from __future__ import annotations

import ast
import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path

from ecomtrain.data.records import CorpusError, Problem
from ecomtrain.tasks import BEHAVIOR, CONCEPT, KNOWLEDGE, MULTILINGUAL

SKILLS_DIR = "skills"
MULTIPLE_CHOICE_DIR = "multiple_choice"
# task-wise folder -> the ShopBench task_type of its files
TYPE_DIRS = {
    MULTIPLE_CHOICE_DIR: "multiple-choice",
    "generation": "generation",
    "ranking": "ranking",
    "retrieval": "retrieval",
    "named_entity_recognition": "named_entity_recognition",
}
METRIC_OF_TYPE = {
    "multiple-choice": "accuracy",
    "ranking": "ndcg",
    "retrieval": "hit rate@3",
    "named_entity_recognition": "micro f1",
}
# a word in a skill file's name -> the track (capability) of its records
SKILL_TRACKS = {
    "concept": CONCEPT,
    "knowledge": KNOWLEDGE,
    "reasoning": KNOWLEDGE,
    "behavior": BEHAVIOR,
    "behaviour": BEHAVIOR,
    "multilingual": MULTILINGUAL,
    "lingual": MULTILINGUAL,
}
RATING_TASK = "review_rating_prediction"  # its options sit in the question; answers are 1-5
N_CHOICES = 4


def is_folder(path: str | Path) -> bool:
    """A Shopping MMLU data folder (either layout), or one of its sub-folders."""
    p = Path(path)
    if not p.is_dir():
        return False
    if p.name in TYPE_DIRS or p.name == SKILLS_DIR:
        return True
    return any((p / d).is_dir() for d in (SKILLS_DIR, *TYPE_DIRS))


def is_benchmark(path: str | Path) -> bool:
    """A Shopping MMLU folder, or a file in one of its folders."""
    p = Path(path)
    return is_folder(p) or (
        p.is_file() and (p.parent.name in TYPE_DIRS or p.parent.name == SKILLS_DIR)
    )


def data_files(path: str, key: str) -> list[str]:
    """An evaluation entry's files: a benchmark data folder's (either layout), or the file
    itself; `key` (the setting or option that named it) is in the error when it is neither."""
    if is_folder(path):
        return files(path)
    if not Path(path).is_file():
        raise CorpusError(f"{path}: eval file not found ({key})")
    return [path]


def files(folder: str | Path) -> list[str]:
    """The benchmark files of a data folder: its skill files when it has them, else its
    task files, in name order; a sub-folder gives its own files."""
    p = Path(folder)
    if p.name == SKILLS_DIR:
        found = sorted(p.glob("*.json"))
    elif p.name in TYPE_DIRS:
        found = sorted(p.glob("*.csv" if p.name == MULTIPLE_CHOICE_DIR else "*.json"))
    elif (p / SKILLS_DIR).is_dir() and any((p / SKILLS_DIR).glob("*.json")):
        found = sorted((p / SKILLS_DIR).glob("*.json"))
    else:
        return [f for d in TYPE_DIRS if (p / d).is_dir() for f in files(p / d)] or _none(p)
    return [str(f.resolve()) for f in found] or _none(p)


def _none(folder: Path) -> list[str]:
    raise CorpusError(
        f"{folder}: no Shopping MMLU files (expected {SKILLS_DIR}/*.json, "
        f"{MULTIPLE_CHOICE_DIR}/*.csv or <type>/*_dataset.json)"
    )


def task_of(path: str | Path) -> str:
    """A task-wise file's task: its name less `_dataset` and the extension."""
    return Path(path).stem.removesuffix("_dataset")


def skill_track(path: str | Path) -> str | None:
    """The track of a skill file (`skill1_concept.json` -> the concept capability)."""
    words = Path(path).stem.lower().replace("-", "_").split("_")
    return next((SKILL_TRACKS[w] for w in words if w in SKILL_TRACKS), None)


def generation_metric(task: str) -> str:
    """The benchmark's metric for a task-wise generation task, chosen by its name."""
    if "extraction" in task:
        return "rougel"
    if "translation" in task:
        return "jp-bleu" if "JP" in task else "bleu"
    if "multilingual" in task:
        return "multilingual-sent-transformer"
    return "sent-transformer"


def converter(path: str) -> Callable[[object], tuple[object, Problem | None]] | None:
    """For a JSON file of the benchmark (by its folder), a function turning one decoded
    element into a ShopBench record, or (element, problem); None for any other file."""
    p = Path(path)
    folder = p.parent.name
    if folder == SKILLS_DIR:
        track = skill_track(p)
        return lambda r: (
            {"track": track} | r if track and isinstance(r, dict) else r,  # its own first
            None,
        )
    if folder in TYPE_DIRS and folder != MULTIPLE_CHOICE_DIR:
        task_type, task = TYPE_DIRS[folder], task_of(p)
        metric = METRIC_OF_TYPE.get(task_type) or generation_metric(task)
        return lambda r: _task_record(r, task, task_type, metric)
    return None


def _task_record(element, task: str, task_type: str, metric: str):
    if not isinstance(element, dict) or "output_field" in element:
        return element, None  # a ShopBench record already; the record checks name any fault
    if "target_field" not in element:
        return element, ("target_field", "missing")
    record = {k: v for k, v in element.items() if k != "target_field"}
    return record | {
        "output_field": element["target_field"],
        "task_name": task,
        "task_type": task_type,
        "metric": metric,
    }, None


def is_multiple_choice_csv(path: str) -> bool:
    return Path(path).suffix.lower() == ".csv"


def read_csv(path: str, data: bytes) -> Iterator[tuple[int, dict | None, Problem | None]]:
    """(line, record, None) or (line, None, problem) for each row of a multiple-choice CSV
    file; the line is the row's first line in the file (a quoted field may span lines)."""
    task = task_of(path)
    text = data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        yield 1, None, ("file", "empty: no header and no rows")
        return
    except csv.Error as e:
        yield 1, None, ("csv", str(e))
        return
    columns = {name.strip(): i for i, name in enumerate(header)}
    missing = [c for c in ("question", "choices", "answer") if c not in columns]
    if missing:
        yield 1, None, ("header", f"missing column(s) {', '.join(missing)} (found {header})")
        return
    line = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            yield line, None, ("csv", str(e))
            return
        if row:
            values = {c: row[i] if i < len(row) else None for c, i in columns.items()}
            record, bad = _choice_record(values, task)
            yield line, record, bad
        line = reader.line_num + 1
    if line == 2:
        yield 2, None, ("file", "empty: a header and no rows")


def _choice_record(row: dict, task: str) -> tuple[dict | None, Problem | None]:
    question, choices, answer = row["question"], row["choices"], row["answer"]
    if not question or not question.strip():
        return None, ("question", "must be a non-empty string")
    try:
        label = int(str(answer).strip())
    except ValueError:
        return None, ("answer", f"must be an integer, got {answer!r}")
    prompt = question
    if task != RATING_TASK:
        try:
            options = ast.literal_eval(choices or "")
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None, ("choices", f"not a list literal: {str(choices)[:80]!r}")
        if not isinstance(options, list | tuple) or len(options) != N_CHOICES:
            return None, ("choices", f"expected a list of {N_CHOICES} options, got {options!r}")
        if not 0 <= label < N_CHOICES:
            return None, ("answer", f"{label} is not an option number (0-{N_CHOICES - 1})")
        prompt += "".join(f"\n{i}. {option}" for i, option in enumerate(options))
    prompt += "\nAnswer: "
    return {
        "input_field": prompt,
        "output_field": label,
        "task_name": task,
        "task_type": "multiple-choice",
        "metric": "accuracy",
    }, None
