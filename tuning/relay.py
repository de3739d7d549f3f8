"""A trial's Ray Train reports to Ray Tune, from the trial's own thread.

Kept apart from tuning.run: Ray Train's controller unpickles `Reports`, so importing this
module must stay light (tuning.run imports W&B, whose import leaves temporary folders behind
in a process that is killed, as the controller is)."""

from __future__ import annotations

import threading

import ray
from ray import tune
from ray.util.queue import Empty, Queue


class Reports(ray.train.UserCallback):
    """Ray Train's reports of a run, each the metrics of rank 0 and its checkpoint's path
    (`checkpoint_path`, as Tune's own callback gives it), into a queue."""

    def __init__(self):
        self.queue = Queue(actor_options={"num_cpus": 0})

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        item = dict(metrics[0])
        if checkpoint is not None:
            item["checkpoint_path"] = checkpoint.path
        self.queue.put(item)


class PackReports(ray.train.UserCallback):
    """A pack's Ray Train reports (ecomtrain.train.pack: rank 0's `members` and `failed`),
    split by member onto the sweep's pack board (tuning.pack.PackBoard): each member's
    metrics with its folder of the checkpoint as `checkpoint_path`, and the members whose
    loss turned non-finite. It waits until the board has them, so the run's end reaches the
    board after its last report."""

    def __init__(self, board, name: str):
        self.board, self.name = board, name

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        report, items = metrics[0], {}
        for member, values in report.get("members", {}).items():
            item = dict(values)
            if checkpoint is not None:
                item["checkpoint_path"] = f"{checkpoint.path}/{member}"
            items[member] = [("report", item)]
        for member, why in report.get("failed", {}).items():
            items.setdefault(member, []).append(("failed", why))
        ray.get(self.board.report.remote(self.name, items))


def relay_to_tune(fit_with) -> None:
    """Run `fit_with(callbacks)` (a Ray Train run) on a thread of its own and report each of
    its reports to Tune from this trial's thread, in order, before the trial returns.

    Ray's TuneReportCallback hands the reports to Tune's main thread instead, and the trial
    function's end races it: when the run's last report reached that thread after the function
    had returned, Tune's end-of-trial marker filled the one-slot queue between them and the
    trial hung for good (or Tune took the marker first and the trial ended without its last
    report, its score). Here every report and the marker come from one thread, in order."""
    reports, failed = Reports(), []

    def run() -> None:
        try:
            fit_with([reports])
        except BaseException as e:  # raised on this trial's thread below
            failed.append(e)

    thread = threading.Thread(target=run, name="ray-train-run", daemon=True)
    thread.start()
    try:
        while True:
            running = thread.is_alive()  # before the get: a run that has ended put all
            try:
                item = reports.queue.get(timeout=0.5)
            except Empty:
                if running:
                    continue
                break
            tune.report(item)
    finally:
        reports.queue.shutdown()
    thread.join()
    if failed:
        raise failed[0]
