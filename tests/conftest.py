"""Shared fixtures: an isolated cache, a CLI runner and the real-data folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
        try:
            proc = subprocess.run(
                [sys.executable, "-m", *args],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as e:  # where it stood, not only that it timed out
            out = [x.decode() if isinstance(x, bytes) else x or "" for x in (e.stdout, e.stderr)]
            pytest.fail(
                f"{' '.join(args[:1])}: no exit in {timeout} s\n{out[0][-3000:]}{out[1][-3000:]}"
            )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    return run


@pytest.fixture(scope="session")
def refdata() -> Path:
    """../shared/refdata (or $ECOMTRAIN_REFDATA); skipped when absent, a failure under CI."""
    path = Path(os.environ.get("ECOMTRAIN_REFDATA", ROOT.parent / "shared" / "refdata"))
    if not (path / "kddcup24_development.json").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"refdata not found at {path} (set ECOMTRAIN_REFDATA)")
        pytest.skip(f"refdata not found at {path} (set ECOMTRAIN_REFDATA)")
    return path
