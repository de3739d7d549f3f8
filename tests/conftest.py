"""Shared fixtures: an isolated cache, a CLI runner, the real-data folder and a local Ray
instance (records to start from: tests/records.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import ray

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def ecomtrain_cache(tmp_path_factory):
    """Build the tiny model and demo corpus once per test session, away from ~/.cache."""
    if "ECOMTRAIN_CACHE" not in os.environ:
        os.environ["ECOMTRAIN_CACHE"] = str(tmp_path_factory.mktemp("ecomtrain-cache"))
    # W&B off for commands run in-process; CLI runs (run_cli) and W&B tests write offline
    os.environ.setdefault("WANDB_MODE", "disabled")
    return Path(os.environ["ECOMTRAIN_CACHE"])


@pytest.fixture
def run_cli(ecomtrain_cache):
    """Run `python -m MODULE ARGS...` from the repository root in a fresh process: its own
    local Ray cluster (no RAY_ADDRESS), W&B offline without a key; a non-zero exit fails the
    test with the tail of the output."""

    def run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
        env = {**os.environ, "WANDB_MODE": "offline", "ECOMTRAIN_CACHE": str(ecomtrain_cache)}
        for key in ("WANDB_API_KEY", "RAY_ADDRESS"):
            env.pop(key, None)
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its Ray cluster too: a hang ends all of it
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:  # where it stood, not only that it timed out
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"{args[0]}: no exit in {timeout} s\n{out[-3000:]}{err[-3000:]}")
        proc = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    return run


def _local_ray():
    """A local Ray instance of 2 CPUs, no dashboard, workers' output in its log files."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def local_ray():
    """A local Ray instance for one test (one that may stop or restart Ray itself)."""
    yield from _local_ray()


@pytest.fixture(scope="module")
def module_ray():
    """A local Ray instance shared by a module's tests that ask for it."""
    yield from _local_ray()


@pytest.fixture(scope="session")
def refdata() -> Path:
    """../shared/refdata (or $ECOMTRAIN_REFDATA); skipped when absent, a failure under CI."""
    path = Path(os.environ.get("ECOMTRAIN_REFDATA", ROOT.parent / "shared" / "refdata"))
    if not (path / "kddcup24_development.json").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"refdata not found at {path} (set ECOMTRAIN_REFDATA)")
        pytest.skip(f"refdata not found at {path} (set ECOMTRAIN_REFDATA)")
    return path
