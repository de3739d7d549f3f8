"""Fault injection for the fault tests, installed in every Ray worker process through Ray's
`worker_process_setup_hook` (test machinery: the product carries no test branch).

A test writes a plan, JSON, to the file named by $ECOMTRAIN_FAULT_PLAN; each worker reads it
when it reports and when it writes a checkpoint, and kills itself (SIGKILL, no cleanup) once:

    {"rank": 1, "after_step": 5, "marker": PATH}        as it reports step 5's metrics
    {"rank": 1, "in_checkpoint": 6, "marker": PATH}     halfway through step 6's checkpoint

or, for a test that takes the worker's whole node away, writes its node id into the marker
and waits there (for the node to go, or for Ray Train to replace its worker group):

    {"rank": 1, "hold_at_step": 5, "marker": PATH}      before reporting step 5's metrics

A step's metrics are those of the first report at or after it: the loop reports training
metrics no more often than Ray Train takes them (loop.RayTrainRun.report_gap_s), so on fast
steps a log step may pass unreported; an evaluation step always reports.

A plan may also be a list of such faults, each with its own marker, and a fault may add
"world": N to happen only in a worker group of N workers. The marker file makes each happen
once per run, however often the run is retried.

A fault without "rank" happens on every rank; this one turns an adapter's weights into NaN
before it trains a step, on the adapter whose config has the given LoRA rank and train seed
(a member of a pack, or a run's only adapter), so its loss turns non-finite there:

    {"nan_at_step": 3, "lora_rank": 4, "seed": 2}
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import ray
import ray.train

PLAN = "ECOMTRAIN_FAULT_PLAN"


def _plan() -> list[dict]:
    try:
        plan = json.loads(Path(os.environ[PLAN]).read_text())
    except (KeyError, FileNotFoundError):
        return []
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    faults = plan if isinstance(plan, list) else [plan]
    return [f for f in faults if f.get("rank", rank) == rank and f.get("world", world) == world]


def _once(plan: dict) -> bool:
    marker = Path(plan["marker"])
    if marker.exists():
        return False
    marker.touch()
    return True


def _reached(fault: dict, key: str, metrics: dict) -> bool:
    return key in fault and metrics.get("step", -1) >= fault[key]


def install() -> None:
    """Wrap ray.train.report, the loop's save_checkpoint and an adapter's training step with
    the plan's faults."""
    import torch

    from ecomtrain.train import engine, loop

    report, save, train = ray.train.report, loop.save_checkpoint, loop.Member.train

    def faulty_report(metrics, *args, **kwargs):
        for fault in _plan():
            if _reached(fault, "after_step", metrics) and _once(fault):
                os.kill(os.getpid(), signal.SIGKILL)
            if _reached(fault, "hold_at_step", metrics) and _once(fault):
                Path(fault["marker"]).write_text(ray.get_runtime_context().get_node_id())
                time.sleep(600)  # until the test removes this node, or Ray Train this worker
        return report(metrics, *args, **kwargs)

    def faulty_save(path, eng, tokenizer, trial, state, rank, *rest):
        for fault in _plan():
            if fault.get("in_checkpoint") == state.step and _once(fault):
                engine.save_state(eng, str(path), client_state={"step": state.step})  # a part
                os.kill(os.getpid(), signal.SIGKILL)
        return save(path, eng, tokenizer, trial, state, rank, *rest)

    def faulty_train(member, step, *args, **kwargs):
        for fault in _plan():
            lora, seed = member.cfg.lora.rank, member.cfg.train.seed
            at = fault.get("nan_at_step")
            if (
                at is not None
                and step >= at
                and (lora, seed) == (fault["lora_rank"], fault["seed"])
            ):
                with torch.no_grad():
                    for p in member.engine.module.parameters():
                        if p.requires_grad:
                            p.fill_(float("nan"))
        return train(member, step, *args, **kwargs)

    ray.train.report = faulty_report
    loop.save_checkpoint = faulty_save
    loop.Member.train = faulty_train
