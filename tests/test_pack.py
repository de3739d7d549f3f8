"""Trials that share the base model (`sweep.pack`, ecomtrain.train.pack, tuning.pack).

Slow (Ray Train runs of the tiny model with 2 gloo workers, on a local 2-CPU Ray): three
trials that differ in LoRA rank, mixture (task subset or weights), seed and learning rate
train as a pack and each alone under ZeRO-3, 20 steps with an evaluation and a checkpoint at
step 10, a worker killed mid-run and every member resumed from the step-10 checkpoint; each
member's loss curve, adapter and per-record scores equal its solo run's. Then a sweep of four
trials (ranks and seeds) packed together against the same sweep unpacked, under ZeRO-2 (the
default): one trial stopped by the scheduler at its first evaluation leaves the pack, one
whose loss turns NaN is stopped and reported, and the others finish as they do alone.

Fast: the pack key (which trials share a run) and the packer (which trials start together).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from faults import PLAN
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from ecomtrain.config import load_config
from ecomtrain.train.pack import PACK_FILE, member_checkpoints, pack_key
from tuning.pack import Packer

TESTS = Path(__file__).resolve().parent
COMMON = [
    "train.max_steps=20",
    "train.eval_every=10",
    "train.log_every=5",
    "train.cpus_per_worker=0.5",
    "lora.dropout=0.1",  # each member's dropout masks are its own
    "data.max_eval_per_task=2",
    "eval.max_new_tokens=4",
    "wandb.mode=disabled",
]
# three trials: rank, mixture (a task subset, or task weights), seed and learning rate differ
MEMBERS = {
    "a": (["attribute_inference_mcq", "review_rating"], ["lora.rank=2", "train.seed=1"]),
    "b": (
        ["attribute_inference_mcq", "review_rating"],
        ["lora.rank=8", "lora.alpha=16", "train.seed=2", "data.seed=2", "train.lr=0.003"],
    ),
    "c": (
        ["review_rating", "product_ranking"],
        ["lora.rank=4", "train.seed=3", "data.task_weights={review_rating: 3.0}"],
    ),
}


# --- fast: which trials share a run, and when a pack starts -----------------------------------


def test_the_pack_key_ignores_what_members_keep_their_own():
    base = load_config(None, [])
    own = load_config(
        None,
        [
            "lora.rank=32",
            "lora.shape=per-task",
            "data.seed=5",
            "data.task_weights={review_rating: 2.0}",
            "data.max_seq_len=512",
            "train.seed=9",
            "train.lr=0.01",
            "train.micro_batch_size=2",
            "eval.max_new_tokens=3",
        ],
    )
    assert pack_key(base) == pack_key(own)
    for shared in (
        "train.zero_stage=3",
        "train.precision=bf16",
        "train.num_workers=4",
        "train.max_steps=7",
        "train.eval_every=5",
        "train.gradient_checkpointing=true",
        "model.attn_implementation=flash_attention_2",
        "model.quantization=nf4",
    ):
        assert pack_key(load_config(None, [shared])) != pack_key(base), shared


def ids(packs: list) -> list[list[str]]:
    return [[member for member, _ in pack] for pack in packs]


def test_the_packer_starts_full_packs_and_packs_apart_what_cannot_share():
    packer = Packer(size=3, wait_s=10.0, expected=7)
    started = []
    for i, (key, t) in enumerate([("z2", 0), ("z2", 1), ("z3", 2), ("z2", 3), ("z3", 4)]):
        started += packer.join(key, f"t{i}", None, now=float(t))
    assert ids(started) == [["t0", "t1", "t3"]]  # the first full pack; z3 trials wait apart
    assert packer.join("z2", "t5", None, now=9.0) == []
    assert packer.due(now=13.9) == []
    assert ids(packer.due(now=14.0)) == [["t2", "t4"]]  # 10 s since its last trial joined
    # the last trial the sweep will run joins: its group starts, not full
    assert ids(packer.join("z2", "t6", None, now=15.0)) == [["t5", "t6"]]
    assert packer.groups == {}


def test_the_packer_packs_fewer_when_fewer_trials_are_left():
    packer = Packer(size=8, wait_s=60.0, expected=3)
    assert packer.join("k", "a", None, 0.0) == [] and packer.join("k", "b", None, 0.0) == []
    assert ids(packer.join("k", "c", None, 0.0)) == [["a", "b", "c"]]
    unknown = Packer(size=8, wait_s=2.0)  # a resumed sweep: how many will come is unknown
    unknown.join("k", "a", None, 0.0)
    assert unknown.due(1.0) == [] and ids(unknown.due(2.0)) == [["a"]]
    gone = Packer(size=2, wait_s=2.0)
    gone.join("k", "a", None, 0.0)
    gone.drop("a")  # a trial that ended before its pack started
    assert gone.due(5.0) == [] and gone.groups == {}


def test_a_members_latest_checkpoint_is_found_among_the_pack_runs(tmp_path):
    """A resumed sweep's pack starts each member from its own latest checkpoint, whichever
    pack run wrote it."""
    for run, checkpoint, member, step in [
        ("pack-t1+t2", "checkpoint_1", "a", 10),
        ("pack-t1+t2", "checkpoint_1", "b", 10),
        ("pack-t1+t3", "checkpoint_2", "a", 20),
        ("pack-t1+t3", "checkpoint_0", "a", 5),
        ("a", "checkpoint_9", "a", 30),  # a single run's: not a pack's
    ]:
        folder = tmp_path / run / checkpoint / member
        folder.mkdir(parents=True)
        (folder / "ecomtrain_state.json").write_text(json.dumps({"step": step}))
    found = member_checkpoints(str(tmp_path), ["a", "b", "c"])
    assert found == {
        "a": str(tmp_path / "pack-t1+t3" / "checkpoint_2" / "a"),
        "b": str(tmp_path / "pack-t1+t2" / "checkpoint_1" / "b"),
    }
    assert member_checkpoints(str(tmp_path / "none"), ["a"]) == {}


# --- slow: exactness, fault recovery, the sweep ----------------------------------------------


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    return tmp_path_factory.mktemp("faults") / "plan.json"


@pytest.fixture(scope="module")
def cluster(plan):
    """A local 2-CPU Ray with the fault hooks of tests/faults.py in every worker process,
    and its dashboard's state API, through which Ray Train frees the workers of a run whose
    trial Tune stopped (as ecomtrain.connect sets a local cluster up)."""
    import ray

    from ecomtrain.connect import free_port

    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    port = free_port(8265)
    url = f"http://127.0.0.1:{port}"
    before = os.environ.get("RAY_API_SERVER_ADDRESS")
    os.environ["RAY_API_SERVER_ADDRESS"] = url
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=True,
        dashboard_port=port,
        log_to_driver=False,
        runtime_env={
            "env_vars": {"PYTHONPATH": path, PLAN: str(plan), "RAY_API_SERVER_ADDRESS": url},
            "worker_process_setup_hook": "faults.install",
        },
    )
    yield
    ray.shutdown()
    if before is None:
        os.environ.pop("RAY_API_SERVER_ADDRESS")
    else:
        os.environ["RAY_API_SERVER_ADDRESS"] = before


def member(key: str, *overrides: str):
    from ecomtrain.train.trial import TrialMeta

    tasks, own = MEMBERS[key]
    cfg = load_config(None, [*COMMON, f"data.tasks=[{', '.join(tasks)}]", *own, *overrides])
    return cfg, TrialMeta.of(f"member-{key}", key, tasks, cfg)


def solo(tmp_path: Path, key: str, *overrides: str) -> Path:
    from ecomtrain.train.driver import fit

    cfg, meta = member(key, *overrides)
    return Path(fit(cfg, meta, str(tmp_path / "solo")).checkpoint.path)


def packed(tmp_path: Path, name: str, *overrides: str) -> Path:
    """The pack of the three members, run `name` in storage `packs`: its last checkpoint."""
    from ecomtrain.train.driver import fit_pack

    members = [member(key, *overrides) for key in MEMBERS]
    return Path(fit_pack(members, name, str(tmp_path / "packs")).checkpoint.path)


def state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "ecomtrain_state.json").read_text())


def adapter(checkpoint: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(checkpoint / "adapter_model.safetensors")


def assert_as_alone(alone: Path, member: Path) -> float:
    """The member's curve (every step once), adapter and per-record scores are its solo
    run's; returns the largest difference seen (0.0: bit for bit)."""
    a, b = state(alone)["history"], state(member)["history"]
    assert [s for s, _ in b] == list(range(1, 21))
    gap = max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True))
    assert gap < 1e-5, f"loss differs by {gap}"
    mine, theirs = adapter(member), adapter(alone)
    assert mine.keys() == theirs.keys()
    for name in mine:
        gap = max(gap, float((mine[name] - theirs[name]).abs().max()))
    assert gap < 1e-5, f"adapter differs by {gap}"
    assert (member / "scores.jsonl").read_text() == (alone / "scores.jsonl").read_text()
    return gap


