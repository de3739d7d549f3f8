"""Joining a Ray cluster, or starting a local one, the same way for every entry point."""

from __future__ import annotations

import os
import socket

import ray


def connect(address: str | None = None) -> None:
    """Join the Ray cluster at `address` or $RAY_ADDRESS (set inside `ray job submit`),
    else start a local one. "auto" finds a cluster started with `ray start` on this machine."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return
    # Ray Train frees the workers of a run whose controller was stopped (an ASHA-stopped
    # trial) through the state API, which finds a cluster by RAY_ADDRESS or by the file
    # `ray start` leaves; a local cluster has neither (or a stale file), so its trials'
    # workers would hold their CPUs forever. Point the state API at the local dashboard.
    port = free_port(8265)  # Ray's usual dashboard port, else any free one
    url = f"http://127.0.0.1:{port}"
    os.environ["RAY_API_SERVER_ADDRESS"] = url
    ray.init(
        address="local",
        include_dashboard=True,
        dashboard_port=port,
        runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": url}},
    )


def free_port(preferred: int) -> int:
    """`preferred` if nothing listens on it, else a free port."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port")
