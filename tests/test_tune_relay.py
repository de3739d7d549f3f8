"""A Ray Train run's reports reach Ray Tune in order, and a trial ends with its last one.

Tune's main thread handles a trial's results; here it is slowed down (3 s a result), which
made Ray's own TuneReportCallback hang the trial for good: the trial function's end marker
filled the one-slot queue before the last report (tuning.relay.relay_to_tune). The sweep runs
in a process of its own (run_cli), so a hang fails the test instead of stopping the suite."""

import json
import sys
import threading
import time
from pathlib import Path

import ray
from ray import tune
from ray.train import Checkpoint, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from tuning.relay import relay_to_tune


def loop(config: dict) -> None:
    for i in range(3):
        if i == 1:  # one report with a checkpoint
            folder = Path(config["storage"], "made")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "x.txt").write_text("x")
            ray.train.report({"i": i}, checkpoint=Checkpoint.from_directory(folder))
        else:
            ray.train.report({"i": i})
    if config["fail"]:
        raise RuntimeError("the run failed")


def slow_main_thread_results() -> None:
    from ray.train._internal import session

    original = session._TrainSession._auto_fill_metrics

    def slow(self, result):
        if threading.current_thread() is threading.main_thread():
            time.sleep(3)
        return original(self, result)

    session._TrainSession._auto_fill_metrics = slow


def trial(config: dict) -> None:
    slow_main_thread_results()

    def fit(callbacks):
        TorchTrainer(
            loop,
            train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.5}),
            run_config=RunConfig(storage_path=config["storage"], callbacks=callbacks),
        ).fit()

    relay_to_tune(fit)


def sweep(storage: str) -> dict:
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # its own, never another
    space = {"fail": tune.grid_search([False, True]), "storage": storage}
    run = tune.RunConfig(storage_path=storage, verbose=0)
    fn = tune.with_resources(trial, {"CPU": 0.01})  # as the sweep's trial drivers
    grid = tune.Tuner(fn, param_space=space, run_config=run).fit()
    out = {}
    for r in grid:
        history = r.metrics_dataframe
        out[str(r.config["fail"])] = {
            "i": history["i"].tolist() if history is not None else [],
            "checkpoint": [str(p) for p in history.get("checkpoint_path", []) if p == p],
            "error": str(r.error or ""),
        }
    return out


def test_every_report_reaches_tune_in_order_and_errors_fail_the_trial(tmp_path, run_cli):
    out = run_cli("tests.test_tune_relay", str(tmp_path), timeout=240).stdout
    (line,) = [x for x in out.splitlines() if x.startswith("reports: ")]
    got = json.loads(line.removeprefix("reports: "))
    assert got["False"]["i"] == [0, 1, 2] and not got["False"]["error"]
    (checkpoint,) = got["False"]["checkpoint"]  # the report that came with one
    assert Path(checkpoint, "x.txt").read_text() == "x"
    assert got["True"]["i"] == [0, 1, 2] and "the run failed" in got["True"]["error"]


if __name__ == "__main__":
    print("reports: " + json.dumps(sweep(sys.argv[1])))
