"""The console: verbosity flags, quiet workers, and a sweep's one line per trial per report.
(The sweep's whole console is checked end to end in test_sweep_e2e.)"""

import argparse
import logging
import types

import pytest

from ecomtrain import console
from ecomtrain.config import load_config
from tuning.progress import Progress, status_table


@pytest.fixture(autouse=True)
def restore_env(monkeypatch):
    for key in [console.LEVEL_ENV, *console.QUIET_ENV]:
        monkeypatch.delenv(key, raising=False)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    console.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    "argv, level, quiet_workers",
    [((), logging.INFO, True), (("-v",), logging.DEBUG, False), (("-q",), logging.WARNING, True)],
)
def test_levels_and_worker_env(argv, level, quiet_workers):
    console.setup(parse(*argv))
    assert console.log.level == level
    env = console.worker_env()
    assert env["env_vars"][console.LEVEL_ENV] == logging.getLevelName(level)
    assert ("WANDB_SILENT" in env["env_vars"]) == quiet_workers
    assert env["worker_process_setup_hook"] == "ecomtrain.console.setup_process"
    # the libraries' chatter is off below --verbose, in their child loggers too, and
    # DeepSpeed's even though it sets its own logger's level when imported
    operator = logging.getLogger("ray.data._internal.execution.streaming_executor")
    assert operator.isEnabledFor(logging.INFO) == (not quiet_workers)
    deepspeed = logging.getLogger("DeepSpeed")
    deepspeed.setLevel(logging.INFO)
    record = deepspeed.makeRecord("DeepSpeed", logging.WARNING, "x", 1, "accelerator", (), None)
    assert deepspeed.filter(record) == (not quiet_workers)


def test_verbose_and_quiet_exclude_each_other():
    with pytest.raises(SystemExit):
        parse("-v", "-q")


def test_progress_line():
    line = console.progress_line(
        "ladder-2 r8 s1",
        {"step": 40, "loss": 2.34567, "tokens_per_s": 12345.6, "step_s": 0.5},
        200,
    )
    assert line == "ladder-2 r8 s1  step 40/200  loss 2.3457  12,346 tok/s  eta 1m20s"
    at_eval = console.progress_line(
        "a r2",
        {"step": 200, "loss": 1.0, "score": 0.25, "score_se": 0.03, "eval_loss": 3.0, "eval_s": 7},
        200,
    )
    assert at_eval.endswith("score 0.2500 (SE 0.0300)  eval_loss 3.0000  (evaluated in 7 s)")
    assert "eta" not in at_eval  # the last step


def test_duration():
    assert [console.duration(s) for s in (0.4, 59, 61, 3600 + 125)] == [
        "0 s",
        "59 s",
        "1m01s",
        "1h02m",
    ]


def trial(status: str, subset: str = "pair", rank: int = 2, **result):
    config = {"subset": {"id": subset, "n_tasks": 2, "n_capabilities": 1}, "rank": rank, "seed": 0}
    config["lora.shape"] = "moe"  # a sweep.params value: named in the label
    return types.SimpleNamespace(
        status=status, config=config, last_result=result, error_file=None, local_path="/x"
    )


def test_sweep_progress_lines(caplog):
    console.setup(parse())
    console.log.addHandler(caplog.handler)
    try:
        progress = Progress(max_steps=100, total=4)
        done = trial("TERMINATED", step=100, score=0.5)
        running = trial("RUNNING", rank=8, step=40, score=0.2)
        trials = [done, running, trial("PENDING")]
        progress.on_trial_start(0, trials, running)
        progress.on_trial_result(0, trials, running, running.last_result)
        progress.on_trial_complete(0, trials, running)
    finally:
        console.log.removeHandler(caplog.handler)
    start, report, stopped = [r.getMessage() for r in caplog.records]
    assert start.startswith(
        "start   pair r8 shape=moe s0  (2 tasks over 1 capabilities)  [1/4 done"
    )
    assert report.strip() == "pair r8 shape=moe s0  step 40/100  score 0.2000"
    # an early-stopped trial says so, and counts as done
    assert stopped.startswith(
        "stopped pair r8 shape=moe s0  at step 40  score=0.2000  [2/4 done, 1 pending"
    )


def test_tunes_status_table_waits_its_interval_and_comes_at_the_end():
    """The sweep's own lines say what starts: Tune's table comes every few minutes and at the
    end, never at the start."""
    table = status_table(load_config(None, []))
    trials = [trial("PENDING")]
    assert not table.should_report(trials)
    assert table.should_report(trials, done=True)
