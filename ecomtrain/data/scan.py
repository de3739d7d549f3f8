"""Parse, validate, split and decontaminate corpus files; count what happened to each record.

`parse_file` is the one place a record becomes a row: the Ray Data pipeline calls it in
its parse step, and `scan_corpus` calls it (in Ray tasks, one per file) to count records,
bad records and contaminated records per task before a run. The scan keeps only counts
and the rejected records, so the driver never holds the corpus; it is cached on disk,
keyed by the files' contents (a SHA-1 of each: an edit that keeps a file's size and
modification time still makes a new scan) and the settings that change its result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict

import ray

from ecomtrain.config import DataConfig
from ecomtrain.data import shopping_mmlu
from ecomtrain.data.corpus import iter_items, resolve_corpus
from ecomtrain.data.overlap import Decontaminator, exact_key
from ecomtrain.data.records import (
    Bad,
    CorpusError,
    TaskLabels,
    assign_family,
    check_labels,
    own_capability,
    problem,
    provenance_of,
    render_answer,
)
from ecomtrain.data.sources import items as mapped_items
from ecomtrain.data.sources import source_for, source_path
from ecomtrain.files import atomic_write, cache_dir
from ecomtrain.tasks import FAMILIES

SCAN_VERSION = 6  # bump when parse_file's result (or the scan's counts) changes
MAX_INLINE_REJECTS = 100_000  # per file; beyond it the run stops whatever max_bad_fraction
MAX_REJECT_CHARS = 10_000  # longer rejected records are stored as a truncated JSON string
COUNTS = ("train", "eval", "exact", "ngram", "train_synthetic", "eval_synthetic")  # per task


def split_count(counts: dict, split: str, provenance: str) -> int:
    """A task's records of a split ("train" or "eval") and provenance (or "both")."""
    total, synthetic = counts.get(split, 0), counts.get(f"{split}_synthetic", 0)
    return {"both": total, "synthetic": synthetic, "curated": total - synthetic}[provenance]


def is_eval(text: str, fraction: float) -> bool:
    """Held-out by a hash of the normalised input: records equal after normalisation (case,
    punctuation, spacing) always land on the same side, so none is in both splits."""
    return int(exact_key(text)[:8], 16) / 2**32 < fraction


def eval_index(cfg: DataConfig) -> Decontaminator | None:
    """The decontamination index of the `data.decontaminate` files (see data.overlap)."""
    if not cfg.decontaminate:
        return None
    records = []
    for path in [
        f for p in cfg.decontaminate for f in shopping_mmlu.data_files(p, "data.decontaminate")
    ]:
        for item in iter_items(path):
            bad = item.error or problem(item.record, any_task=True)
            if bad:
                raise CorpusError(f"{Bad(path, item.line, item.index, *bad)} (data.decontaminate)")
            r = item.record
            records.append((f"{path}:{item.line}", r["input_field"], render_answer(r)))
    return Decontaminator(records, cfg.ngram)


def corpus_files(cfg: DataConfig) -> list[str]:
    """Every file the corpus reads: `data.corpus` resolved, then `data.sources`."""
    return resolve_corpus(cfg.corpus) + [source_path(s) for s in cfg.sources]


def parse_file(
    path: str, data: bytes | None, cfg: DataConfig, index: Decontaminator | None
) -> Iterator:
    """Rows (dicts of plain values) and `Bad` entries of one file, in file order.

    A row's `split` is "eval" (held out), "train", or "exact"/"ngram" for a training record
    excluded because it overlaps a `data.decontaminate` file. A record's own `split` field
    ("train" or "eval", checked by `problem`) chooses its side; without one, `is_eval`. A
    record that disagrees with its task's first record in the file on its capability,
    task_type or metric is bad (records.TaskLabels).
    """
    source = source_for(cfg, path)
    labels = TaskLabels()
    for item in mapped_items(path, data, source) if source else iter_items(path, data):
        bad = item.error or problem(item.record, cfg.max_chars)
        family = capability = ""
        if not bad:
            family, capability, reason = assign_family(
                item.record, path, cfg.file_tasks, cfg.file_capabilities
            )
            bad = ("task_name", reason) if reason else None
        if not bad:  # an explicit capability or track must agree with the assigned family
            bad = check_labels(item.record | {"task_name": family})
        if not bad:
            r, field = item.record, "track" if item.record.get("track") else "capability"
            kind = (capability, r["task_type"], r["metric"])
            bad = labels.check(family, kind, field, path, item.line)
        if bad:
            yield Bad(path, item.line, item.index, *bad, _keep(item.record), item.fatal)
            if item.fatal:
                return
            continue
        text, answer = item.record["input_field"], render_answer(item.record)
        split = item.record.get("split")  # the record's own choice, else a hash of its input
        if split is None:
            split = "eval" if is_eval(text, cfg.eval_fraction) else "train"
        if split == "train":
            hit = index.check(text, answer) if index else None
            split = hit[0] if hit else split
        row = _row(item.record, family, capability, _where(path, item), split)
        yield row | {"provenance": provenance_of(item.record, path, cfg.file_provenance)}


