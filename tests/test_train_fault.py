"""Ray Train runs on a 3-node cluster on this machine (Ray's own `cluster_utils.Cluster`: a
head and two worker nodes, each worker on its own node): exact resume after a killed worker
(with dropout) of a routed adapter (ecomtrain.experts) killed while writing a checkpoint,
and of a single LoRA after a whole node is lost, both under ZeRO-3; an elastic run that
goes on with one worker when a node is lost and grows back to two; the NaN guard; nothing left in the temporary folder; extra eval files. Each test fine-tunes
the tiny model with 2 gloo workers for a few steps; faults are injected from
tests/faults.py."""

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import ray
from faults import PLAN
from peft import PeftModel
from ray.cluster_utils import Cluster

from ecomtrain.config import load_config
from ecomtrain.experts import experts_of
from ecomtrain.model import base_model_of, load_adapter, load_model
from ecomtrain.train.driver import extra_eval_rows, fit
from ecomtrain.train.trial import TrialMeta

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent

TASKS = ["attribute_inference_mcq", "review_rating"]
FAST = [
    "train.log_every=1",
    "train.eval_every=3",
    "train.max_steps=8",
    "data.max_eval_per_task=1",
    f"eval.tasks=[{', '.join(TASKS)}]",
    "eval.max_new_tokens=4",
    "train.worker_resources={trainer: 1}",  # one worker on each worker node
]
NODE = {"num_cpus": 1, "resources": {"trainer": 1}}  # a worker node


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    """The fault plan file, and the workers' own temporary folder (TMPDIR)."""
    return tmp_path_factory.mktemp("faults") / "plan.json", tmp_path_factory.mktemp("tmp")


