"""Joining a Ray cluster, or starting a local one, the same way for every entry point."""

from __future__ import annotations

import os
import socket

import ray

from ecomtrain.console import worker_env


def connect(address: str | None = None, log_to_driver: bool = True) -> str:
    """Join the Ray cluster at `address` or $RAY_ADDRESS (set inside `ray job submit`),
    else start a local one. "auto" finds a cluster started with `ray start` on this machine.
    Worker processes get the command's verbosity (console.worker_env); `log_to_driver`
    False leaves their output in the Ray session's log files only. Returns the session's
    log folder on this machine ("" when Ray was already initialised)."""
    if ray.is_initialized():
        return ""
    context = init(address or os.environ.get("RAY_ADDRESS"), log_to_driver)
    return os.path.join(context.address_info["session_dir"], "logs")


def init(address: str | None, log_to_driver: bool):
    runtime_env = worker_env()
    if address:
        return ray.init(address=address, runtime_env=runtime_env, log_to_driver=log_to_driver)
    # Ray Train frees the workers of a run whose controller was stopped (an ASHA-stopped
    # trial) through the state API, which finds a cluster by RAY_ADDRESS or by the file
    # `ray start` leaves; a local cluster has neither (or a stale file), so its trials'
    # workers would hold their CPUs forever. Point the state API at the local dashboard.
    port = free_port(8265)  # Ray's usual dashboard port, else any free one
    url = f"http://127.0.0.1:{port}"
    os.environ["RAY_API_SERVER_ADDRESS"] = url
    return ray.init(
        address="local",
        include_dashboard=True,
        dashboard_port=port,
        runtime_env=runtime_env
        | {"env_vars": runtime_env["env_vars"] | {"RAY_API_SERVER_ADDRESS": url}},
        log_to_driver=log_to_driver,
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
