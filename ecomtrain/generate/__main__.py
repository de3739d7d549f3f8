"""`python -m ecomtrain.generate`: LLM data generation with sample-output engineering.

A spec (configs/generate/*.yaml) names a task family, an instruction and few-shot examples
whose outputs are engineered per difficulty; every completion passes the quality gate and
ends as one line of records.jsonl or rejects.jsonl in --out. Reruns resume.
"""

from __future__ import annotations

import argparse
import os
import sys

from ecomtrain import console, tracking
from ecomtrain.config import ConfigError
from ecomtrain.data.records import CorpusError
from ecomtrain.generate.backends import BackendError
from ecomtrain.generate.run import run
from ecomtrain.generate.store import RECORDS, REJECTS

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def print_stats(stats: dict, out: str) -> None:
    r = stats["run"]
    print(
        f"run: requested {r['requested']} (skipped {r['skipped']} finished earlier): "
        f"written {r['written']}, rejected {r['rejected']}, duplicates {r['duplicate']}; "
        f"{r['seconds']} s, {r['completions_per_s']} completions/s, {r['records_per_s']} records/s"
    )
    if "steady_completions_per_s" in r:
        print(
            f"  first answer after {r['first_answer_s']} s, then "
            f"{r['steady_completions_per_s']} completions/s"
        )
    print(f"  reject reasons: {_fmt(r['reject_reasons'])}; retries: {_fmt(r['retries'])}")
    print(f"{out}: {stats['records']} records in {RECORDS}, rejects in {REJECTS}")
    for key in ("difficulty", "answer_position", "input_length", "rejects"):
        print(f"  {key.replace('_', ' ')}: {_fmt(stats[key])}")


def _fmt(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=str)) or "none"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ecomtrain.generate", description=__doc__)
    p.add_argument("--spec", required=True, help="generation spec (configs/generate/*.yaml)")
    p.add_argument("--out", required=True, help="output folder (resumed when it exists)")
    p.add_argument(
        "--backend",
        choices=("openai", "local"),
        default="openai",
        help="openai: any OpenAI-compatible chat API (OpenAI, vLLM, ...); local: a local "
        "model in a Ray Data actor pool",
    )
    p.add_argument(
        "--base-url",
        default=os.environ.get("OPENAI_BASE_URL", DEFAULT_BASE_URL),
        help="API root, e.g. http://127.0.0.1:8000/v1 (default: $OPENAI_BASE_URL or OpenAI); "
        "the key is read from $OPENAI_API_KEY",
    )
    p.add_argument("--model", default="", help="model name (HTTP) or path/tiny-llama (local)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="HTTP requests in flight (default 8) or "
        "local model replicas, one CPU each (default 1)",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP request")
    p.add_argument("--max-retries", type=int, default=5, help="retries on 429, 5xx, timeouts")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry delay, seconds")
    p.add_argument("--target", type=int, default=0, help="override the spec's target count")
    p.add_argument("--temperature", type=float, default=None, help="override; 0 is greedy")
    p.add_argument("--max-tokens", type=int, default=0, help="override the completion budget")
    console.add_arguments(p)
    tracking.add_arguments(p)
    args = p.parse_args(argv)
    checks = [
        (args.concurrency < 0, "--concurrency must be >= 1 (or 0 for the default)"),
        (not args.timeout > 0, "--timeout must be > 0 seconds"),
        (args.max_retries < 0, "--max-retries must be >= 0"),
        (not args.backoff >= 0, "--backoff must be >= 0 seconds"),
        (args.target < 0, "--target must be >= 1 (or 0 for the spec's)"),
        (args.max_tokens < 0, "--max-tokens must be >= 1 (or 0 for the spec's)"),
        (args.temperature is not None and not args.temperature >= 0, "--temperature must be >= 0"),
    ]
    for bad, message in checks:
        if bad:
            p.error(message)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console.setup(args)
    try:
        stats = run(args)
    except (ConfigError, CorpusError, BackendError, RuntimeError) as e:
        console.log.error("error: %s", e)
        return 2
    print_stats(stats, args.out)
    with tracking.wandb_run(
        "generate",
        project=args.wandb_project,
        mode=args.wandb_mode,
        dir=args.out,
        tags=[os.path.basename(args.spec)],
        config=tracking.cli_config(args),
    ) as wandb:
        if wandb is not None:
            wandb.summary.update(tracking.scalars(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
