"""What a finished sweep could leave behind on a cluster that stays up: entries in the
temporary folder its processes use, open files of the cluster's own processes, objects in
Ray's object store."""

from __future__ import annotations

import contextlib
from pathlib import Path

import psutil


def cluster_services(root: psutil.Process) -> dict[int, psutil.Process]:
    """The long-lived processes under `root` (GCS, raylets, dashboard and their agents), not
    Ray's worker processes, which come and go with jobs."""
    found = root.children(recursive=True)
    return {p.pid: p for p in found if "default_worker.py" not in " ".join(p.cmdline())}


def footprint(tmp: Path, services: dict[int, psutil.Process], objects: int) -> dict:
    """Entries in `tmp`, open files of `services` (those still running), and `objects`
    (the count of Ray objects, which the caller lists the way its cluster allows)."""
    fds = 0
    for proc in services.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            fds += proc.num_fds()
    return {"objects": objects, "fds": fds, "tmp": sorted(p.name for p in tmp.iterdir())}


def assert_left_nothing(start: dict, end: dict, fds_slack: int = 32) -> None:
    """No new temporary entry, no more objects, and open files within `fds_slack` (the
    dashboard keeps a few connections per job it served)."""
    assert end["tmp"] == start["tmp"], (start["tmp"], end["tmp"])
    assert end["objects"] <= start["objects"], (start, end)
    assert end["fds"] <= start["fds"] + fds_slack, (start, end)
