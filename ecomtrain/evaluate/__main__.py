"""ShopBench evaluator CLI: generate answers with a Ray Data actor pool, score them.

    python -m ecomtrain.evaluate score --data DEV.json --responses R.jsonl --out S.json
    python -m ecomtrain.evaluate generate --model PATH [--adapter DIR] --data DEV.json --out R.jsonl
    python -m ecomtrain.evaluate run --model PATH [--adapter DIR] --data DEV.json --out-dir DIR

--data also takes the Shopping MMLU benchmark's data folder (skill-wise or task-wise files;
scores per skill and overall); `--prompt-format raw` runs its own protocol.

Scores follow the official ShopBench rules (ecomtrain.evaluate.metrics). Bad input stops
with a message naming file and line, and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ecomtrain import console, tracking
from ecomtrain.base_model import resolve_model
from ecomtrain.config import PROMPT_FORMATS, ModelConfig
from ecomtrain.connect import connect
from ecomtrain.data.packing import Prompt
from ecomtrain.data.records import CorpusError, render_answer
from ecomtrain.evaluate.answer import predictions
from ecomtrain.evaluate.datafiles import (
    EvalError,
    load_data,
    read_responses,
    score_files,
    table,
    write_json,
    write_responses,
)
from ecomtrain.evaluate.metrics import ModelUnavailableError, record_scores
from ecomtrain.evaluate.pool import InferenceError, Settings, gpus_per_actor, timed_generate
from ecomtrain.files import OutputError, check_output
from ecomtrain.model import (
    ModelError,
    adapter_config,
    base_model_of,
    check_model_folder,
    find_adapter,
)

DATA_HELP = "ShopBench JSON Lines or JSON array, or a Shopping MMLU data folder or file"


def settings_from(args: argparse.Namespace) -> Settings:
    """Generation settings from CLI arguments; the base model comes from the adapter if unset."""
    adapter = str(find_adapter(args.adapter).resolve()) if args.adapter else ""
    model = args.model or (base_model_of(adapter) if adapter else "")
    if not model:
        raise EvalError("--model is required without --adapter")
    check_model_folder(model, "--model")
    if args.model and adapter:
        base = adapter_config(adapter).get("base_model_name_or_path")
        if base and base != args.model:
            print(
                f"note: adapter was trained on {base}; using --model {args.model}", file=sys.stderr
            )
    return Settings(
        model=resolve_model(ModelConfig(name_or_path=model)),
        adapter=adapter,
        max_new_tokens=args.max_new_tokens,
        prompt=Prompt(args.prompt_prefix, args.prompt_format == "raw"),
        actors=args.actors,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        batch_size=args.batch_size,
        backend=args.backend,
        progress=args.progress and not args.quiet,
    )


def generate(args: argparse.Namespace) -> tuple[list[str], dict]:
    """Responses for `args.data` through the Ray Data actor pool, and generation stats."""
    records, _ = load_data(args.data, need_truth=False)
    settings = settings_from(args)
    connect(args.address)
    settings.num_gpus = gpus_per_actor(args.num_gpus)
    responses, stats = timed_generate(records, settings)
    stats |= {"model": settings.model, "adapter": settings.adapter, "data": args.data}
    stats |= {
        "prompt_prefix": settings.prompt.prefix,
        "prompt_format": "raw" if settings.prompt.raw else "chat",
        "max_new_tokens": settings.max_new_tokens,
    }
    return responses, stats


def log_run(args: argparse.Namespace, result: dict, responses_file: str, out_dir: str) -> None:
    """The evaluation as a W&B run (job_type "evaluate"): its scores and sample answers."""
    with tracking.wandb_run(
        "evaluate",
        project=args.wandb_project,
        mode=args.wandb_mode,
        dir=out_dir,
        tags=[Path(args.data).name],
        config=tracking.cli_config(args),
    ) as run:
        if run is None:
            return
        run.summary.update(tracking.scalars(result))
        records, places = load_data(args.data)
        responses = read_responses(responses_file, args.data, records, places)
        rows = [{"input": r["input_field"], "answer": render_answer(r)} for r in records]
        entries = [
            {"task": r["task_name"], "response": a, "score": s["score"]}
            for r, a, s in zip(records, responses, record_scores(records, responses), strict=True)
        ]
        run.log({"predictions": tracking.predictions_table(predictions(rows, entries, 64))})


def cmd_score(args: argparse.Namespace) -> None:
    check_output(args.out, "--out", {"--data": args.data, "--responses": args.responses})
    result = score_files(args.data, args.responses)
    write_json(args.out, result)
    print(table(result))
    log_run(args, result, args.responses, str(Path(args.out).parent))


def cmd_generate(args: argparse.Namespace) -> None:
    check_output(args.out, "--out", {"--data": args.data})
    responses, _ = generate(args)
    write_responses(args.out, responses)
    print(f"wrote {len(responses)} responses to {args.out}")


def cmd_run(args: argparse.Namespace) -> None:
    out = Path(args.out_dir)
    check_output(out, "--out-dir", folder=True)
    for name in ("responses.jsonl", "generation.json", "scores.json"):
        check_output(out / name, "--out-dir", {"--data": args.data})
    load_data(args.data)  # fail on unscorable data before spending time on generation
    responses, stats = generate(args)
    write_responses(out / "responses.jsonl", responses)
    write_json(out / "generation.json", stats)
    result = score_files(args.data, str(out / "responses.jsonl"))
    write_json(out / "scores.json", result)
    print(table(result))
    log_run(args, result, str(out / "responses.jsonl"), str(out))
    print(f"\nresponses, scores and generation stats in {out}/")


def _generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        help="base model: local dir, hub id or tiny-llama (default: the "
        "adapter's base_model_name_or_path)",
    )
    p.add_argument("--adapter", help="PEFT adapter directory (a checkpoint_* dir of a sweep)")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument(
        "--prompt-prefix",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="prepend the official ShopBench prompt prefix (default: on)",
    )
    p.add_argument(
        "--prompt-format",
        choices=PROMPT_FORMATS,
        default="chat",
        help="chat: the tokenizer's chat template; raw: BOS + prefix + question as plain "
        "text, for base models and the Shopping MMLU scripts' own protocol",
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
        help="Ray Data progress bars (off under --quiet)",
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
    p.add_argument("--data", required=True, help=DATA_HELP)
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
    for p in sub.choices.values():
        console.add_arguments(p)
        tracking.add_arguments(p)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console.setup(args)
    try:
        args.fn(args)
    except (
        CorpusError,
        EvalError,
        InferenceError,
        ModelError,
        ModelUnavailableError,
        OutputError,
    ) as e:
        console.log.error("error: %s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
