"""`python -m ecomtrain.sweep`: sweep task subsets x LoRA rank on a Ray cluster.

    python -m ecomtrain.sweep [--config configs/demo.yaml] [--output DIR] [a.b=c ...]
    python -m ecomtrain.sweep --resume DIR
    python -m ecomtrain.sweep --confirm DIR [--dry-run]

Joins the Ray cluster at --address or $RAY_ADDRESS (as under `ray job submit`) or
starts a local one, runs one trial per point of the search space, and writes
trials.csv, report.md/html with charts, the Tune experiment, every trial's checkpoints
and the W&B runs under DIR. DIR may be a cloud URI (s3://, gs://): checkpoints go
there directly and the report files are uploaded at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import ray

from ecomtrain import console
from ecomtrain.config import (
    CONFIG_FILE,
    OVERRIDES_HELP,
    Config,
    ConfigError,
    checked_config,
    config_yaml,
    load_config,
    to_dict,
    yaml_mapping,
)
from ecomtrain.connect import connect
from ecomtrain.data.corpus import check_files
from ecomtrain.data.mixture import targets
from ecomtrain.data.pipeline import check_names, train_counts
from ecomtrain.data.scan import corpus_scan, split_count
from ecomtrain.evaluate.held_out import base_model_scores
from ecomtrain.files import (
    OutputError,
    atomic_write,
    check_output,
    download_files,
    is_uri,
    located,
    read_text,
    write_text,
)
from ecomtrain.model import find_adapter
from ecomtrain.report.analysis import best
from ecomtrain.report.card import adapter_only
from ecomtrain.report.pages import BASELINE_FILE, console_table, write_report
from ecomtrain.report.planning import plan
from ecomtrain.report.proposal import (
    confirmable,
    confirmation_configs,
    confirmation_table,
    proposal_text,
    propose,
    write_confirmation,
    write_proposal,
)
from ecomtrain.report.trials import ReportError, load_trials, trial_rows, typed_rows, write_csv
from ecomtrain.report.wandb_summary import log_summary
from ecomtrain.tasks import OOD
from ecomtrain.train.driver import prepare
from tuning.run import concurrency, n_trials, run_sweep
from tuning.space import grid_points, subsets, sweep_mixtures, trial_config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ecomtrain.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML config (default: configs/demo.yaml)")
    parser.add_argument("--output", help="directory or URI for everything the sweep writes")
    parser.add_argument("--resume", metavar="DIR", help="continue the interrupted sweep in DIR")
    parser.add_argument(
        "--confirm",
        metavar="DIR",
        help="fit the mixture law on the finished sweep of mixtures in DIR, write "
        "DIR/proposal.json and train the proposed, best tried and stratified mixtures with "
        "fresh seeds, scored on the confirmation part (each rank's sweep in DIR/confirm-r<rank>)",
    )
    parser.add_argument("--address", help="Ray cluster (default: $RAY_ADDRESS, else a local one)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved search space and the data each trial reads; start nothing",
    )
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print what the sweep will be able to see (minimum detectable effects); start nothing",
    )
    parser.add_argument("--noise-from", metavar="DIR", help="--plan with an earlier sweep's noise")
    parser.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    console.add_arguments(parser)
    return parser.parse_args(argv)


SEAL = "# the config this sweep runs; --resume checks that it is unchanged: sha256 {}\n"


def sealed(cfg: Config) -> str:
    """The config a sweep saves (config.yaml), headed by the digest of the rest."""
    body = config_yaml(cfg)
    return SEAL.format(hashlib.sha256(body.encode()).hexdigest()) + body


def unsealed(text: str, where: str) -> dict:
    """The mapping of a saved config, refused when it was edited after the sweep began: a
    resumed sweep runs the experiment it began, so an edit would leave a config.yaml that
    no longer matches its results (a file without a digest is taken as it is)."""
    head, _, body = text.partition("\n")
    want = head.rpartition(" ")[2] if head.startswith(SEAL.split("sha256")[0]) else None
    if want and hashlib.sha256(body.encode()).hexdigest() != want:
        raise ConfigError(
            f"{where}: edited after the sweep began (it no longer matches the digest in its "
            "first line); --resume runs the experiment the sweep began: undo the edit, or "
            f"start a new sweep from it (--config {where} --output NEW_DIR)"
        )
    return yaml_mapping(text, where)


def dry_run(cfg: Config) -> str:
    """The sweep's trials, one line each, and the training records each would read (of its
    data.provenance; with its out-of-domain tasks when its data.ood_fraction is set)."""
    scan = corpus_scan(cfg.data, use_ray=False)
    held = sum(
        split_count(c, "eval", cfg.eval.provenance)
        for t, c in scan["tasks"].items()
        if scan["capabilities"][t] != OOD
    )
    lines = [
        f"corpus: {scan['records']} records in {len(scan['files'])} file(s), {scan['bad']} bad; "
        f"{held} held out (every trial is scored on them)"
    ]
    points = grid_points(cfg)
    if cfg.sweep.search == "mixture":
        lines.append(
            f"search: mixture, {cfg.sweep.num_samples} trial(s): these {len(points)} first, "
            "then each next mixture where the law's Gaussian process expects most"
        )
    elif cfg.sweep.search != "grid":
        lines.append(
            f"search: {cfg.sweep.search}, {cfg.sweep.num_samples} trial(s) drawn from these "
            f"{len(points)} points"
        )
    for i, point in enumerate(
        points * (cfg.sweep.num_samples if cfg.sweep.search == "grid" else 1)
    ):
        subset, data = point["subset"], trial_config(cfg, point).data
        counts = train_counts(scan, subset["tasks"], data)
        own = ("subset", "mixture", "rank", "alpha")
        swept = [f"{k}={v}" for k, v in point.items() if k not in own]
        head = [f"{i + 1:>4}", subset["id"], f"rank {point['rank']}", f"alpha {point['alpha']:g}"]
        lines.append(
            "  ".join(head + swept)
            + f"  | {subset['n_tasks']} tasks over {subset['n_capabilities']} capabilities "
            f"({', '.join(subset['capabilities'])}): {', '.join(subset['tasks'])} "
            f"| {sum(counts.values())} training records"
        )
        if "mixture" in point:
            lines.append(f"        mixture {mixture_line(point['mixture'], counts, data, scan)}")
    return "\n".join(lines)


def mixture_line(mixture: dict, counts: dict, data, scan: dict) -> str:
    """A trial's mixture as it will train: each task's share of an epoch."""
    planned = targets(counts, data, scan["capabilities"])
    ecommerce = {t: v for t, v in planned.items() if scan["capabilities"].get(t) != OOD}
    total = sum(ecommerce.values()) or 1.0
    shares = ", ".join(f"{t} {v / total:.3f}" for t, v in ecommerce.items())
    return f"{mixture['id']}: {shares}"


def setup(args: argparse.Namespace) -> tuple[Config, str]:
    """The sweep's config and its output location (fresh, or from a sweep to resume)."""
    if args.resume:
        if args.config or args.overrides:
            raise ConfigError("--resume takes the sweep's saved config; no --config/overrides")
        saved = f"{args.resume}/{CONFIG_FILE}"
        try:
            text = read_text(saved)
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(
                f"{saved}: cannot read ({e}); is {args.resume} a sweep's output?"
            ) from None
        return checked_config(unsealed(text, saved), saved), located(args.resume)
    cfg = load_config(args.config, args.overrides)
    check_files(cfg, args.config or "config")
    check_names(cfg, args.config or "config")  # tasks of the user's own are in the corpus
    subsets(cfg)  # reject subsets outside the task set before starting Ray
    if cfg.sweep.mixtures.active:  # and mixtures the law cannot fit, unknown names
        sweep_mixtures(cfg, args.config or "config")
    if cfg.sweep.seeds and cfg.sweep.search in ("optuna", "mixture"):
        raise ConfigError(
            f"sweep.seeds: replicates need sweep.search grid or random, not {cfg.sweep.search}"
        )
    return cfg, located(args.output or cfg.sweep.output)


