"""What a finished sweep could leave behind on a cluster that stays up: entries in the
temporary folder its processes use, open files of the cluster's own processes, objects in
Ray's object store.

One of those processes holds files open by design: Ray's log monitor tails every worker's
log and keeps up to RAY_LOG_MONITOR_MAX_OPEN_FILES (200) of them open, closing them all when
it reaches that; its open files are bounded by that setting, the others' by a small slack."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psutil


def cluster_services(root: psutil.Process) -> dict[int, psutil.Process]:
    """The long-lived processes under `root` (GCS, raylets, dashboard and their agents), not
    Ray's worker processes, which come and go with jobs."""
    found = root.children(recursive=True)
    return {p.pid: p for p in found if "default_worker.py" not in " ".join(p.cmdline())}


def footprint(tmp: Path, services: dict[int, psutil.Process], objects: int) -> dict:
    """Entries in `tmp`, open files of `services` (those still running) by process, and
    `objects` (the count of Ray objects, which the caller lists the way its cluster allows)."""
    fds: dict[str, int] = {}
    for proc in services.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            name = _name(proc)
            fds[name] = fds.get(name, 0) + proc.num_fds()
    return {"objects": objects, "fds": fds, "tmp": sorted(p.name for p in tmp.iterdir())}


def _name(proc: psutil.Process) -> str:
    """gcs_server, raylet, or the Python script a service runs (log_monitor.py, ...)."""
    scripts = [os.path.basename(a) for a in proc.cmdline() if a.endswith(".py")]
    return scripts[0] if scripts else proc.name()


LOG_MONITOR = "log_monitor.py"


def assert_left_nothing(start: dict, end: dict, log_cap: int = 200, fds_slack: int = 32) -> None:
    """No new temporary entry, no more objects, open files of the log monitor within its cap
    (`log_cap`: the cluster's RAY_LOG_MONITOR_MAX_OPEN_FILES) and of the other services
    within `fds_slack` (the dashboard keeps a few connections per job it served)."""
    assert end["tmp"] == start["tmp"], (start["tmp"], end["tmp"])
    assert end["objects"] <= start["objects"], (start, end)
    logs = [f.get(LOG_MONITOR, 0) for f in (start["fds"], end["fds"])]
    assert logs[1] <= logs[0] + log_cap, (start, end)
    rest = [sum(f.values()) - n for f, n in zip((start["fds"], end["fds"]), logs, strict=True)]
    assert rest[1] <= rest[0] + fds_slack, (start, end)
