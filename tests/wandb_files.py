"""What an offline W&B run folder holds, read back for tests: the run record (job_type, tags,
group, config) from its `run-*.wandb` log, and the keys of its logged history.

The log is LevelDB's record format: a 7-byte file header, then 32 KiB blocks of records,
each with a 7-byte header (checksum, length, type: full, first, middle or last piece).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK, HEADER = 32768, 7
FULL, LAST = 1, 4


def records(path: Path):
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B run log"
    pos, pieces = 7, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if left < HEADER or (length == 0 and kind == 0):  # the block's zero padding
            pos += left
            continue
        pieces += data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            pieces = b""
            yield record


def set_item(config: dict, update) -> None:
    """A config update into `config`: at its key, or at its nested key (W&B files a custom
    chart's settings under _wandb.visualize.<name> that way, with an empty `key`)."""
    keys = list(update.nested_key) or [update.key]
    for key in keys[:-1]:
        config = config.setdefault(key, {})
    config[keys[-1]] = json.loads(update.value_json)


def read_run(folder: Path) -> dict:
    """job_type, tags, group, config and summary (decoded), the history keys and the
    artifact names of one offline run."""
    (log,) = folder.glob("run-*.wandb")
    out = {"config": {}, "history": set(), "summary": {}, "artifacts": []}
    for record in records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out |= {"job_type": run.job_type, "tags": list(run.tags), "group": run.run_group}
            for update in run.config.update:
                set_item(out["config"], update)
        elif kind == "config":
            for update in record.config.update:
                set_item(out["config"], update)
        elif kind == "history":
            out["history"] |= {
                item.key or "/".join(item.nested_key) for item in record.history.item
            }
        elif kind == "summary":
            out["summary"] |= {u.key: json.loads(u.value_json) for u in record.summary.update}
        elif kind == "artifact":
            out["artifacts"].append(record.artifact.name)
    return out


def runs(wandb_dir: Path) -> list[dict]:
    return [read_run(f) | {"folder": f} for f in sorted(wandb_dir.glob("offline-run-*"))]