@pytest.mark.slow
def test_a_killed_worker_resumes_every_member_as_alone(cluster, plan, tmp_path):
    """ZeRO-3 (the base partitioned once and shared by the members' engines): rank 1 is
    killed as it reports step 12 or later; every member resumes from the step-10 checkpoint
    and still equals its solo run. The pack's checkpoint holds a folder per member in a
    single run's layout."""
    zero3 = ("train.zero_stage=3", "train.max_failures=2")
    alone = {key: solo(tmp_path, key, *zero3) for key in MEMBERS}
    marker = tmp_path / "fault-done"
    plan.write_text(json.dumps({"rank": 1, "after_step": 12, "marker": str(marker)}))
    try:
        pack = packed(tmp_path, "pack-zero3", *zero3)
    finally:
        plan.unlink()
    assert marker.exists()  # the worker was killed
    gaps = {}
    for key in MEMBERS:
        assert state(pack / f"member-{key}")["starts"] == [0, 10]
        gaps[key] = assert_as_alone(alone[key], pack / f"member-{key}")
    print(f"ZeRO-3 pack, resumed, vs alone, largest difference per member: {gaps}")
    layout = json.loads((pack / PACK_FILE).read_text())
    assert layout == {"members": [f"member-{k}" for k in MEMBERS], "left": {}}
    assert state(pack / "member-a")["report"]["score"] == pytest.approx(
        state(alone["a"])["report"]["score"]
    )
    # The same members in another pack run (as a resumed sweep forms its packs anew): each
    # starts from its latest checkpoint, at max_steps, and reports it again, training nothing.
    again = packed(tmp_path, "pack-zero3-again", *zero3)
    for key in MEMBERS:
        assert state(again / f"member-{key}") == state(pack / f"member-{key}")


