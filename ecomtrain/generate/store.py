"""The output folder of a generation run: records, rejects and the ledger, crash-safe.

Every outcome is one JSON line appended and fsynced to records.jsonl or rejects.jsonl
first, then to ledger.jsonl. A crash can only leave a truncated last line (dropped and
redone on restart) or an outcome without its ledger line (the ledger is repaired from the
outputs), so a rerun neither loses nor duplicates work. A lock file keeps two runs from
writing the same folder at once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path

from ecomtrain.data.records import CorpusError

log = logging.getLogger(__name__)

RECORDS, REJECTS, LEDGER, LOCK = "records.jsonl", "rejects.jsonl", "ledger.jsonl", ".lock"


def read_jsonl(path: Path) -> list[dict]:
    """Objects of a JSON Lines file written by this module; a bad LAST line is cut off.

    Only the last line can be partial (appends are whole lines, fsynced in order), so a
    bad line anywhere else is corruption and an error naming the file and line.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    out, good_end = [], 0
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            good_end += len(line) + 1
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if lineno < len(lines) - (1 if data.endswith(b"\n") else 0):
                raise CorpusError(f"{path}:{lineno}: json: {e}") from None
            log.warning(f"{path}:{lineno}: dropping a truncated last line")
            with path.open("r+b") as f:
                f.truncate(good_end)
                os.fsync(f.fileno())
            break
        if not isinstance(obj, dict) or "key" not in _flat(obj):
            raise CorpusError(f"{path}:{lineno}: key: missing (not a generation output file?)")
        out.append(obj)
        good_end += len(line) + 1
    return out


def _flat(obj: dict) -> dict:
    return {**obj, **(obj.get("provenance") or {})}


def key_of(obj: dict) -> str:
    """The work key of a record (in its provenance) or of a reject/ledger line."""
    return _flat(obj)["key"]


class Store:
    """Appends outcomes to the three files of `out_dir` and knows which keys are finished."""

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = (self.dir / LOCK).open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"{self.dir}: another generation run is writing here") from None
        self.records = read_jsonl(self.dir / RECORDS)
        self.rejects = read_jsonl(self.dir / REJECTS)
        ledger = {key_of(o): o["outcome"] for o in read_jsonl(self.dir / LEDGER)}
        self.finished: dict[str, str] = {}
        for r in self.records:
            self.finished[key_of(r)] = "written"
        for r in self.rejects:
            if r.get("final", True):
                self.finished[key_of(r)] = r["kind"]
        self._files = {
            name: (self.dir / name).open("a", encoding="utf-8")
            for name in (RECORDS, REJECTS, LEDGER)
        }
        for key, outcome in self.finished.items():
            if key not in ledger:  # the crash fell between an output line and its ledger line
                self._append(LEDGER, {"key": key, "outcome": outcome})

    def write_record(self, record: dict) -> None:
        self._append(RECORDS, record)
        self.records.append(record)
        self._finish(key_of(record), "written")

    def write_reject(self, entry: dict) -> None:
        """entry: key, kind ("rejected" | "duplicate"), reason, detail, final (else retried)."""
        self._append(REJECTS, entry)
        self.rejects.append(entry)
        if entry["final"]:
            self._finish(entry["key"], entry["kind"])

    def _finish(self, key: str, outcome: str) -> None:
        self._append(LEDGER, {"key": key, "outcome": outcome})
        self.finished[key] = outcome

    def _append(self, name: str, obj: dict) -> None:
        f = self._files[name]
        f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._lock.close()
