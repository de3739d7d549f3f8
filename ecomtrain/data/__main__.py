"""`python -m ecomtrain.data validate|stats PATH...`: check corpus files, measure packing.

    validate PATH...   one line per bad record, `PATH:LINE: field: reason`; exit 1 if any
    stats PATH...      JSON: records, tasks, capabilities, mixture and packing efficiency

Both run locally (no Ray): JSON Lines files are read line by line, and validation keeps
only the bad records. `stats` tokenizes every valid record with the model's tokenizer
(the offline tiny model by default) and packs them as a run would.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter

from ecomtrain import console
from ecomtrain.base_model import resolve_model
from ecomtrain.config import PROMPT_FORMATS, ConfigError, DataConfig, ModelConfig, checked_config
from ecomtrain.data import shopping_mmlu
from ecomtrain.data.mixture import stats as mixture_stats
from ecomtrain.data.packing import Prompt, encode, pack, tokenizer_at, truncate
from ecomtrain.data.pipeline import unknown_capability
from ecomtrain.data.records import Bad, CorpusError
from ecomtrain.data.scan import Duplicates, parse_file
from ecomtrain.model import ModelError, check_model_folder


def _data_config(args) -> DataConfig:
    raw = {"max_chars": args.max_chars, "file_tasks": {}, "file_capabilities": {}}
    flags = [("--file-task", "file_task", "file_tasks")]
    flags += [("--file-capability", "file_capability", "file_capabilities")]
    for flag, dest, key in flags:
        for item in getattr(args, dest):
            pattern, sep, value = item.partition("=")
            if not sep:
                raise CorpusError(f"{flag} {item!r}: expected GLOB=NAME")
            raw[key][pattern] = value
    try:
        return checked_config({"data": raw}, "command line").data
    except ConfigError as e:
        raise CorpusError(str(e)) from None


def _files(paths: list[str]) -> list[str]:
    """The files to read: each path, or a Shopping MMLU folder's files."""
    return [
        f for p in paths for f in (shopping_mmlu.files(p) if shopping_mmlu.is_folder(p) else [p])
    ]


def validate(args) -> int:
    """Print every bad record (stdout), then per file what its records became (stderr):
    records, the family and capability each got, exact duplicates, bad records by field;
    exit status 1 when there is a bad record."""
    cfg, total, bad, summaries = _data_config(args), 0, 0, []
    for path in _files(args.paths):
        families, capabilities, reasons, capability = Counter(), Counter(), {}, {}
        duplicates = Duplicates()
        for entry in console.bar(parse_file(path, None, cfg, None), desc=path, unit=" records"):
            total += 1
            if isinstance(entry, Bad):
                bad += 1
                print(entry, flush=True)
                count, example = reasons.get(entry.field, (0, entry))
                reasons[entry.field] = (count + 1, example)
            else:
                families[entry["task_family"]] += 1
                capabilities[entry["capability"]] += 1
                capability.setdefault(entry["task_family"], entry["capability"])
                duplicates.add(entry)
        lines = file_summary(path, families, capabilities, reasons, capability)
        if duplicates.count:
            lines.append(
                f"  exact duplicates: {duplicates.count} (trained on again, scored once if "
                f"held out; first: {duplicates.example})"
            )
        summaries.append(lines)
    for lines in summaries:
        print("\n".join(lines), file=sys.stderr)
    print(f"{total} records, {bad} bad, in {len(summaries)} files", file=sys.stderr)
    return 1 if bad else 0


def file_summary(
    path: str, families: Counter, capabilities: Counter, reasons: dict, capability: dict
) -> list:
    """A file's lines of the validation summary (`capability`: each family's)."""
    bad = sum(n for n, _ in reasons.values())
    out = [f"{path}: {sum(families.values()) + bad} records, {bad} bad"]
    if families:
        out.append("  families: " + ", ".join(f"{f} {n}" for f, n in families.most_common()))
        caps = ", ".join(f"{c} {n}" for c, n in capabilities.most_common())
        out.append(f"  capabilities: {caps}")
    for field, (n, first) in sorted(reasons.items(), key=lambda kv: -kv[1][0]):
        out.append(f"  bad {field}: {n} (first, line {first.line}: {first.reason})")
    if hint := unknown_capability(path, capability):
        out.append(f"  {hint}")
    return out


