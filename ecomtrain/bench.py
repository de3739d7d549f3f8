"""Benchmarks that print figures and ratios (not tests: timings flake on busy machines).

    python -m ecomtrain.bench asha [--config FILE] [a.b=c ...]
    python -m ecomtrain.bench throughput [--config FILE] [a.b=c ...]

`asha` runs the sweep twice on the same space, first the full grid, then with ASHA, one
trial at a time, and prints how many trial-steps each used and how many ASHA needed until
it had trained the grid's best (subset, rank) to the end.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile

from ecomtrain.config import Config, load_config
from ecomtrain.train import connect


def trial_steps(results) -> list[tuple[str, int, float]]:
    """(subset-rank key, steps trained, final score) per trial, in launch order."""
    rows = []
    for r in results:
        cfg, m = r.config, r.metrics or {}
        index = int(r.path.rsplit("_", 1)[-1])  # Tune numbers trials in launch order
        key = f"{cfg['subset']['id']}-r{cfg['rank']}"
        rows.append((index, key, int(m.get("step", 0)), float(m.get("score", float("nan")))))
    return [row[1:] for row in sorted(rows)]


def asha_payoff(cfg: Config) -> dict:
    """Trial-steps of the grid vs ASHA until ASHA has fully trained the grid's best point."""
    from tuning.run import run_sweep

    out = tempfile.mkdtemp(prefix="ecomtrain-bench-")
    grid_cfg, asha_cfg = copy.deepcopy(cfg), copy.deepcopy(cfg)
    for c, name in ((grid_cfg, "grid"), (asha_cfg, "asha")):
        c.sweep.name, c.sweep.max_concurrent_trials, c.wandb.mode = name, 1, "disabled"
    grid_cfg.sweep.scheduler, asha_cfg.sweep.scheduler = "fifo", "asha"
    grid = trial_steps(run_sweep(grid_cfg, out, out))
    asha = trial_steps(run_sweep(asha_cfg, out, out))
    best = max(grid, key=lambda row: row[2])[0]
    used, found = 0, False
    for key, steps, _ in asha:
        used += steps
        if key == best and steps >= cfg.train.max_steps:
            found = True
            break
    grid_total = sum(steps for _, steps, _ in grid)
    return {
        "grid_best": best,
        "grid_trial_steps": grid_total,
        "asha_trial_steps_total": sum(steps for _, steps, _ in asha),
        "asha_found_best": found,
        "asha_trial_steps_until_best": used if found else None,
        "ratio": used / grid_total if found else None,
        "asha_trials": asha,
    }


def hf_trainer_tokens_per_s(cfg: Config, model_path: str, records: list[dict]) -> float:
    """Supervised tokens/s of a plain HF Trainer + PEFT on padded batches (same model, data)."""
    import time

    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from ecomtrain.corpus import render_answer
    from ecomtrain.data import encode
    from ecomtrain.model import add_lora, load_model, load_tokenizer

    tok = load_tokenizer(model_path)
    rows = []
    for r in records:
        ids, labels = encode(tok, r["input_field"], render_answer(r), cfg.eval.prompt_prefix)
        rows.append({"input_ids": ids, "labels": labels})
    steps = cfg.train.max_steps
    batch = cfg.train.micro_batch_size * cfg.train.num_workers
    torch.set_num_threads(cfg.train.num_workers)
    model = add_lora(load_model(model_path), cfg.lora)
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="ecomtrain-hf-"),
        per_device_train_batch_size=batch,
        max_steps=steps,
        learning_rate=cfg.train.lr,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        dataloader_num_workers=0,
        seed=0,
    )
    collator = DataCollatorForSeq2Seq(tok, padding="longest", label_pad_token_id=-100)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collator)
    t0 = time.time()
    trainer.train()
    seconds = time.time() - t0
    per_record = sum(sum(1 for x in r["labels"] if x != -100) for r in rows) / len(rows)
    return per_record * batch * steps / seconds


def throughput(cfg: Config) -> dict:
    """Supervised tokens/s: ecomtrain's loop (packed, DeepSpeed, Ray) vs HF Trainer (padded)."""
    from ecomtrain.corpus import load_corpus, resolve_corpus
    from ecomtrain.model import resolve_model
    from ecomtrain.tasks import CAPABILITIES
    from ecomtrain.train import fit, trial_meta

    model_path = resolve_model(cfg.model)
    cfg.train.eval_every, cfg.train.log_every = 0, max(1, cfg.train.max_steps // 5)
    tasks = cfg.data.tasks or list(CAPABILITIES)
    result = fit(cfg, trial_meta("bench", "all", tasks, cfg), tempfile.mkdtemp())
    ours = result.metrics["tokens_per_s"]
    records = load_corpus(resolve_corpus(cfg.data.corpus))
    theirs = hf_trainer_tokens_per_s(cfg, model_path, records)
    return {
        "ecomtrain_tokens_per_s": ours,  # last reporting window: steady state
        "hf_trainer_tokens_per_s": theirs,
        "ratio": ours / theirs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ecomtrain.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("which", choices=["asha", "throughput"])
    parser.add_argument("--config", help="YAML config (default: configs/demo.yaml)")
    parser.add_argument("overrides", nargs="*", help="a.b=c config overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    connect()
    figures = asha_payoff(cfg) if args.which == "asha" else throughput(cfg)
    for key, value in figures.items():
        print(f"{key:>26}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
