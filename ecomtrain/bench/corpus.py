"""`corpus` writes a generated corpus of `--records` JSON Lines records in `--files` files
(demo records, each made unique by a number and lengthened by `--words` words of a product
description; in each file one bad record, without its answer) and runs the data path on it
stage by stage, on a local Ray instance of this machine's cores (`--object-store-mib` caps
its object store, so the tokenised mixture spills to disk): the scan (parse, validate,
split, count; bad records found against bad records written), tokenising, mixing and dealing
the shares (every held-out split and training record as a trial sees them), then one process
per rank that reads its share and packs one epoch of it, checking that every record is
packed as often as the mixture says (once, for this corpus' even mixture). Per stage it
prints the seconds, records/s per core and the peak resident memory of the driver, of the
largest Ray worker and of all processes together, and per rank the bytes its share holds per
record and its private and mapped shared (object-store) memory before and after it reads its
share.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import ray
import ray.train

from ecomtrain.base_model import resolve_model
from ecomtrain.bench.measure import Sampler
from ecomtrain.config import Config
from ecomtrain.data.demo import demo_records
from ecomtrain.data.pipeline import check_scan, train_dataset
from ecomtrain.data.scan import scan_corpus
from ecomtrain.data.share import StreamStats, epoch_order, read_share, stream

log = logging.getLogger(__name__)


SPACE = [
    "data.corpus=[]",  # the generated files are the corpus
    "data.max_bad_fraction=0.01",  # the bench writes a bad record into every file
    "data.max_seq_len=256",
    "data.eval_fraction=0.01",
]


def _write_corpus_file(path: str, first: int, count: int, templates: list[str]) -> int:
    """`count` records numbered from `first`, each a demo record made unique by its number,
    and at the middle line a record without output_field. Returns the bad records written."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(first, first + count):
            if i == first + count // 2:
                f.write(f'{{"input_field": "Listing {i}.", "task_type": "generation"}}\n')
            else:
                f.write(templates[i % len(templates)].replace("@N@", str(i), 1) + "\n")
    return 1 if count else 0


FILLER = [
    "soft",
    "durable",
    "cotton",
    "blend",
    "with",
    "reinforced",
    "seams",
    "and",
    "a",
    "relaxed",
    "fit",
]


def write_corpus(folder: Path, records: int, files: int, words: int) -> tuple[list[str], int]:
    """A generated corpus of `records` JSON Lines records in `files` files, each input
    lengthened by `words` words of a product description, written in Ray tasks: (paths,
    bad records among them)."""
    templates = []
    filler = "".join(f"{FILLER[j % len(FILLER)]} " for j in range(words))
    for r in demo_records(per_task=100):
        r["input_field"] = f"Listing @N@. {filler}" + r["input_field"]
        templates.append(json.dumps(r, ensure_ascii=False))
    write = ray.remote(num_cpus=1)(_write_corpus_file)
    bounds = [round(k * records / files) for k in range(files + 1)]
    paths = [str(folder / f"part-{k:05d}.jsonl") for k in range(files)]
    jobs = [
        write.remote(p, a, b - a, templates)
        for p, a, b in zip(paths, bounds[:-1], bounds[1:], strict=True)
    ]
    return paths, sum(ray.get(jobs))


class PeakRSS(Sampler):
    """Peak resident memory, sampled every `every` s while open: of this process (`driver`),
    of the largest process under it (Ray's workers, when it started Ray) and of all."""

    def __init__(self, every: float = 0.2):
        super().__init__(every)
        self.me = psutil.Process()
        self.driver = self.largest = self.total = 0.0

    def sample(self) -> None:
        sizes = []
        for proc in self.me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                sizes.append(proc.memory_info().rss)
        driver = self.me.memory_info().rss
        self.driver = max(self.driver, driver / 2**20)
        self.largest = max(self.largest, max(sizes, default=0) / 2**20)
        self.total = max(self.total, (driver + sum(sizes)) / 2**20)

    def figures(self) -> dict:
        return {
            "driver_peak_rss_mib": round(self.driver, 1),
            "largest_worker_peak_rss_mib": round(self.largest, 1),
            "all_processes_peak_rss_mib": round(self.total, 1),
        }


