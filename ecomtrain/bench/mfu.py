"""`mfu` runs ecomtrain's training step (packed inputs, DeepSpeed, LoRA) on one GPU on a
random-initialised model of a real model's shape, fed packed rows of random tokens whose
record lengths spread like EC-Guide's, and prints tokens/s, model FLOPs utilisation and
peak memory. `mfu` counts the FLOPs a LoRA step needs: the forward pass (2 x non-embedding
parameters per token, plus causal attention over each record's own length) and the
gradient with respect to activations (as much again); the frozen weights get no weight
gradients, so the usual 6 x N per token (PaLM) would overstate it by half. The vocabulary
projection is counted at the labelled positions only, where ecomtrain computes it. `hfu`
adds the forward pass recomputed under gradient checkpointing (hardware FLOPs).
`train.compile=true` compiles the model as training does (torch.compile). `--matrix`
runs every combination of attention kernel (sdpa, flash-attention 2's varlen kernel where
flash-attn is installed), gradient checkpointing on and off, and compiled or not, each in a
process of its own (a failure or out-of-memory is that row's result), and names the fastest
whose peak memory fits an 80 GB GPU, with its settings as config overrides (`preset`);
`--matrix attn,checkpointing` varies only those (the rest as configured, `train.compile`
included), for a GPU with little time. `--pack K` times a pack's step (sweep.pack): K
adapters over one copy of the base, each stepping in turn, so tokens/s and peak memory
compare with K = 1's. Each row also gives the float32 logits of a micro-batch's answer tokens (`answer_logits_gib`): the most a fused
or chunked cross-entropy could save, since ecomtrain computes logits at no other token.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from transformers import LlamaConfig, LlamaForCausalLM

from ecomtrain.bench.models import SHAPES
from ecomtrain.config import Config, ConfigError
from ecomtrain.connect import free_port
from ecomtrain.data.packing import IGNORE, layout
from ecomtrain.model import DTYPES, training_model
from ecomtrain.train.engine import initialize
from ecomtrain.train.inputs import model_inputs, to_device, training_attention
from ecomtrain.train.loop import Micro, optimizer_step
from ecomtrain.train.pack import member_trees

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}


def synthetic_rows(n_rows: int, max_len: int, vocab: int, seed: int) -> dict:
    """Packed rows of random tokens: record lengths log-uniform in [48, max_len] (EC-Guide
    spans 40 to 2,000+ tokens), answers 5-50 % of a record."""
    rng = np.random.default_rng(seed)
    seqs = []
    while sum(len(ids) for ids, _ in seqs) < 1.2 * n_rows * max_len:
        n = int(np.exp(rng.uniform(np.log(48), np.log(max_len))))
        ids = rng.integers(0, vocab, n).tolist()
        answer = max(1, int(n * rng.uniform(0.05, 0.5)))
        seqs.append((ids, [IGNORE] * (n - answer) + ids[n - answer :]))
    rows = layout(seqs, max_len, pad=0)
    return {k: torch.from_numpy(rows[k][:n_rows]) for k in ("input_ids", "labels", "segment_ids")}


def forward_flops(config, inputs: dict) -> tuple[float, float]:
    """(dense + attention, vocabulary projection) forward FLOPs of one packed batch."""
    h, layers = config.hidden_size, config.num_hidden_layers
    kv = config.num_key_value_heads * h // config.num_attention_heads
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * config.intermediate_size
    positions = inputs["position_ids"][0]
    lengths = positions[torch.cat([positions[1:] == 0, torch.tensor([True])])] + 1
    attention = layers * 2 * h * float((lengths.double() ** 2).sum())  # QK^T and AV, causal
    dense = 2 * layers * per_layer * positions.numel()
    head = 2 * h * config.vocab_size * len(inputs["targets"])
    return dense + attention, head


def mfu(
    cfg: Config,
    shape: str,
    steps: int = 10,
    warmup: int = 3,
    device: str = "cuda",
    pack: int = 1,
) -> dict:
    """Tokens/s, MFU and peak memory of ecomtrain's step on one GPU (see the module doc),
    the model compiled as in training when `train.compile`; with `pack` > 1, of a pack's
    step (ecomtrain.train.pack): that many adapters over one copy of the base, each taking
    its optimizer step on the batch in turn (tokens and FLOPs counted for every member).

    device="cpu" runs the same code without the figures only a GPU has (for tests)."""
    gpu = device == "cuda"
    if gpu and not torch.cuda.is_available():
        raise SystemExit("bench mfu: needs a CUDA GPU")
    if not dist.is_initialized():
        for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": free_port(29533)}.items():
            os.environ.setdefault(key, str(value))
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
        dist.init_process_group("nccl" if gpu else "gloo", rank=0, world_size=1)
    sync = torch.cuda.synchronize if gpu else lambda: None
    attn = cfg.model.attn_implementation
    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=cfg.data.max_seq_len)
    torch.manual_seed(cfg.train.seed)
    with torch.device(device):
        base = LlamaForCausalLM._from_config(
            config, dtype=DTYPES[cfg.train.precision], attn_implementation=training_attention(attn)
        )
    train = dataclasses.replace(cfg.train, grad_accum=1)  # one micro-batch per timed step
    engines = []
    for tree in member_trees(base, pack) if pack > 1 else [base]:
        model = training_model(tree, cfg.lora, cfg.train.gradient_checkpointing)
        engines.append(initialize(model, train)[0])
    rows = cfg.train.micro_batch_size
    batches = [
        model_inputs(synthetic_rows(rows, cfg.data.max_seq_len, config.vocab_size, i), attn)
        for i in range(warmup + steps)
    ]
    for i, batch in enumerate(batches):
        if i == warmup:
            sync()
            if gpu:
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
        for engine in engines:
            loss, _ = optimizer_step(engine, [Micro(to_device(batch, device))], world_size=1)
    sync()
    seconds = time.perf_counter() - t0
    timed = batches[warmup:] * pack  # every member trains on every timed batch
    body, head = (sum(x) for x in zip(*(forward_flops(config, b) for b in timed), strict=True))
    name = torch.cuda.get_device_name() if gpu else device
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), float("nan")) * 1e12
    return {
        "device": name,
        "shape": shape,
        "pack": pack,
        "attn_implementation": attn,
        "gradient_checkpointing": cfg.train.gradient_checkpointing,
        "compile": cfg.train.compile,
        "base_params": sum(p.numel() for p in model.parameters() if not p.requires_grad),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "tokens_per_s": sum(b["input_ids"].numel() for b in timed) / seconds,
        "supervised_tokens_per_s": sum(len(b["targets"]) for b in timed) / seconds,
        "step_s": seconds / steps,  # every member's step
        "model_tflops_per_s": 2 * (body + head) / seconds / 1e12,
        "mfu": 2 * (body + head) / seconds / peak,  # forward + activation gradients
        "hfu": (3 if cfg.train.gradient_checkpointing else 2) * (body + head) / seconds / peak,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if gpu else float("nan"),
        # the float32 logits of a micro-batch's answer tokens: what a fused or chunked
        # cross-entropy would save (ecomtrain computes no logits at other tokens)
        "answer_logits_gib": max(len(b["targets"]) for b in timed) * config.vocab_size * 4 / 2**30,
        "loss": loss,
    }


MFU_DIMENSIONS = {  # what `mfu --matrix` varies, and the values each takes
    "attn": ("sdpa", "flash_attention_2"),
    "checkpointing": (True, False),
    "compile": (False, True),
}


def mfu_variants(cfg: Config, vary: list[str]) -> list[tuple]:
    """(attention kernel, gradient checkpointing, torch.compile) of each matrix row: every
    value of the dimensions in `vary`, the configured one of the others."""
    fixed = {
        "attn": (cfg.model.attn_implementation,),
        "checkpointing": (cfg.train.gradient_checkpointing,),
        "compile": (cfg.train.compile,),
    }
    unknown = sorted(set(vary) - set(MFU_DIMENSIONS))
    if unknown:
        raise ConfigError(f"--matrix: unknown {unknown}; choose from {list(MFU_DIMENSIONS)}")
    values = [MFU_DIMENSIONS[d] if d in vary else fixed[d] for d in MFU_DIMENSIONS]
    return list(itertools.product(*values))


MFU_MEMORY_GIB = 80  # the preset's step must fit an 80 GB GPU
MFU_KEPT = ("tokens_per_s", "step_s", "mfu", "hfu", "peak_memory_gib", "answer_logits_gib")


def has_flash_attn() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def variant_overrides(attn: str, checkpointing: bool, compiled: bool) -> list[str]:
    """The config overrides of one matrix row: what its process runs and a preset keeps."""
    return [
        f"model.attn_implementation={attn}",
        f"train.gradient_checkpointing={str(checkpointing).lower()}",
        f"train.compile={str(compiled).lower()}",
    ]


def mfu_matrix(
    config: str | None,
    overrides: list[str],
    shape: str,
    steps: int,
    device: str,
    variants: list[tuple],
) -> dict:
    """`mfu` for each of `variants`, each in a process of its own (its own GPU memory,
    compile caches and failures), the fastest that fits MFU_MEMORY_GIB, and its settings as
    the config lines of a preset."""
    rows = []
    for attn, checkpointing, compiled in variants:
        row: dict = {"attn": attn, "checkpointing": checkpointing, "compile": compiled}
        if attn == "flash_attention_2" and not has_flash_attn():
            rows.append(row | {"result": "not run: flash-attn is not installed"})
            continue
        with tempfile.TemporaryDirectory(prefix="ecomtrain-mfu-") as tmp:
            out = Path(tmp, "mfu.json")
            command = [sys.executable, "-m", "ecomtrain.bench", "mfu", "--shape", shape]
            command += ["--steps", str(steps), "--device", device, "--json", str(out), "-q"]
            command += ["--config", config] if config else []
            command += [*overrides, *variant_overrides(attn, checkpointing, compiled)]
            group = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE")
            env = {k: v for k, v in os.environ.items() if k not in group}  # a group of its own
            proc = subprocess.run(command, capture_output=True, text=True, env=env)
            if proc.returncode == 0:
                figures = json.loads(out.read_text())
                row |= {"result": "ok"} | {k: round(figures[k], 4) for k in MFU_KEPT}
            else:
                lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
                row["result"] = f"failed (exit {proc.returncode}): {lines[-1][:300]}"
        print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)  # as each ends
        rows.append(row)
    fitting = [r for r in rows if r["result"] == "ok" and not r["peak_memory_gib"] > MFU_MEMORY_GIB]
    best = max(fitting, key=lambda r: r["tokens_per_s"], default=None)
    preset = best and " ".join(
        variant_overrides(best["attn"], best["checkpointing"], best["compile"])
    )
    return {
        "shape": shape,
        "device": device,
        "rows": rows,
        "fastest_fitting": best,
        "preset": preset,
    }


SPACE: list[str] = []


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shape", default="1b", help=f"the model's shape: {', '.join(SHAPES)}")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument(
        "--matrix",
        nargs="?",
        const=",".join(MFU_DIMENSIONS),
        metavar="DIMS",
        help="a row per attention kernel x gradient checkpointing x torch.compile (or only "
        "the DIMS given, e.g. attn,checkpointing; the others as configured)",
    )
    parser.add_argument(
        "--pack",
        type=int,
        default=1,
        help="adapters over one copy of the base, each stepping in turn (sweep.pack)",
    )
    parser.add_argument(
        "--device",
        choices=["cuda", "cpu"],
        default="cuda",
        help="cpu: the same step, to check it (no MFU without a GPU's peak)",
    )


def run(args: argparse.Namespace, config) -> dict:
    if args.shape not in SHAPES:
        raise ConfigError(
            f"mfu measures a GPU on a real model's shape: --shape {', '.join(SHAPES)}, "
            f"not {args.shape!r}"
        )
    if args.matrix and "=" in args.matrix:  # `--matrix a.b=c`: an override, not dimensions
        args.overrides.append(args.matrix)
        args.matrix = ",".join(MFU_DIMENSIONS)
    if args.pack < 1:
        raise ConfigError(f"--pack {args.pack}: adapters over the base, 1 or more")
    if not args.matrix:
        return mfu(config(), args.shape, args.steps, device=args.device, pack=args.pack)
    if args.pack > 1:
        raise ConfigError("--pack measures one configuration; not with --matrix")
    variants = mfu_variants(config(), args.matrix.split(","))
    return mfu_matrix(args.config, args.overrides, args.shape, args.steps, args.device, variants)
