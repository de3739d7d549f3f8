"""A generation run: plan, complete, judge, write; resumable and accounted.

A spec (configs/generate/*.yaml) becomes a fixed plan of work items keyed by prompt hash;
each item goes to a backend (OpenAI-compatible HTTP or a local model on Ray Data); each
completion passes the quality gate (JSON, fields, corpus.validate, answer balancing,
decontamination, exact and near dedup) and ends as exactly one line of records.jsonl or
rejects.jsonl in the output folder. Reruns skip finished keys, so a crashed run resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ecomtrain import console
from ecomtrain.base_model import resolve_model
from ecomtrain.config import ConfigError, ModelConfig
from ecomtrain.data.corpus import read_records
from ecomtrain.data.overlap import Decontaminator, Deduplicator, frequent_shingles
from ecomtrain.data.records import CorpusError, answer_text
from ecomtrain.files import atomic_write
from ecomtrain.generate.backends import (
    BackendError,
    Completion,
    HttpOptions,
    local_completions,
    openai_completions,
)
from ecomtrain.generate.quality import (
    Reject,
    answer_position,
    balance,
    check,
    dedup_texts,
    length_bucket,
    parse_completion,
    split_options,
    to_record,
)
from ecomtrain.generate.spec import Spec, WorkItem, load_seeds, load_spec, plan
from ecomtrain.generate.store import RECORDS, Store, key_of
from ecomtrain.tasks import FAMILIES

log = logging.getLogger(__name__)


@dataclass
class Gate:
    """Everything the quality gate remembers while a run goes on."""

    spec: Spec
    dedup: Deduplicator
    decon: Decontaminator
    positions: Counter = field(default_factory=Counter)  # (option count, answer index)
    provenance: dict = field(default_factory=dict)  # backend, model: copied into each record


def _reference_records(paths: list[str]) -> list[tuple[str, dict]]:
    out = []
    for path in paths:
        for lineno, record in read_records(path):
            where = f"{path}:{lineno}"
            if not isinstance(record, dict) or not isinstance(record.get("input_field"), str):
                raise CorpusError(f"{where}: input_field: missing or not a string")
            out.append((where, record))
    return out


def build_gate(spec: Spec, store: Store, provenance: dict) -> Gate:
    """Load the eval n-grams and the dedup reference (files, spec examples, earlier output)."""
    evals = [
        (w, r["input_field"], answer_text(r.get("output_field", "")))
        for w, r in _reference_records(spec.decontaminate.against)
    ]
    # The instruction and examples are the template every generated record repeats.
    template = [spec.instruction]
    template += [
        ex.input_field + "\n" + answer_text(ex.output_field) for ex in spec.parsed_examples
    ]
    decon = Decontaminator(evals, spec.decontaminate.ngram, template)
    refs = _reference_records(spec.dedup.against)
    task_type = FAMILIES[spec.family].task_type
    examples = [vars(ex) | {"task_type": task_type} for ex in spec.parsed_examples]
    n = spec.dedup.shingle
    # Template: shingles shared by two spec examples, or frequent in the reference files.
    template = frequent_shingles([dedup_texts(ex)[1] for ex in examples], n, 2, frac=0.0)
    template |= frequent_shingles([dedup_texts(r)[1] for _, r in refs], n)
    dedup = Deduplicator(spec.dedup.threshold, n, template)
    gate = Gate(spec, dedup, decon, provenance=provenance)
    for where, record in refs:
        dedup.add(*dedup_texts(record), where)
    for i, example in enumerate(examples):  # a copy of an example is no new data
        dedup.add(*dedup_texts(example), f"{spec.source}: examples[{i}]")
    for record in store.records:
        remember(gate, record)
    return gate


def remember(gate: Gate, record: dict) -> None:
    """Count a written record for dedup and for answer-position balancing."""
    gate.dedup.add(*dedup_texts(record), f"{RECORDS}: {key_of(record)}")
    if record["task_type"] == "multiple-choice" and (parts := split_options(record["input_field"])):
        gate.positions[(len(parts[1]), record["output_field"])] += 1


def judge(gate: Gate, item: WorkItem, c: Completion) -> dict:
    """The record a completion yields, or a Reject saying why there is none."""
    if c.error:
        raise Reject(c.error, c.detail)
    spec = gate.spec
    obj = parse_completion(c.text, c.finish_reason)
    record = to_record(obj, spec.family, f"generated {item.key}")
    if spec.balance_answers and record["task_type"] == "multiple-choice":
        record = balance(record, gate.positions, item.key)
        check(record, f"generated {item.key}")
    hit = gate.decon.check(record["input_field"], answer_text(record["output_field"]))
    if hit:
        raise Reject("contaminated", f"shares {hit[2]!r} with {hit[1]}")
    dup = gate.dedup.check(*dedup_texts(record))
    if dup:
        raise Reject(f"duplicate_{dup[0]}", f"duplicates {dup[1]}")
    provenance = {"key": item.key, "spec": spec.name, "index": item.index, **gate.provenance}
    return {
        **record,
        "difficulty": item.difficulty,
        "seed_item": item.seed_text[:500],
        "provenance": provenance,
    }


def handle(gate: Gate, store: Store, item: WorkItem, c: Completion, run: Counter) -> None:
    """Write the completion's one outcome (record or reject) and count it."""
    run.update(f"retry:{cause}" for cause in c.retries)
    try:
        record = judge(gate, item, c)
    except Reject as r:
        kind = "duplicate" if r.reason.startswith("duplicate") else "rejected"
        store.write_reject(
            {
                "key": item.key,
                "index": item.index,
                "difficulty": item.difficulty,
                "kind": kind,
                "reason": r.reason,
                "detail": r.detail,
                "final": c.final,
                "completion": c.text[:2000],
                "retries": c.retries,
            }
        )
        run[kind] += 1
        run[f"reason:{r.reason}"] += 1
        return
    store.write_record(record)
    remember(gate, record)
    run["written"] += 1