@ray.remote(num_cpus=1)
def pack_share(share, cfg: Config, mult: dict, rank: int) -> dict:
    """A rank's side of the data path, in a process of its own: read its share, then pack
    one epoch of it. Counts every record the epoch packs, against the mixture's copies."""
    rss0, before = psutil.Process().memory_info().rss, private_and_shared()
    with PeakRSS() as peak:
        t0 = time.perf_counter()
        mine = read_share(share)
        read_s = time.perf_counter() - t0
        after_read = private_and_shared()
        arrays = (mine.tokens, mine.offsets, mine.n_prompt, mine.task, mine.key)
        held = sum(a.nbytes for a in arrays)
        stats = StreamStats()
        reps = np.bincount(epoch_order(mine, mult, cfg.data.seed, 0, rank), minlength=len(mine))
        want, seen, packed = int(reps.sum()), np.zeros(len(mine), dtype=np.int64), 0
        t0 = time.perf_counter()
        for batch in stream(mine, cfg, mult, rank, stats=stats):
            take = batch["records"][: want - packed]  # the next epoch's records come after
            np.add.at(seen, take, 1)
            packed += len(take)
            if packed == want:
                break
        pack_s = time.perf_counter() - t0
    return {
        "records": len(mine),
        "tokens": int(len(mine.tokens)),
        "epoch_records": want,
        "packed_as_mixed": bool(np.array_equal(seen, reps)),  # none lost, none twice
        "each_once": bool((reps == 1).all()),
        "read_s": round(read_s, 1),
        "pack_s": round(pack_s, 1),
        "rows": stats.rows,
        "share_mib": round(held / 2**20, 1),
        "share_bytes_per_record": round(held / max(len(mine), 1), 1),
        "rss_before_mib": round(rss0 / 2**20, 1),
        "peak_rss_mib": round(peak.driver, 1),
        "memory_before": before,
        "memory_after_read": after_read,
    }


def private_and_shared() -> dict:
    """This process' resident memory of its own (RssAnon) and shared memory it maps
    (RssShmem: the object store's pages), in MiB, from /proc/self/status; {} without it."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    names = {"private_mib": "RssAnon", "shared_mib": "RssShmem"}
    return {k: round(int(fields[v].split()[0]) / 1024, 1) for k, v in names.items() if v in fields}


def corpus_path(
    cfg: Config, records: int, files: int, ranks: int, store_mib: int = 0, words: int = 0
) -> dict:
    """The data path on a generated corpus (see the module's docstring); returns its figures."""
    cpus = os.cpu_count() or 1
    store = {"object_store_memory": store_mib * 2**20} if store_mib else {}
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, **store)
    folder = Path(tempfile.mkdtemp(prefix="ecomtrain-corpus-"))
    out: dict = {"records": records, "files": files, "ranks": ranks, "cpus": cpus}
    try:
        model_path = resolve_model(cfg.model)
        t0 = time.perf_counter()
        paths, bad = write_corpus(folder, records, files, words)
        out["write_s"] = round(time.perf_counter() - t0, 1)
        cfg.data.corpus, cfg.data.rejects = paths, str(folder / "rejects.jsonl")
        with PeakRSS() as peak:
            t0 = time.perf_counter()
            scan = scan_corpus(paths, cfg.data)
            log.info(check_scan(scan, cfg.data))
            seconds = time.perf_counter() - t0
        out["scan"] = {
            "seconds": round(seconds, 1),
            "records_per_s_per_core": round(records / seconds / cpus),
            "bad_found": scan["bad"],
            "bad_written": bad,
            "records_counted": scan["records"],
            "held_out": sum(t["eval"] for t in scan["tasks"].values()),
        } | peak.figures()
        with PeakRSS() as peak:
            t0 = time.perf_counter()
            shares, mult = train_dataset(cfg, model_path, [], ranks, scan)
            seconds = time.perf_counter() - t0
        train = sum(t["train"] for t in scan["tasks"].values())
        out["tokenise_mix_share"] = {
            "seconds": round(seconds, 1),
            "records_per_s_per_core": round(train / seconds / cpus),
            "training_records": train,
        } | peak.figures()
        with PeakRSS() as peak:
            t0 = time.perf_counter()
            per_rank = ray.get([pack_share.remote(s, cfg, mult, r) for r, s in enumerate(shares)])
            seconds = time.perf_counter() - t0
        packed = sum(r["records"] for r in per_rank)
        out["read_and_pack"] = {
            "seconds": round(seconds, 1),
            "records_per_s_per_core": round(packed / seconds / min(cpus, ranks)),
            "records_in_shares": packed,
            "every_record_packed_as_mixed": all(r["packed_as_mixed"] for r in per_rank),
            "every_record_once_per_epoch": all(r["each_once"] for r in per_rank),
            "ranks": per_rank,
        } | peak.figures()
        out["object_store_spilled"] = spilled()
    finally:
        ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
    return out


def spilled() -> str:
    """What the object store spilled to disk (Ray's memory summary line), "none", or "" if
    Ray would not say."""
    try:
        from ray._private.internal_api import memory_summary

        text = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    except Exception:  # an internal API: the figure is optional
        return ""
    return next((line.strip() for line in text.splitlines() if "Spilled" in line), "none")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=int, default=10_000_000, help="records generated")
    parser.add_argument("--files", type=int, default=100, help="files they are written to")
    parser.add_argument("--ranks", type=int, default=2, help="training ranks dealt shares")
    parser.add_argument(
        "--object-store-mib", type=int, default=0, help="the object store (default: Ray's)"
    )
    parser.add_argument("--words", type=int, default=0, help="words added to every input")


def run(args: argparse.Namespace, config) -> dict:
    return corpus_path(
        config(), args.records, args.files, args.ranks, args.object_store_mib, args.words
    )