def stats(args) -> int:
    """Print corpus, mixture and packing statistics as JSON."""
    check_model_folder(args.model, "--model")
    cfg = _data_config(args)
    rows, bad = [], 0
    for path in _files(args.paths):
        for entry in console.bar(parse_file(path, None, cfg, None), desc=path, unit=" records"):
            if isinstance(entry, Bad):
                bad += 1
            else:
                rows.append(entry)
    if not rows:
        raise CorpusError(
            f"no valid record in {len(args.paths)} file(s) ({bad} bad): nothing to measure; "
            "`python -m ecomtrain.data validate` lists why"
        )
    tasks = Counter(r["task_family"] for r in rows)
    capabilities = Counter(r["capability"] for r in rows)
    random.Random(args.seed).shuffle(rows)  # a run packs shuffled records
    model = resolve_model(ModelConfig(args.model))
    prompt = Prompt(args.prefix, args.prompt_format == "raw")
    packed = packing(rows, model, args.max_seq_len, args.window, prompt)
    out = {
        "records": len(rows) + bad,
        "bad": bad,
        "tasks": dict(tasks.most_common()),
        "capabilities": dict(capabilities.most_common()),
        "mixture": mixture_stats(
            dict(tasks), cfg, {r["task_family"]: r["capability"] for r in rows}
        ),
    } | packed
    print(json.dumps(out, indent=1, ensure_ascii=False))
    return 0


def packing(rows: list[dict], model_path: str, max_len: int, window: int, prompt: Prompt) -> dict:
    """Tokenize and pack rows in windows as the pipeline does; count tokens and outcomes."""
    tok = tokenizer_at(model_path)
    status, tokens, sequences = Counter(), 0, 0
    for start in console.bar(range(0, len(rows), window), desc="tokenising and packing"):
        lengths = []
        for r in rows[start : start + window]:
            ids, _, st = truncate(*encode(tok, r["input"], r["answer"], prompt), max_len)
            status[st] += 1
            if st != "dropped":
                lengths.append(len(ids))
        tokens += sum(lengths)
        sequences += len(pack(lengths, max_len))
    return {
        "max_seq_len": max_len,
        "sequences": sequences,
        "tokens": tokens,
        "packing_efficiency": tokens / max(1, sequences * max_len),
        "truncated": status["truncated"],
        "dropped": status["dropped"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ecomtrain.data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    default = DataConfig()
    for name in ("validate", "stats"):
        p = sub.add_parser(name)
        p.add_argument(
            "paths", nargs="+", metavar="PATH", help="corpus files, or Shopping MMLU folders"
        )
        p.add_argument("--max-chars", type=int, default=default.max_chars)
        p.add_argument(
            "--file-task",
            action="append",
            default=[],
            metavar="GLOB=FAMILY",
            help="family of the records without task_name in matching files (data.file_tasks)",
        )
        p.add_argument(
            "--file-capability",
            action="append",
            default=[],
            metavar="GLOB=CAPABILITY",
            help="capability of tasks of your own in matching files (data.file_capabilities)",
        )
        console.add_arguments(p)
    s = sub.choices["stats"]
    s.add_argument("--max-seq-len", type=int, default=default.max_seq_len)
    s.add_argument("--window", type=int, default=default.pack_window, help="records per pack")
    s.add_argument("--model", default=ModelConfig().name_or_path, help="tokenizer's model")
    s.add_argument("--seed", type=int, default=default.seed)
    s.add_argument(
        "--no-prefix",
        dest="prefix",
        action="store_false",
        help="count tokens without the official ShopBench prompt prefix (eval.prompt_prefix)",
    )
    s.add_argument(
        "--prompt-format",
        choices=PROMPT_FORMATS,
        default="chat",
        help="the chat template, or raw text for a base model (model.prompt_format)",
    )
    args = parser.parse_args(argv)
    checks = [(args.max_chars < 1, "--max-chars must be >= 1")]
    if args.command == "stats":
        checks += [
            (args.window < 1, "--window must be >= 1 (records per pack)"),
            (args.max_seq_len < 2, "--max-seq-len must be >= 2"),
        ]
    for bad, message in checks:
        if bad:
            sub.choices[args.command].error(message)
    console.setup(args)
    try:
        return validate(args) if args.command == "validate" else stats(args)
    except (CorpusError, FileNotFoundError, ModelError) as e:
        console.log.error("error: %s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