def completions(args: argparse.Namespace, spec: Spec, pending: list[WorkItem], model: str):
    """The chosen backend's completions of the pending items."""
    temperature = spec.temperature if args.temperature is None else args.temperature
    max_tokens = args.max_tokens or spec.max_tokens
    if args.backend == "local":
        path = resolve_model(ModelConfig(name_or_path=model))
        actors = args.concurrency or 1
        return local_completions(pending, path, actors, temperature, max_tokens)
    opts = HttpOptions(
        args.base_url, model, args.concurrency or 8, args.timeout, args.max_retries, args.backoff
    )
    return openai_completions(pending, opts, temperature, max_tokens)


def run(args: argparse.Namespace) -> dict:
    """Generate the spec's records into args.out; returns the stats (also in stats.json)."""
    spec = load_spec(args.spec)
    if args.target:
        spec.target = args.target
    model = args.model or spec.model or ("tiny-llama" if args.backend == "local" else "")
    if not model:
        raise ConfigError(f"{args.spec}: model: give --model or set `model` in the spec")
    items = plan(spec, load_seeds(spec))
    store = Store(args.out)
    try:
        gate = build_gate(spec, store, {"backend": args.backend, "model": model})
        pending = [it for it in items if it.key not in store.finished]
        counts = drive(gate, store, pending, completions(args, spec, pending, model))
        counts["skipped"] = len(items) - len(pending)
        stats = summarize(store, counts)
    finally:
        store.close()
    atomic_write(Path(args.out) / "stats.json", json.dumps(stats, indent=2) + "\n")
    return stats


def drive(gate: Gate, store: Store, pending: list[WorkItem], answers) -> Counter:
    """Judge and write each completion as it arrives; count outcomes, retries and time."""
    by_key = {it.key: it for it in pending}
    counts = Counter(requested=len(pending), written=0, rejected=0, duplicate=0)
    start, first = time.perf_counter(), None
    progress = console.bar(total=len(pending), desc="generating", unit=" items")
    for c in answers:
        item = by_key.pop(c.key, None)
        if item is None:
            raise BackendError(f"backend answered an unknown or repeated key {c.key}")
        handle(gate, store, item, c, counts)
        first = first or time.perf_counter()
        progress.update()
        progress.set_postfix(
            written=counts["written"], rejected=counts["rejected"], dup=counts["duplicate"]
        )
    progress.close()
    if by_key:
        raise BackendError(f"backend ended without answering {len(by_key)} work items")
    end = time.perf_counter()
    counts["seconds"] = round(end - start, 3)
    # Startup (Ray, model load, first request) apart, the steady rate after the first answer:
    counts["first_answer_s"] = round((first or end) - start, 3)
    if len(pending) > 1 and end > first:
        counts["steady_completions_per_s"] = round((len(pending) - 1) / (end - first), 3)
    return counts


def summarize(store: Store, counts: Counter) -> dict:
    """This run's accounting plus the folder's cumulative distributions."""
    final_rejects = [r for r in store.rejects if r["final"]]
    seconds = counts.get("seconds", 0) or 1e-9
    this_run = {k: v for k, v in counts.items() if ":" not in k}
    return {
        "run": this_run
        | {
            "completions_per_s": round((counts["requested"]) / seconds, 3),
            "records_per_s": round(counts["written"] / seconds, 3),
            "reject_reasons": _sub(counts, "reason:"),
            "retries": _sub(counts, "retry:"),
        },
        "records": len(store.records),
        "difficulty": dict(Counter(r["difficulty"] for r in store.records)),
        "answer_position": dict(Counter(answer_position(r) for r in store.records)),
        "input_length": dict(Counter(length_bucket(r["input_field"]) for r in store.records)),
        "rejects": dict(Counter(r["reason"] for r in final_rejects)),
        "request_failures_to_retry": len(
            {r["key"] for r in store.rejects if not r["final"]} - set(store.finished)
        ),
    }


def _sub(counts: Counter, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in sorted(counts.items()) if k.startswith(prefix)}