@pytest.fixture(scope="module")
def cluster(workdirs):
    """The cluster: a head (the driver, the trials' data tasks) and two worker nodes."""
    plan, tmp = workdirs
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": path, PLAN: str(plan), "TMPDIR": str(tmp)}
    # After a node is lost, Ray Train's view of the free resources lags: an elastic run first
    # tries its old size and waits this long for it (60 s by default) before going smaller.
    env["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = "30"
    nodes = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    for _ in range(2):
        nodes.add_node(**NODE)
    ray.init(
        address=nodes.address,
        log_to_driver=False,
        runtime_env={"env_vars": env, "worker_process_setup_hook": "faults.install"},
    )
    yield nodes
    ray.shutdown()
    nodes.shutdown()


def inject(workdirs, tmp_path, **fault) -> None:
    """Plan one fault for the next run (see tests/faults.py)."""
    workdirs[0].write_text(json.dumps(fault | {"marker": str(tmp_path / "fault-done")}))


def run(tmp_path: Path, name: str, *overrides: str):
    cfg = load_config(None, [*FAST, *overrides])
    return fit(cfg, TrialMeta.of(name, "pair", TASKS, cfg), str(tmp_path))


def state(result) -> dict:
    return json.loads((Path(result.checkpoint.path) / "ecomtrain_state.json").read_text())


def history(result) -> list:
    return state(result)["history"]


def assert_same_curve(clean: list, resumed) -> None:
    """Every step once, none repeated or skipped, each loss within 1e-5 of the undisturbed
    run's (what docs/fault-tolerance.md claims; bit-equality is not asserted)."""
    assert [s for s, _ in history(resumed)] == list(range(1, 9))
    for (s, a), (_, b) in zip(clean, history(resumed), strict=True):
        assert abs(a - b) < 1e-5, f"step {s}: {a} vs {b}"
    gap = max(abs(a - b) for (_, a), (_, b) in zip(clean, history(resumed), strict=True))
    print(f"resume: attempts began at steps {state(resumed)['starts']}, max |loss diff| {gap:.1e}")
    assert resumed.metrics["step"] == 8 and "score" in resumed.metrics


DROPOUT = "lora.dropout=0.1"  # the resumed masks must be the same: seeded per micro-batch
ZERO3 = "train.zero_stage=3"
ZERO0 = "train.zero_stage=0"  # elastic runs need it (a ZeRO checkpoint reloads at one world size)


def extra_eval_file(tmp_path: Path) -> tuple[Path, int]:
    """A small extra eval file (demo records of the trial's tasks) and its record count."""
    from ecomtrain.data.demo import demo_records

    extra = tmp_path / "extra.jsonl"
    records = [r for r in demo_records(per_task=3) if r["task_name"] in TASKS]
    extra.write_text("".join(json.dumps(r) + "\n" for r in records))
    return extra, len(records)


# A worker killed: of a routed adapter (ecomtrain.experts); a single LoRA's worker is lost
# with its whole node in the next test.
ROUTED = ("lora.match_params=true", "lora.target_modules=[q_proj, v_proj]")


def test_killed_worker_resumes_exactly(cluster, workdirs, tmp_path):
    """Rank 1 of a per-capability adapter under ZeRO-3 is killed while it writes its step-6
    checkpoint, which is then never complete: the run resumes from step 3. Also: an
    undisturbed run leaves nothing in the workers' temporary folder (a worker killed by
    SIGKILL cannot clean up after itself), and an extra eval file is scored with every
    evaluation. (`moe` saves, loads and resumes through the same ExpertsLinear state.)"""
    fault, starts = {"rank": 1, "in_checkpoint": 6}, [0, 3]
    shape = ("lora.shape=per-capability", ZERO3, *ROUTED)
    extra = extra_eval_file(tmp_path)
    shape = (*shape, f"eval.extra_files=[{extra[0]}]")
    before = set(workdirs[1].iterdir())
    clean = history(run(tmp_path, "clean", DROPOUT, *shape))
    left = sorted(p.name for p in set(workdirs[1].iterdir()) - before)
    assert not left, f"left in the workers' TMPDIR: {left}"
    inject(workdirs, tmp_path, **fault)
    # max_failures 2: under heavy load Ray can also fail a health check while recovering
    resumed = run(tmp_path, "killed", DROPOUT, "train.max_failures=2", *shape)
    workdirs[0].unlink()
    assert (tmp_path / "fault-done").exists()  # the fault did happen
    assert state(resumed)["starts"][:2] == starts  # resumed from the last complete checkpoint
    assert_same_curve(clean, resumed)
    m = resumed.metrics
    assert 0.0 <= m["extra/score"] <= 1.0 and m["extra/eval_records"] == extra[1]
    assert {f"extra/task/{t}" for t in TASKS} <= set(m)
    # the routed adapter was saved whole (gathered under ZeRO-3), trained, and loads
    adapter = Path(resumed.checkpoint.path)
    model = load_adapter(load_model(base_model_of(adapter)), adapter)
    assert model.ecomtrain_experts["shape"] == shape[0].partition("=")[2]
    assert all(m.lora_B.abs().sum() > 0 for m in experts_of(model))


def test_a_lost_node_resumes_on_a_node_added_afterwards(cluster, workdirs, tmp_path):
    """The node of rank 1 is removed (its processes killed, not shut down) once it has taken
    step 5, with the step-3 checkpoint in the run's storage. The run waits for a node that offers a
    `trainer`; one is added, and the run resumes on it from step 3 with the same loss curve
    as an undisturbed run. While the node is gone, the workers' local temporary folder (the
    only disk a worker writes a checkpoint to before Ray Train copies it to the storage) is
    emptied: nothing the resume needs may be there. A single LoRA under ZeRO-3: the adapter
    saved is gathered whole from the partitions."""
    clean = history(run(tmp_path, "clean", DROPOUT, ZERO3))
    inject(workdirs, tmp_path, rank=1, hold_at_step=5)
    out: dict = {}
    overrides = (DROPOUT, ZERO3, "train.max_failures=2")
    trainer = threading.Thread(target=lambda: out.update(result=run(tmp_path, "lost", *overrides)))
    trainer.start()
    # rank 1 writes its node's id into the marker, then waits
    node = cluster_node(cluster, wait_for_text(tmp_path / "fault-done"))
    cluster.remove_node(node, allow_graceful=False)
    while ray.cluster_resources().get("trainer", 0) > 1:  # the cluster knows it is gone
        time.sleep(0.5)
    for child in workdirs[1].iterdir():
        shutil.rmtree(child, ignore_errors=True)
    time.sleep(5)  # the run cannot resume with one node offering a trainer
    assert trainer.is_alive() and "result" not in out
    cluster.add_node(**NODE)
    trainer.join(timeout=900)
    workdirs[0].unlink()
    resumed = out["result"]
    assert state(resumed)["starts"][:2] == [0, 3]
    assert_same_curve(clean, resumed)
    adapter = Path(resumed.checkpoint.path)
    assert json.loads((adapter / "ecomtrain_trial.json").read_text())["name"] == "lost"
    model = PeftModel.from_pretrained(load_model(base_model_of(adapter)), adapter)
    lora = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora and all(p.numel() > 0 for p in lora)  # gathered, not ZeRO-3 placeholders
    assert any(p.abs().sum() > 0 for p in lora)  # trained (lora_B starts at zero)


def test_an_elastic_run_goes_on_with_fewer_workers_and_grows_back(cluster, workdirs, tmp_path):
    """`train.num_workers: [1, 2]`: the node of rank 1 is removed once it has taken step 5;
    the run does not wait for another node but resumes from step 3 with one worker (which
    then trains both shares, with twice the gradient accumulation), and when a node is
    added while that worker holds at step 7, Ray Train grows the run back to two workers,
    from step 6. Every step trains on the records and tokens of an undisturbed fixed run of
    two workers (the state's records ledger), and its loss is that run's (dropout masks are
    drawn per micro-batch, not per worker). ZeRO-0, as elastic runs need."""
    clean = run(tmp_path, "clean", DROPOUT, ZERO0)
    shrink, grow = tmp_path / "shrink", tmp_path / "grow"
    plan = [
        {"rank": 1, "world": 2, "hold_at_step": 5, "marker": str(shrink)},
        {"rank": 0, "world": 1, "hold_at_step": 7, "marker": str(grow)},
    ]
    workdirs[0].write_text(json.dumps(plan))
    elastic = (ZERO0, "train.num_workers=[1, 2]", "train.resize_check_s=1", "train.max_failures=2")
    out: dict = {}
    trainer = threading.Thread(
        target=lambda: out.update(result=run(tmp_path, "elastic", DROPOUT, *elastic))
    )
    trainer.start()
    node = cluster_node(cluster, wait_for_text(shrink))
    cluster.remove_node(node, allow_graceful=False)
    wait_for_text(grow)  # one worker has gone on to step 7 on the node that remained
    assert ray.cluster_resources().get("trainer", 0) == 1
    cluster.add_node(**NODE)
    trainer.join(timeout=900)
    workdirs[0].unlink()
    resumed = out["result"]
    assert state(resumed)["starts"] == [0, 3, 6]
    assert state(resumed)["workers"] == [2, 1, 2]
    assert state(resumed)["ledger"] == state(clean)["ledger"]  # same records, every step
    assert_same_curve(history(clean), resumed)


def wait_for_text(path: Path, timeout: float = 600) -> str:
    """The text a held worker writes into its marker (its node's id)."""
    deadline = time.time() + timeout
    while not (path.exists() and path.read_text()) and time.time() < deadline:
        time.sleep(0.5)
    return path.read_text()


def cluster_node(cluster, node_id: str):
    return next(n for n in cluster.worker_nodes if n.node_id == node_id)


def test_non_finite_loss_stops_the_run(cluster, tmp_path):
    import torch

    from ecomtrain.base_model import resolve_model
    from ecomtrain.config import ModelConfig
    from ecomtrain.model import load_tokenizer

    tiny = resolve_model(ModelConfig())
    broken = load_model(tiny)  # a corrupt checkpoint: one NaN in the final norm
    with torch.no_grad():
        broken.model.norm.weight[0] = float("nan")
    broken.save_pretrained(tmp_path / "nan-model")
    load_tokenizer(tiny).save_pretrained(tmp_path / "nan-model")
    with pytest.raises(Exception, match=r"trial nan: non-finite loss at step 1"):
        run(tmp_path, "nan", f"model.name_or_path={tmp_path / 'nan-model'}")


def test_bad_extra_eval_file_is_named(tmp_path):
    from ecomtrain.data.records import CorpusError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input_field": "q", "output_field": 1, "task_type": "ranking"}\n')
    cfg = load_config(None, [f"eval.extra_files=[{bad}]"])
    with pytest.raises(CorpusError, match=r"bad.jsonl:1: "):
        extra_eval_rows(cfg)
