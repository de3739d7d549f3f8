"""What the benchmarks measure with: a sampler of processes in a thread, a ratio's geometric
mean with its interval over paired runs, and environment variables set for a block."""

from __future__ import annotations

import contextlib
import math
import os
import threading

import numpy as np
from scipy.stats import t as student_t


class Sampler:
    """Calls `sample` every `every` s on a thread of its own while open (and once more as
    it closes)."""

    def __init__(self, every: float):
        self.every = every
        self._stop = threading.Event()

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)
        self.sample()

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def ratio_interval(pairs: list[float], goal: float | None = None) -> dict:
    """The geometric mean of paired ratios (each pair ran back to back) with its 95 %
    t-interval over their logarithms, and, given a goal (a ratio to stay at or under),
    whether the interval clearly meets it."""
    logs = np.log(pairs)
    mean = float(np.mean(logs))
    out: dict = {"ratio": round(math.exp(mean), 3), "ratio_ci95": None}
    if len(logs) >= 2:
        half = student_t.ppf(0.975, len(logs) - 1) * float(np.std(logs, ddof=1))
        half /= math.sqrt(len(logs))
        out["ratio_ci95"] = [round(math.exp(mean - half), 3), round(math.exp(mean + half), 3)]
    if goal is not None:
        low, high = out["ratio_ci95"] or (0.0, math.inf)
        out["goal"] = "met" if high <= goal else "missed" if low > goal else "not clear"
    return out


@contextlib.contextmanager
def environment(**values: str):
    """Environment variables set inside the block (for processes started in it)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
