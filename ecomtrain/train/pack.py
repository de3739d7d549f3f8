"""Trials that share the base model: several adapters trained in one run.

A sweep is many LoRA adapters on one frozen base. With `sweep.pack` = K, up to K trials that
agree on `pack_key` train in one Ray Train run (tuning.pack forms the packs): each worker
loads the base once, and every member gets a module tree of its own whose frozen parameters
*are* the base's Parameter objects (`member_trees`: deep copies that take the base's
parameters as they are, made before any adapter is added), with its own LoRA, seeded as it
would be alone, and its own DeepSpeed engine: its own optimizer state, gradient clipping,
learning-rate schedule and checkpoint state. The loop (ecomtrain.train.loop) trains the
members one after the other on their own data streams, so each member runs the operations
it would run alone, on the same tensors: its loss curve and adapter are those of its solo
run, bit for bit on CPU (tests/test_pack.py). ZeRO-3 packs too: its partitioned base
parameters are shared as they are, and each engine gathers them for its own forward pass.

A pack's checkpoint holds one folder per member, named by its trial, laid out as a single
run's checkpoint, and PACK_FILE: the members and those that left the pack (stopped by the
sweep's scheduler, or failed), which a resumed run does not train again.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from pathlib import Path

from ecomtrain.config import Config, to_dict
from ecomtrain.train.trial import STATE_FILE

PACK_FILE = "ecomtrain_pack.json"  # a pack checkpoint's members and leavers
# What each member of a pack keeps its own: its adapter (lora), its data (mixture, seed,
# shares), its evaluation, and its optimizer's settings. Everything else of `model` and
# `train` must be equal across a pack (`pack_key`); the sweep and W&B sections are the sweep's.
MEMBER_TRAIN_KEYS = (
    "seed",
    "lr",
    "warmup_steps",
    "weight_decay",
    "grad_clip",
    "micro_batch_size",
    "grad_accum",
)
MEMBER_SECTIONS = ("lora", "data", "eval", "sweep", "wandb")


def pack_key(cfg: Config) -> str:
    """What trials must share to train in one run: the model section (base, attention
    kernel, quantisation, prompt format) and every train key but the members' own
    (MEMBER_TRAIN_KEYS): workers and their resources, ZeRO stage, precision, offload,
    gradient checkpointing, compile, steps, evaluation and log cadence, checkpoints kept,
    failures allowed. Trials with different keys are packed apart."""
    full = to_dict(cfg)
    shared = {k: v for k, v in full.items() if k not in MEMBER_SECTIONS}
    shared["train"] = {k: v for k, v in full["train"].items() if k not in MEMBER_TRAIN_KEYS}
    return json.dumps(shared, sort_keys=True, default=str)


def member_trees(base, n: int) -> list:
    """`n` module trees over `base`'s parameters: each a deep copy of the base whose
    Parameter objects (frozen weights, tied ones, quantised or ZeRO-3-partitioned ones) are
    the base's own, so the base is in memory once; buffers and modules are copied. Made
    before any adapter is added, so each tree is the base as loaded."""
    shared = {id(p): p for p in base.parameters()}
    return [copy.deepcopy(base, memo=dict(shared)) for _ in range(n)]


@dataclasses.dataclass
class MemberRun:
    """A member's view of the run for `loop.restore`: the rank, the world size and the
    member's folder of the checkpoint it starts from (None: a fresh start)."""

    rank: int
    world_size: int
    folder: str | None = None

    def checkpoint(self):
        return None if self.folder is None else contextlib.nullcontext(self.folder)


def read_pack_file(root: str | None) -> dict:
    """A pack checkpoint's PACK_FILE ({"members": [...], "left": {name: why}}), or an empty
    one without a checkpoint."""
    path = Path(root, PACK_FILE) if root else None
    if path is None or not path.is_file():
        return {"members": [], "left": {}}
    return json.loads(path.read_text())


def write_pack_file(root: Path, members: list[str], left: dict[str, str]) -> None:
    (root / PACK_FILE).write_text(json.dumps({"members": members, "left": left}, indent=1))


def member_checkpoints(storage_path: str, names: list[str]) -> dict[str, str]:
    """Each named member's latest checkpoint folder among the pack runs in `storage_path`
    (a folder or a URI; runs `pack-*`, their `checkpoint_*` folders): where a member of a
    resumed sweep starts when its pack formed anew. The latest is the one whose state has the
    highest step; members with none are left out."""
    import pyarrow.fs

    if "://" in storage_path:
        fs, root = pyarrow.fs.FileSystem.from_uri(storage_path)
        scheme = storage_path.split("://", 1)[0] + "://"
    else:
        fs, root, scheme = pyarrow.fs.LocalFileSystem(), str(Path(storage_path).resolve()), ""

    def folders(path: str, prefix: str) -> list[str]:
        selector = pyarrow.fs.FileSelector(path, allow_not_found=True)
        return [
            i.path
            for i in fs.get_file_info(selector)
            if i.type == pyarrow.fs.FileType.Directory and i.base_name.startswith(prefix)
        ]

    best: dict[str, tuple[int, str]] = {}
    wanted = set(names)
    for run in folders(root, "pack-"):
        for checkpoint in folders(run, "checkpoint_"):
            for member in folders(checkpoint, ""):
                name = member.rsplit("/", 1)[-1]
                state = f"{member}/{STATE_FILE}"
                if name not in wanted or fs.get_file_info(state).type != pyarrow.fs.FileType.File:
                    continue
                with fs.open_input_stream(state) as f:
                    step = int(json.loads(f.read().decode())["step"])
                if step > best.get(name, (-1, ""))[0]:
                    best[name] = (step, scheme + member)
    return {name: path for name, (_, path) in best.items()}
