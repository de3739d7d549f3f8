"""W&B runs of every entry point, one way: the mode rule, the run, the predictions table.

Each run has a `job_type` saying which entry point wrote it ("trial", "train", "evaluate",
"generate", "summary"), tags (the sweep, the subset) and its full resolved config. With no
WANDB_API_KEY, or a key but no W&B server within reach, a run is written offline under the
command's output folder (`wandb sync DIR/wandb/offline-run-*` uploads it later). Keys come
from the environment only; nothing here copies them into a config.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import requests

log = logging.getLogger(__name__)

MODES = ("auto", "online", "offline", "disabled")
PREDICTION_COLUMNS = ("task", "input", "gold", "answer", "score")
PROBE_S = 5.0  # how long "auto" waits for the W&B server before it writes offline
DEFAULT_SERVER = "https://api.wandb.ai"


def resolve_mode(mode: str) -> str:
    """ "auto": WANDB_MODE when it is set, else online with WANDB_API_KEY and a W&B server
    that answers within PROBE_S ($WANDB_BASE_URL, else W&B's cloud), and offline otherwise
    (said on the console: W&B's own start would wait about 90 s, then fail)."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE") in MODES[1:]:
        return os.environ["WANDB_MODE"]
    if not os.environ.get("WANDB_API_KEY"):
        return "offline"
    server = os.environ.get("WANDB_BASE_URL") or DEFAULT_SERVER
    try:
        requests.head(server, timeout=PROBE_S)  # any answer will do; proxies are honoured
    except requests.RequestException as e:
        log.warning(
            "warning: WANDB_API_KEY is set but the W&B server %s cannot be reached (%s): "
            "runs are written offline; `wandb sync DIR/wandb/offline-run-*` uploads them",
            server,
            type(e).__name__,
        )
        return "offline"
    return "online"


@contextlib.contextmanager
def wandb_run(
    job_type: str,
    *,
    project: str,
    mode: str,
    dir: str | Path,
    name: str | None = None,
    group: str | None = None,
    tags: list[str] = (),
    config: dict | None = None,
    entity: str | None = None,
) -> Iterator:
    """A W&B run (None when the mode is "disabled"), finished on leaving the block."""
    mode = resolve_mode(mode)
    if mode == "disabled":
        yield None
        return
    import wandb

    Path(dir).mkdir(parents=True, exist_ok=True)
    with wandb.init(
        project=project,
        entity=entity or None,
        group=group,
        job_type=job_type,
        name=name,
        tags=[t for t in tags if t],
        mode=mode,
        dir=str(dir),
        config=config or {},
        reinit="create_new",
        settings=wandb.Settings(console="off"),
    ) as run:
        yield run
    # Wait until W&B's own process has written the run out: `finish` may return first, and
    # a process that ends right after (a CLI, a Ray actor) would lose the run's tail.
    wandb.teardown()


def predictions_table(rows: list[dict]):
    """Sample held-out answers as a wandb.Table: task, input, gold, answer, score."""
    import wandb

    data = [[r.get(c) for c in PREDICTION_COLUMNS] for r in rows]
    return wandb.Table(columns=list(PREDICTION_COLUMNS), data=data, allow_mixed_types=True)


def scalars(metrics: dict, prefix: str = "") -> dict:
    """The numbers of a (nested) metrics dict, flat under "a/b" keys: a run's summary."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out |= scalars(value, f"{prefix}{key}/")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out


def cli_config(args: argparse.Namespace) -> dict:
    """A CLI's arguments as a run config (no secrets: keys never travel in arguments)."""
    return {k: v for k, v in vars(args).items() if not callable(v)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wandb-mode",
        choices=MODES,
        default="auto",
        help="auto: $WANDB_MODE, else online with WANDB_API_KEY, offline without",
    )
    parser.add_argument("--wandb-project", default="ecomtrain", help="W&B project")