def eval_rows(path: str, cfg: DataConfig) -> list[dict]:
    """Rows of an eval-only file or Shopping MMLU folder (`eval.extra_files`), scored by each
    record's own labels (a track or capability is the record's track, whatever a built-in
    family of its name says). The first bad record stops with `file:line`."""
    rows = []
    for file in shopping_mmlu.data_files(path, "eval.extra_files"):
        for item in iter_items(file):
            bad = item.error or problem(item.record, cfg.max_chars, any_task=True)
            if bad:
                raise CorpusError(str(Bad(file, item.line, item.index, *bad)))
            record = item.record
            family, capability, _ = assign_family(record, file, {}, {})
            if record.get("track") or record.get("capability"):  # its own label decides
                capability = own_capability(record, file, {})
            rows.append(_row(record, family, capability, _where(file, item), "eval"))
    return rows


def _where(path: str, item) -> str:
    return f"{path}:{item.line}" + ("" if item.index is None else f"#{item.index}")


def _row(record: dict, family: str, capability: str, source: str, split: str) -> dict:
    return {
        "input": record["input_field"],
        "answer": render_answer(record),
        "output_json": json.dumps(record["output_field"], ensure_ascii=False),
        "task_name": str(record.get("task_name") or family),
        "task_family": family,
        "capability": capability,
        "task_type": record["task_type"],
        "metric": record["metric"],
        "source": source,
        "split": split,
    }


def _keep(record):
    text = json.dumps(record, ensure_ascii=False, default=str)
    return record if len(text) <= MAX_REJECT_CHARS else text[:MAX_REJECT_CHARS] + "..."


def duplicate_key(row: dict) -> int:
    """What makes two valid records exact duplicates: the same input, answer, task and
    metric (a 64-bit digest of them)."""
    blob = json.dumps([row.get(k) for k in ("input", "output_json", "task_family", "metric")])
    return int.from_bytes(hashlib.blake2b(blob.encode(), digest_size=8).digest(), "big")


class Duplicates:
    """Counts the exact duplicates among rows (`duplicate_key`), keeping the first one's place."""

    def __init__(self):
        self.first: dict[int, str] = {}
        self.count, self.example = 0, ""

    def add(self, row: dict) -> bool:
        """Whether `row` repeats an earlier row."""
        first = self.first.setdefault(duplicate_key(row), row["source"])
        if first == row["source"]:
            return False
        self.count += 1
        self.example = self.example or f"{row['source']} repeats {first}"
        return True


def summarise(path: str, data: bytes | None, cfg: DataConfig, index: Decontaminator | None) -> dict:
    """Counts of one file: records, bad records (kept for the rejects file), exact duplicates
    of an earlier record of the file (trained on again, counted and said; the held-out sample
    scores one), per task the train, eval and excluded (exact / ngram) records and the
    synthetic ones among its train and eval records (COUNTS), and each task's capability
    (the first record's, for a task of the user's own)."""
    out = {"path": path, "records": 0, "bad": 0, "fatal": False, "rejects": [], "tasks": {}}
    out["capabilities"] = {}
    duplicates = Duplicates()
    for entry in parse_file(path, data, cfg, index):
        out["records"] += 1
        if isinstance(entry, Bad):
            out["bad"] += 1
            out["fatal"] |= entry.fatal
            if len(out["rejects"]) < MAX_INLINE_REJECTS:
                out["rejects"].append(asdict(entry))
            continue
        counts = out["tasks"].setdefault(entry["task_family"], dict.fromkeys(COUNTS, 0))
        counts[entry["split"]] += 1
        if entry["provenance"] == "synthetic" and entry["split"] in ("train", "eval"):
            counts[f"{entry['split']}_synthetic"] += 1
        out["capabilities"].setdefault(entry["task_family"], entry["capability"])
        duplicates.add(entry)
    out["duplicates"], out["duplicate_example"] = duplicates.count, duplicates.example
    return out


