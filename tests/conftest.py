"""Shared fixtures: an isolated cache and the real-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def ecomtrain_cache(tmp_path_factory):
    """Build the tiny model and demo corpus once per test session, away from ~/.cache."""
    if "ECOMTRAIN_CACHE" not in os.environ:
        os.environ["ECOMTRAIN_CACHE"] = str(tmp_path_factory.mktemp("ecomtrain-cache"))
    os.environ.setdefault("WANDB_MODE", "offline")
    return Path(os.environ["ECOMTRAIN_CACHE"])


@pytest.fixture(scope="session")
def refdata() -> Path:
    """../shared/refdata (or $ECOMTRAIN_REFDATA); skipped when absent, a failure under CI."""
    path = Path(os.environ.get("ECOMTRAIN_REFDATA", ROOT.parent / "shared" / "refdata"))
    if not (path / "kddcup24_development.json").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"refdata not found at {path} (set ECOMTRAIN_REFDATA)")
        pytest.skip(f"refdata not found at {path} (set ECOMTRAIN_REFDATA)")
    return path
