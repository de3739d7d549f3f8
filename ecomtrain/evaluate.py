"""ShopBench evaluator CLI: generate answers with a Ray Data actor pool, score them.

    python -m ecomtrain.evaluate score --data DEV.json --responses R.jsonl --out S.json
    python -m ecomtrain.evaluate generate --model PATH [--adapter DIR] --data DEV.json --out R.jsonl
    python -m ecomtrain.evaluate run --model PATH [--adapter DIR] --data DEV.json --out-dir DIR

Scores follow the official ShopBench rules (ecomtrain.metrics). Bad input stops with a
message naming file and line, and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from ecomtrain.corpus import CorpusError, assign_family, capability_of, read_records, validate
from ecomtrain.inference import (
    InferenceError,
    Settings,
    adapter_config,
    base_model_of,
    find_adapter,
)
from ecomtrain.metrics import TASK_TYPE_BY_METRIC, ModelUnavailableError, aggregate
from ecomtrain.tasks import CAPABILITIES, METRICS_BY_TYPE


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
    return record | {"task_name": name, "track": capability_of(record | {"task_name": name})}


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
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def write_responses(path: str | Path, responses: list[str]) -> None:
    """Responses as JSON Lines, one `{"response": ...}` per record, in record order."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in responses:
            f.write(json.dumps({"response": r}, ensure_ascii=False) + "\n")


def settings_from(args: argparse.Namespace) -> Settings:
    """Generation settings from CLI arguments; the base model comes from the adapter if unset."""
    from ecomtrain.config import ModelConfig
    from ecomtrain.model import resolve_model

    adapter = str(find_adapter(args.adapter).resolve()) if args.adapter else ""
    model = args.model or (base_model_of(Path(adapter)) if adapter else "")
    if not model:
        raise EvalError("--model is required without --adapter")
    if args.model and adapter:
        base = adapter_config(Path(adapter)).get("base_model_name_or_path")
        if base and base != args.model:
            print(
                f"note: adapter was trained on {base}; using --model {args.model}", file=sys.stderr
            )
    return Settings(
        model=resolve_model(ModelConfig(name_or_path=model)),
        adapter=adapter,
        max_new_tokens=args.max_new_tokens,
        prompt_prefix=args.prompt_prefix,
        actors=args.actors,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        batch_size=args.batch_size,
        backend=args.backend,
        progress=args.progress,
    )


def generate(args: argparse.Namespace) -> tuple[list[str], dict]:
    """Responses for `args.data` through the Ray Data actor pool, and generation stats."""
    from ecomtrain.connect import connect
    from ecomtrain.inference import gpus_per_actor, timed_generate

    records, _ = load_data(args.data, need_truth=False)
    settings = settings_from(args)
    connect(args.address)
    settings.num_gpus = gpus_per_actor(args.num_gpus)
    responses, stats = timed_generate(records, settings)
    stats |= {"model": settings.model, "adapter": settings.adapter, "data": args.data}
    stats |= {"prompt_prefix": settings.prompt_prefix, "max_new_tokens": settings.max_new_tokens}
    return responses, stats


def cmd_score(args: argparse.Namespace) -> None:
    result = score_files(args.data, args.responses)
    write_json(args.out, result)
    print(table(result))


def cmd_generate(args: argparse.Namespace) -> None:
    responses, _ = generate(args)
    write_responses(args.out, responses)
    print(f"wrote {len(responses)} responses to {args.out}")


def cmd_run(args: argparse.Namespace) -> None:
    load_data(args.data)  # fail on unscorable data before spending time on generation
    responses, stats = generate(args)
    out = Path(args.out_dir)
    write_responses(out / "responses.jsonl", responses)
    write_json(out / "generation.json", stats)
    result = score_files(args.data, str(out / "responses.jsonl"))
    write_json(out / "scores.json", result)
    print(table(result))
    print(f"\nresponses, scores and generation stats in {out}/")


def _generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        help="base model: local dir, hub id or tiny-llama (default: the "
        "adapter's base_model_name_or_path)",
    )
    p.add_argument("--adapter", help="PEFT adapter directory (a checkpoint_* dir of a sweep)")
    p.add_argument("--data", required=True, help="ShopBench JSON Lines or JSON array")
    p.add_argument(
        "--prompt-prefix",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="prepend the official ShopBench prompt prefix (default: on)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=100,
        help="budget for non-multiple-choice tasks; multiple choice gets 1",
    )
    p.add_argument("--actors", type=int, default=2, help="model replicas (Ray actors)")
    p.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per actor")
    p.add_argument(
        "--num-gpus",
        type=float,
        default=None,
        help="GPUs per actor (default: 1 if the cluster has GPUs, else 0)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generate call")
    p.add_argument(
        "--backend",
        choices=["auto", "hf", "vllm"],
        default="auto",
        help="auto: vLLM when installed and the actor has a GPU, else HF generate",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Ray Data progress bars",
    )
    p.add_argument("--address", help="Ray cluster (default: $RAY_ADDRESS, else a local one)")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m ecomtrain.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = root.add_subparsers(dest="command", required=True)
    p = sub.add_parser("score", help="score a responses file")
    p.add_argument("--data", required=True, help="ShopBench JSON Lines or JSON array")
    p.add_argument("--responses", required=True, help='JSON Lines of {"response": ...}')
    p.add_argument("--out", required=True, help="scores JSON to write")
    p.set_defaults(fn=cmd_score)
    p = sub.add_parser("generate", help="generate responses with a Ray Data actor pool")
    _generation_args(p)
    p.add_argument("--out", required=True, help="responses JSON Lines to write")
    p.set_defaults(fn=cmd_generate)
    p = sub.add_parser("run", help="generate, then score and print the table")
    _generation_args(p)
    p.add_argument("--out-dir", required=True, help="where responses and scores go")
    p.set_defaults(fn=cmd_run)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.fn(args)
    except (CorpusError, EvalError, InferenceError, ModelUnavailableError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