def score_baseline(cfg: Config, model_path: str, rows: list[dict], path: Path) -> None:
    """The untrained base model scored on the trials' held-out sample (baseline.jsonl)."""
    task = base_model_scores.options(num_gpus=1 if cfg.train.use_gpu else 0)
    metrics, entries = ray.get(task.remote(cfg, model_path, rows))
    atomic_write(path, "".join(json.dumps(e) + "\n" for e in entries))
    console.log.info(
        "baseline: the untrained base model scores %.4f (SE %.4f) on the held-out sample",
        metrics["score"],
        metrics["score_se"],
    )


def best_adapter(rows: list[dict], local: Path) -> Path | None:
    """The best trial's adapter, alone with its model card, in `best-adapter/` (ready for
    `PeftModel.from_pretrained` and `push_to_hub`); from a checkpoint in a bucket, the files at
    its top (adapter, tokenizer, trial) are copied here first, and the output's publishing
    then puts `best-adapter/` beside the report."""
    top = best(rows)
    checkpoint = (top or {}).get("checkpoint") or ""
    if not checkpoint:
        return None
    with tempfile.TemporaryDirectory(prefix="ecomtrain-best-") as tmp:
        if is_uri(checkpoint):  # the adapter's files only, not the DeepSpeed state below
            checkpoint = str(download_files(checkpoint, Path(tmp, "checkpoint")))
        if not Path(checkpoint).is_dir():
            return None
        out = adapter_only(find_adapter(checkpoint), local / "best-adapter")
    console.log.info("best adapter: %s's (score %.4f)", top["trial"], top["score"])
    return out


