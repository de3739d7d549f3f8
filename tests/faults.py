"""Fault injection for the fault tests, installed in every Ray worker process through Ray's
`worker_process_setup_hook` (test machinery: the product carries no test branch).

A test writes a plan, JSON, to the file named by $ECOMTRAIN_FAULT_PLAN; each worker reads it
when it reports and when it writes a checkpoint, and kills itself (SIGKILL, no cleanup) once:

    {"rank": 1, "after_step": 5, "marker": PATH}        after reporting step 5's metrics
    {"rank": 1, "in_checkpoint": 6, "marker": PATH}     halfway through step 6's checkpoint

or, for a test that takes the worker's whole node away, writes its node id into the marker
and waits there (for the node to go):

    {"rank": 1, "hold_at_step": 5, "marker": PATH}      before reporting step 5's metrics

The marker file makes it happen once per run, however often the run is retried.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

PLAN = "ECOMTRAIN_FAULT_PLAN"


def _plan() -> dict:
    try:
        return json.loads(Path(os.environ[PLAN]).read_text())
    except (KeyError, FileNotFoundError):
        return {}


def _once(plan: dict) -> bool:
    marker = Path(plan["marker"])
    if marker.exists():
        return False
    marker.touch()
    return True


def install() -> None:
    """Wrap ray.train.report and the loop's save_checkpoint with the plan's faults."""
    import ray.train

    from ecomtrain.train import engine, loop

    report, save = ray.train.report, loop.save_checkpoint

    def faulty_report(metrics, *args, **kwargs):
        plan = _plan()
        rank = ray.train.get_context().get_world_rank()
        if plan.get("after_step") == metrics.get("step") and plan["rank"] == rank and _once(plan):
            os.kill(os.getpid(), signal.SIGKILL)
        if plan.get("hold_at_step") == metrics.get("step") and plan["rank"] == rank and _once(plan):
            Path(plan["marker"]).write_text(ray.get_runtime_context().get_node_id())
            time.sleep(600)  # until the test removes this node
        return report(metrics, *args, **kwargs)

    def faulty_save(path, eng, tokenizer, trial, state, rank, *rest):
        plan = _plan()
        if plan.get("in_checkpoint") == state["step"] and plan["rank"] == rank and _once(plan):
            engine.save_state(eng, str(path), client_state={"step": state["step"]})  # a part
            os.kill(os.getpid(), signal.SIGKILL)
        return save(path, eng, tokenizer, trial, state, rank, *rest)

    ray.train.report = faulty_report
    loop.save_checkpoint = faulty_save