class StopOneAtItsFirstEvaluation(FIFOScheduler):
    """Stops the trial of rank 2 and seed 2 at its first evaluation (a result with a score),
    as ASHA stops a trial at a rung; the others run out."""

    def on_trial_result(self, tune_controller, trial, result):
        if (trial.config["rank"], trial.config["seed"]) == (2, 2) and "score" in result:
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE


def sweep(tmp_path: Path, pack: int) -> dict:
    """The 4-trial sweep (ranks 2, 4 x seeds 1, 2), by (rank, seed): its Tune results."""
    from ecomtrain.train.driver import prepare
    from tuning.run import run_sweep

    cfg = load_config(
        None,
        [
            *COMMON,
            "sweep.subsets={pair: [attribute_inference_mcq, review_rating]}",
            "sweep.ranks=[2, 4]",
            "sweep.seeds=[1, 2]",
            "sweep.scheduler=asha",  # a stopped trial's process is ended, not reused
            "sweep.grace_period=10",
            f"sweep.pack={pack}",
            f"sweep.name=pack{pack}",
        ],
    )
    storage = str(tmp_path / f"pack{pack}")
    results = run_sweep(cfg, storage, str(tmp_path / "local"), prepared=prepare(cfg))
    return {(r.config["rank"], r.config["seed"]): r for r in results}


def checkpoint_of(result) -> Path:
    return Path(result.metrics["checkpoint_path"])


@pytest.mark.slow
def test_a_packed_sweep_stops_and_fails_members_as_an_unpacked_one(
    cluster, plan, tmp_path, monkeypatch
):
    """Four trials packed in one run and the same sweep one run per trial: the trial the
    scheduler stops at its first evaluation (step 10) leaves the pack, the one whose weights
    turn NaN before step 3 fails with that step, and the two others finish; every trial's
    curve and scores are its unpacked twin's."""
    import tuning.run

    monkeypatch.setattr(tuning.run, "scheduler", lambda cfg: StopOneAtItsFirstEvaluation())
    plan.write_text(json.dumps({"nan_at_step": 3, "lora_rank": 4, "seed": 2}))
    try:
        alone, packed = sweep(tmp_path, 1), sweep(tmp_path, 4)
    finally:
        plan.unlink()
    for results in (alone, packed):
        assert "non-finite loss at step 3" in str(results[4, 2].error)
        assert results[2, 2].metrics["step"] == 10 and results[2, 2].error is None
        for point in [(2, 1), (4, 1)]:
            assert results[point].metrics["step"] == 20 and results[point].error is None
    for point in [(2, 1), (4, 1), (2, 2)]:
        a, b = checkpoint_of(alone[point]), checkpoint_of(packed[point])
        assert state(b)["history"] == state(a)["history"], point
        assert (b / "scores.jsonl").read_text() == (a / "scores.jsonl").read_text(), point
    # one run trained the four; the trial that was stopped and the one that failed left it
    last = checkpoint_of(packed[2, 1]).parent
    assert last == checkpoint_of(packed[4, 1]).parent and last.parent.name.startswith("pack-")
    layout = json.loads((last / PACK_FILE).read_text())
    names = {point: r.metrics["trial_id"] for point, r in packed.items()}
    assert sorted(layout["left"].values()) == ["failed", "stopped"]
    assert len(layout["members"]) == 2 and all(n in last.parent.name for n in names.values())
