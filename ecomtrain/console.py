"""What a command prints: `-v/--verbose` and `-q/--quiet` for every CLI, quiet Ray, W&B and
Hugging Face output in Ray's worker processes, and a run's progress as one line per report.

By default a command logs what it does at INFO ("ecomtrain" logger, on stderr) and prints
its results on stdout. Ray's per-worker metric dicts, its Data operator lines, repeated
library warnings and progress bars of model loading stay out of the console (a sweep's
workers still write them to the Ray session's log files, linked from the output directory);
`--verbose` shows them all, `--quiet` only warnings, errors and results.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import warnings

log = logging.getLogger("ecomtrain")

LEVEL_ENV = "ECOMTRAIN_LOG_LEVEL"  # the CLI's level, passed on to Ray's worker processes
# Set in the driver and every Ray worker process unless --verbose.
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" bars too
    "WANDB_SILENT": "true",  # W&B's per-run banners and summaries
    # Tune's classic output, silent at verbose=0 (the newer one prints its config box anyway)
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_DATA_LOG_LEVEL": "WARNING",  # Ray Data sets its logger's level when imported
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning",
    # Ray Train turns a worker's print() into a log line that no redirect of stdout holds:
    # off, so that a library's print (DeepSpeed's "op built successfully") can be held
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
}
# Ray Train's "Reporting training result" line (every report's metrics, from every rank)
# comes from a logger named by its module's file path, outside the "ray.train" tree.
RAY_TRAIN_REPORTS = os.path.join(
    os.path.dirname(importlib.util.find_spec("ray").origin),
    "train/v2/_internal/execution/context.py",
)
# The levels of libraries' loggers below --verbose (their children follow them).
QUIET_LOGGERS = {
    "ray.data": logging.WARNING,
    "ray.data._internal.progress": logging.ERROR,  # "Progress bars disabled" (we disable them)
    "ray.train": logging.WARNING,
    RAY_TRAIN_REPORTS: logging.WARNING,
    "ray.tune": logging.WARNING,
    "ray.tune.utils.util": logging.ERROR,  # "on_trial_result took 3 s" (a W&B run starting)
    "ray.tune.logger.tensorboardx": logging.ERROR,  # "invalid value": a predictions table
    "transformers": logging.WARNING,
    "absl": logging.WARNING,  # rouge_score's "Using default tokenizer."
}
# Loggers that reset their own level when imported: a filter holds them instead.
FILTERED_LOGGERS = {"DeepSpeed": logging.ERROR}  # "Setting accelerator to CPU", everywhere


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-v", "--verbose", action="store_true", help="also Ray's, DeepSpeed's and W&B's output"
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", help="only warnings, errors and results"
    )


def setup(args: argparse.Namespace) -> None:
    """Log at the level the command line asks for; below --verbose, quiet the libraries here
    and (through `worker_env`) in every Ray worker process this command starts."""
    verbose, quiet = getattr(args, "verbose", False), getattr(args, "quiet", False)
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    os.environ[LEVEL_ENV] = logging.getLevelName(level)
    if not verbose:
        os.environ.update(QUIET_ENV)
    setup_process()


def setup_process() -> None:
    """The "ecomtrain" logger at the command's level, on stderr; below --verbose, libraries'
    INFO chatter and repeated warnings off. Runs in the CLI and, as Ray's worker setup
    hook, in every worker process."""
    if not any(isinstance(h, Stderr) for h in log.handlers):
        handler = Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(os.environ.get(LEVEL_ENV, "INFO"))
    log.propagate = False
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(logging.NOTSET if verbose() else level)
    for name, level in FILTERED_LOGGERS.items():
        logger = logging.getLogger(name)
        for f in [f for f in logger.filters if isinstance(f, AtLeast)]:
            logger.removeFilter(f)
        if not verbose():
            logger.addFilter(AtLeast(level))
    if verbose():
        return
    if "transformers" in sys.modules:  # else HF_HUB_DISABLE_PROGRESS_BARS does it at import
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message="Use 'expr' instead of 'fn'")  # Ray Data


class Stderr(logging.StreamHandler):
    """To whatever sys.stderr is when a line is written (a test may have replaced it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class AtLeast(logging.Filter):
    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


def verbose() -> bool:
    return os.environ.get(LEVEL_ENV) == "DEBUG"


def worker_env() -> dict:
    """The runtime_env that makes Ray's worker processes as quiet as this command."""
    env = {LEVEL_ENV: os.environ.get(LEVEL_ENV, "INFO")}
    return {
        "env_vars": env if verbose() else env | QUIET_ENV,
        "worker_process_setup_hook": "ecomtrain.console.setup_process",
    }


def quiet() -> bool:
    return os.environ.get(LEVEL_ENV) in ("WARNING", "ERROR")


def bar(iterable=None, **kwargs):
    """A progress bar on stderr, drawn on a terminal only (never into a log file or a Ray
    worker's output) and not under --quiet."""
    from tqdm import tqdm

    return tqdm(iterable, disable=True if quiet() else None, mininterval=1.0, **kwargs)


def duration(seconds: float) -> str:
    """12 s, 3m05s, 1h02m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_line(name: str, metrics: dict, max_steps: int, metric: str = "score") -> str:
    """One report of a run: step/max, loss, tokens/s and time left; at an evaluation also
    the score with its standard error and the held-out loss."""
    step = int(metrics.get("step", 0))
    parts = [f"{name}  step {step}/{max_steps}"]
    if "loss" in metrics:
        parts.append(f"loss {metrics['loss']:.4f}")
    if "tokens_per_s" in metrics:
        parts.append(f"{metrics['tokens_per_s']:,.0f} tok/s")
    if "step_s" in metrics and step < max_steps:
        parts.append(f"eta {duration(metrics['step_s'] * (max_steps - step))}")
    if metric in metrics:
        se = metrics.get(f"{metric}_se", metrics.get("score_se"))
        score = f"{metric} {metrics[metric]:.4f}" + (f" (SE {se:.4f})" if se is not None else "")
        parts.append(score)
    if "eval_loss" in metrics:
        parts.append(f"eval_loss {metrics['eval_loss']:.4f}")
    if "eval_s" in metrics:
        parts.append(f"(evaluated in {duration(metrics['eval_s'])})")
    return "  ".join(parts)