def merge(files: list[dict]) -> dict:
    """Corpus-level counts from per-file summaries (files in path order)."""
    files = sorted(files, key=lambda f: f["path"])
    tasks: dict[str, dict] = {}
    capabilities: dict[str, str] = {}
    for f in files:
        for name, counts in f["tasks"].items():
            total = tasks.setdefault(name, dict.fromkeys(counts, 0))
            for k, v in counts.items():
                total[k] += v
        for name, capability in f["capabilities"].items():
            capabilities.setdefault(name, capability)
    order = [k for k in FAMILIES if k in tasks] + sorted(k for k in tasks if k not in FAMILIES)
    return {
        "records": sum(f["records"] for f in files),
        "bad": sum(f["bad"] for f in files),
        "duplicates": sum(f["duplicates"] for f in files),
        "fatal": any(f["fatal"] or f["bad"] > len(f["rejects"]) for f in files),
        "tasks": {k: tasks[k] for k in order},
        "capabilities": {k: capabilities[k] for k in order},
        "files": files,
    }


def scan_key(paths: list[str], cfg: DataConfig) -> str:
    """Cache key: the files (path and content), the recognisers and every setting
    parse_file depends on."""
    stat = [(p, content_digest(p)) for p in paths]
    extra = [
        (f, content_digest(f))
        for p in cfg.decontaminate
        for f in shopping_mmlu.data_files(p, "data.decontaminate")
    ]
    families = [
        (f.name, f.pattern.pattern, str(f.answer_pattern), f.fallback) for f in FAMILIES.values()
    ]
    settings = (cfg.max_chars, cfg.file_tasks, cfg.file_capabilities, cfg.eval_fraction)
    settings += (cfg.file_provenance,)
    settings += (cfg.ngram, [dataclasses.asdict(s) for s in cfg.sources], families, SCAN_VERSION)
    blob = json.dumps([stat, extra, settings], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def content_digest(path: str) -> str:
    """SHA-1 of a file's bytes (hashlib reads it in chunks)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


def scan_corpus(
    paths: list[str], cfg: DataConfig, use_ray: bool = True, index: Decontaminator | None = None
) -> dict:
    """Counts of the whole corpus (see `summarise`), from the disk cache when unchanged.

    With `use_ray` every file is summarised in a Ray task next to the data; the driver
    receives only the per-file counts and rejected records.
    """
    target = cache_dir() / "scans" / f"{scan_key(paths, cfg)}.json"
    if target.exists():
        return json.loads(target.read_text())
    index = index if index is not None else eval_index(cfg)
    if use_ray:
        files = _ray_summaries(paths, cfg, index)
    else:
        files = [summarise(p, None, cfg, index) for p in paths]
    result = merge(files)
    atomic_write(target, json.dumps(result, ensure_ascii=False, default=str))  # trials race
    return result


def corpus_scan(cfg: DataConfig, use_ray: bool = True) -> dict:
    """The scan of the configured corpus (`data.corpus` and `data.sources`), decontaminated
    against `data.decontaminate`: what a run checks (data.pipeline.check_scan) and mixes by."""
    return scan_corpus(corpus_files(cfg), cfg, use_ray=use_ray)


def _ray_summaries(paths: list[str], cfg: DataConfig, index: Decontaminator | None) -> list[dict]:
    def one(row: dict) -> dict:
        return {"summary": json.dumps(summarise(row["path"], row["bytes"], cfg, index))}

    files = ray.data.read_binary_files(paths, include_paths=True, num_cpus=0.25)
    rows = files.map(one, num_cpus=0.25).take_all()
    return [json.loads(r["summary"]) for r in rows]