def link_logs(logs: str, local: Path) -> None:
    """`ray-logs` in the output directory: the workers' own output, kept out of the console."""
    if not logs or not os.path.isdir(logs):
        return
    link = local / "ray-logs"
    if link.is_symlink() or not link.exists():
        link.unlink(missing_ok=True)
        link.symlink_to(logs)
        console.log.info("worker logs (Ray, DeepSpeed, W&B): %s -> %s", link, logs)


def publish(local_dir: Path, output: str) -> None:
    """Copy the report files to a cloud output (checkpoints are already there); links (the
    `ray-logs` one to the Ray session's logs) stay local: rglob does not follow them."""
    import pyarrow.fs

    for path in sorted(local_dir.rglob("*")):
        if path.is_file() and not path.is_symlink():
            rel = path.relative_to(local_dir).as_posix()
            pyarrow.fs.copy_files(str(path), f"{output}/{rel}")


def confirm(args: argparse.Namespace) -> int:
    """`--confirm DIR`: the law's proposals (proposal.json) and the sweeps that confirm them,
    printed (with --dry-run) or run, then their mixtures side by side."""
    if args.config or args.overrides or args.resume:
        raise ConfigError("--confirm takes the sweep's saved config; no --config/overrides")
    folder = located(args.confirm.rstrip("/"))
    try:
        cfg, law = propose(folder)
    except ReportError as e:
        raise ConfigError(str(e)) from None
    path = write_proposal(folder, cfg, law)
    print(proposal_text(law))
    print(f"proposal: {path}")
    if not law.ok:
        return 1
    if why := confirmable(cfg):
        print(why)
        return 1
    sweeps = confirmation_configs(cfg, law, folder)
    for c in sweeps.values():
        atomic_write(f"{c.sweep.output}.yaml", config_yaml(c))
        print(f"\nsweep {c.sweep.name!r} ({c.sweep.output}.yaml):\n{dry_run(c)}")
    if args.dry_run:
        return 0
    codes, rows = [], []
    for c in sweeps.values():
        codes.append(run_and_report(args, c, c.sweep.output, Path(c.sweep.output)))
        rows += load_trials(Path(c.sweep.output) / "trials.csv")
    table, figures = confirmation_table(rows)
    print(f"\nconfirmation of {folder}:\n{table}")
    print(f"confirmation: {write_confirmation(folder, figures)}")
    return max(codes)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console.setup(args)
    if args.confirm:
        try:
            return confirm(args)
        except (ConfigError, KeyError, ValueError, FileNotFoundError) as e:
            console.log.error("error: %s", e)
            return 2
    try:
        cfg, output = setup(args)
        if args.dry_run:
            print(dry_run(cfg))
            return 0
        if args.plan:
            print(plan(cfg, grid_points(cfg), args.noise_from))
            return 0
        check_output(output, "--output", folder=True)
    except (ConfigError, OutputError, KeyError, ValueError, FileNotFoundError) as e:
        console.log.error("error: %s", e)
        return 2
    if not is_uri(output):
        return run_and_report(args, cfg, output, Path(output))
    # Written locally, then published to the bucket; the local copy goes when the sweep ends.
    local = Path(tempfile.mkdtemp(prefix="ecomtrain-sweep-"))
    try:
        return run_and_report(args, cfg, output, local)
    finally:
        shutil.rmtree(local, ignore_errors=True)


