"""A sweep's console: one line per trial per report, where the sweep stands, and every few
minutes (and at the end) Tune's status table with readable columns (subset id, rank, seed,
step, score).

Both run on the driver, so they work the same when the workers' own output stays in the
Ray session's log files (the default: see ecomtrain.console).
"""

from __future__ import annotations

import time

from ray import tune

from ecomtrain.config import Config
from ecomtrain.console import duration, log, progress_line

TABLE_EVERY_S = 300  # Tune's status table at most this often (and at the end)


class StatusTable(tune.CLIReporter):
    """Tune's status table every TABLE_EVERY_S and at the end, never at the start: the
    sweep's own lines say then what starts."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._last_report_time = time.time()


def status_table(cfg: Config) -> StatusTable:
    """Tune's status table, its columns the swept values and the objective."""
    params = {"subset/id": "subset"}
    params |= {"mixture/id": "mixture"} if cfg.sweep.mixtures.active else {}
    params |= {"rank": "rank"}
    params |= {"seed": "seed"} if cfg.sweep.seeds else {}
    params |= {key: key for key in cfg.sweep.params}
    metrics = {"step": "step", "loss": "loss", cfg.sweep.metric: cfg.sweep.metric}
    return StatusTable(
        parameter_columns=params,
        metric_columns=metrics,
        max_report_frequency=TABLE_EVERY_S,
        print_intermediate_tables=True,
    )


def trial_label(config: dict) -> str:
    """subset id, mixture id, rank, each `sweep.params` value (by its last key) and
    (replicates) seed of a trial: `ladder-2 r8 shape=moe s1`, `all dirichlet-3 r8`."""
    params = "".join(f" {k.rpartition('.')[2]}={v}" for k, v in config.items() if "." in k)
    seed = f" s{config['seed']}" if "seed" in config else ""
    mixture = f" {config['mixture']['id']}" if "mixture" in config else ""
    return f"{config['subset']['id']}{mixture} r{config['rank']}{params}{seed}"


class Progress(tune.Callback):
    def __init__(self, max_steps: int, metric: str = "score", total: int = 0):
        self.max_steps, self.metric, self.total = max_steps, metric, total
        self.t0 = time.time()

    def status(self, trials, ending=None, failed: bool = False) -> str:
        """`3/12 done, 1 running, 8 pending, 5m10s`: the sweep's state in one line (`ending`:
        a trial Tune is finishing, still RUNNING in `trials`)."""
        by = {}
        for t in trials:
            status = ("ERROR" if failed else "TERMINATED") if t is ending else t.status
            by[status] = by.get(status, 0) + 1
        done = by.get("TERMINATED", 0) + by.get("ERROR", 0)
        parts = [f"{done}/{max(self.total, len(trials))} done"]
        for status in ("RUNNING", "PENDING", "PAUSED", "ERROR"):
            if by.get(status):
                parts.append(f"{by[status]} {'failed' if status == 'ERROR' else status.lower()}")
        return ", ".join(parts) + f", {duration(time.time() - self.t0)}"

    def on_trial_start(self, iteration, trials, trial, **info):
        subset = trial.config["subset"]
        log.info(
            "start   %s  (%d tasks over %d capabilities)  [%s]",
            trial_label(trial.config),
            subset["n_tasks"],
            subset["n_capabilities"],
            self.status(trials),
        )

    def on_trial_result(self, iteration, trials, trial, result, **info):
        log.info(
            "        %s",
            progress_line(trial_label(trial.config), result, self.max_steps, self.metric),
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        stopped = int(result.get("step", 0)) < self.max_steps
        log.info(
            "%s %s  at step %s  %s=%s  [%s]",
            "stopped" if stopped else "done   ",
            trial_label(trial.config),
            result.get("step", "?"),
            self.metric,
            f"{result[self.metric]:.4f}" if self.metric in result else "-",
            self.status(trials, trial),
        )

    def on_trial_error(self, iteration, trials, trial, **info):
        last = ""
        if trial.error_file:
            try:
                with open(trial.error_file) as f:
                    lines = [line for line in f.read().splitlines() if line.strip()]
                last = lines[-1] if lines else ""
            except OSError:
                pass
        log.error(
            "FAILED  %s: %s  (traceback: %s)  [%s]",
            trial_label(trial.config),
            last,
            trial.error_file or trial.local_path,
            self.status(trials, trial, failed=True),
        )