def run_and_report(args: argparse.Namespace, cfg: Config, output: str, local: Path) -> int:
    """Run the sweep, write trials.csv, the report and the W&B summary into `local` (the
    output folder, or a staging folder published to a bucket); returns the exit code."""
    local.mkdir(parents=True, exist_ok=True)
    saved = sealed(cfg)
    atomic_write(local / CONFIG_FILE, saved)
    if is_uri(output):  # there from the start, so `--resume URI` works after a driver is lost
        write_text(f"{output}/{CONFIG_FILE}", saved)

    logs = connect(args.address, log_to_driver=console.verbose())
    link_logs(logs, local)
    t0 = time.time()
    # the model built, the corpus scanned and the held-out sample drawn once, for every trial
    prepared = prepare(cfg)
    # A resumed sweep keeps its baseline; a fresh one scores its own, even where an older
    # sweep (another corpus, another held-out sample) left one in the same folder.
    if not (args.resume and (local / BASELINE_FILE).exists()):
        score_baseline(cfg, prepared.model_path, prepared.held_out, local / BASELINE_FILE)
    packs = f" ({cfg.sweep.pack} to a run: sweep.pack)" if cfg.sweep.pack > 1 else ""
    console.log.info(
        "sweep %r: %d trials, %d at a time%s; a line per trial per report follows",
        cfg.sweep.name,
        n_trials(cfg),
        concurrency(cfg) * cfg.sweep.pack,
        packs,
    )
    try:
        results = run_sweep(cfg, output, str(local), resume=bool(args.resume), prepared=prepared)
    except Exception as e:  # the Tune loop itself failed (not a trial): exit with its error
        console.log.error("sweep %r failed: %s: %s", cfg.sweep.name, type(e).__name__, e)
        ray.shutdown()
        return 1
    raw = trial_rows(results, cfg.sweep.metric, output)
    write_csv(raw, local / "trials.csv")
    rows = typed_rows(raw)  # as trials.csv reads back
    print(console_table(rows))
    report = write_report(local, rows)
    adapter = best_adapter(rows, local)
    log_summary(
        rows,
        cfg.wandb.project,
        cfg.sweep.name,
        cfg.wandb.mode,
        local,
        cfg.wandb.entity or None,
        config=to_dict(cfg),
        adapter=adapter,
    )
    if is_uri(output):
        publish(local, output)
    print(f"\nsweep {cfg.sweep.name!r}: {len(results)} trials in {time.time() - t0:.0f} s")
    print(f"results: {output}/trials.csv  report: {output}/{report.name} (and .html)")
    if adapter:
        print(f"best adapter: {output}/{adapter.name}")
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
