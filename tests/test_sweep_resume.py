"""A sweep on a 3-node cluster loses a node, then its driver, and finishes: the trial whose
worker was on the node resumes from its checkpoint while the other runs on; after the driver
is killed, `--resume DIR` does not re-run finished trials and continues the unfinished one
from its checkpoint. On S3 storage (`--output s3://bucket/prefix`), against a local
S3-compatible server (moto) on 127.0.0.1: checkpoints, config.yaml, trials.csv, the
report and the best adapter land in the bucket."""

import contextlib
import csv
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow.fs as pafs
import pytest
import ray
from footprint import assert_left_nothing, cluster_services, footprint
from ray.util.state import list_objects

from ecomtrain.connect import free_port

ROOT = Path(__file__).resolve().parent.parent
TASKS = "[attribute_inference_mcq, review_rating]"


def _read(fs, path: str) -> str | None:
    try:
        with fs.open_input_stream(path) as f:
            return f.read().decode()
    except OSError:  # not found, or unreadable
        return None


def _trials(fs, root: str) -> list[str]:
    found = fs.get_file_info(pafs.FileSelector(f"{root}/train", allow_not_found=True))
    return sorted(i.path for i in found if i.base_name.startswith("pair-"))


def _state(fs, trial: str) -> dict | None:
    found = fs.get_file_info(pafs.FileSelector(trial, recursive=True))
    states = sorted(i.path for i in found if i.base_name == "ecomtrain_state.json")
    return json.loads(_read(fs, states[-1])) if states else None


def _registered_step(fs, trial: str) -> int:
    """Last step whose checkpoint Ray Train has registered (what a resumed run restores)."""
    try:
        snapshot = json.loads(_read(fs, f"{trial}/checkpoint_manager_snapshot.json") or "")
    except json.JSONDecodeError:
        return 0
    return max((int(c["metrics"]["step"]) for c in snapshot["checkpoint_results"]), default=0)


@pytest.fixture
def s3(monkeypatch):
    """A moto S3 server on 127.0.0.1 with bucket "sweeps"; the AWS settings every process
    (driver, Ray workers) reads to reach it, as cluster/README.md describes."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    settings = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    fs = pafs.S3FileSystem(
        endpoint_override=settings["AWS_ENDPOINT_URL"], allow_bucket_creation=True
    )
    fs.create_dir("sweeps")
    yield "s3://sweeps/resume"
    server.stop()


def _kill_tree(pid: int) -> None:
    parent = psutil.Process(pid)
    for proc in [*parent.children(recursive=True), parent]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


@contextlib.contextmanager
def three_nodes(tmp: Path):
    """A head (the sweep's trial drivers, which `sweep.driver_resources` keeps on it, and
    the data tasks) and two worker nodes offering one `trainer` each; this process joins it
    to watch its resources. Its processes inherit the environment: the S3 settings, and
    `tmp` as the temporary folder of every process but Ray's own session files."""
    from ray.cluster_utils import Cluster

    saved = {k: os.environ.get(k) for k in ("TMPDIR", "RAY_TMPDIR")}
    os.environ.update(TMPDIR=str(tmp), RAY_TMPDIR="/tmp")
    cluster = None
    try:
        head = {"num_cpus": 1, "resources": {"driver": 10}, "include_dashboard": True}
        # a free dashboard port: a cluster an earlier test stopped may still hold Ray's 8265
        cluster = Cluster(
            initialize_head=True, head_node_args=head | {"dashboard_port": free_port(8265)}
        )
        for _ in range(2):
            cluster.add_node(**NODE)
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.update({key: value})


def objects() -> int:
    """Ray objects in the cluster this process joined."""
    return len(list_objects(limit=10_000, raise_on_missing_output=False))


NODE = {"num_cpus": 1, "resources": {"trainer": 1}}


def _wait(what: str, ready, timeout: float = 900):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := ready():
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


# Each variant takes about 8 minutes on 2 cores. The bucket runs by default: the same
# resume path (Tune's restore, each trial's checkpoint) plus cloud paths;
# ECOMTRAIN_LOCAL_RESUME=1 adds a local --output.
@pytest.mark.slow
@pytest.mark.parametrize(
    "storage",
    [
        pytest.param(
            "local",
            marks=pytest.mark.skipif(
                not os.environ.get("ECOMTRAIN_LOCAL_RESUME"), reason="set ECOMTRAIN_LOCAL_RESUME=1"
            ),
        ),
        "s3",
    ],
)
def test_a_sweep_loses_a_node_and_its_driver_and_finishes(storage, tmp_path, request):
    """Three trials, two at a time, one worker each on its own node of a 3-node cluster.
    Once both have a checkpoint, a worker node is removed (its processes killed) and a new
    one added: the trial whose worker was there resumes from its last checkpoint, the other
    runs on untouched. When both are done and the third has a checkpoint, the sweep's driver
    is killed; `--resume` does not re-run the finished trials, continues the third from its
    checkpoint, and writes trials.csv and the report, all in the run's storage."""
    out = request.getfixturevalue("s3") if storage == "s3" else str(tmp_path / "sweep")
    fs, root = pafs.FileSystem.from_uri(out)
    tmp = Path(tempfile.mkdtemp(prefix="et-", dir="/tmp"))  # short: Ray's socket paths
    with three_nodes(tmp) as cluster:
        env = {**os.environ, "WANDB_MODE": "offline"}
        env.pop("RAY_ADDRESS", None)
        services = cluster_services(psutil.Process())
        start = footprint(tmp, services, objects())
        sweep = [sys.executable, "-m", "ecomtrain.sweep", "--address", cluster.address]
        driver = subprocess.Popen(
            [*sweep, "--output", out, *SWEEP],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def steps() -> dict[str, int]:
            assert driver.poll() is None, "the sweep's driver ended early"
            return {t: _registered_step(fs, t) for t in _trials(fs, root)}

        _wait("two trials with a checkpoint", lambda: sum(s >= 3 for s in steps().values()) == 2)
        cluster.remove_node(next(iter(cluster.worker_nodes)), allow_graceful=False)
        _wait("the cluster to lose the node", lambda: ray.cluster_resources().get("trainer") == 1)
        cluster.add_node(**NODE)
        first = _wait(
            "two finished trials and a third with a checkpoint", lambda: _two_done(steps())
        )
        time.sleep(2)  # let Tune persist the experiment state
        _kill_tree(driver.pid)
        driver.wait(timeout=60)
        finished = {t: _state(fs, t) for t in first}
        before = footprint(tmp, services, objects())  # killed processes leave what they leave
        resume = [*sweep, "--resume", out]
        proc = subprocess.run(
            resume, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        time.sleep(5)  # the finished job's objects and workers are released
        after = footprint(tmp, services, objects())
    print(f"cluster at the start: {start}\nbefore --resume: {before}\nafter it: {after}")
    # a sweep that ends leaves no temporary file, no object and no open file behind
    assert_left_nothing(before | {"objects": start["objects"]}, after)  # +10 fds seen

    # not trained again: the same state (step clock, losses, starts). A finished trial that
    # Tune had not yet recorded as finished when its driver went is started again, restores
    # its checkpoint at max_steps and reports it again (a new checkpoint of the same state).
    assert {t: _state(fs, t) for t in first} == finished
    starts = sorted(_state(fs, t)["starts"] for t in first)
    assert starts[0] == [0] and len(starts[1]) == 2 and starts[1][1] >= 3, starts  # one hit
    third = next(t for t in _trials(fs, root) if t not in first)
    resumed = _state(fs, third)
    assert resumed["step"] == 9 and resumed["starts"][0] == 0 and resumed["starts"][-1] >= 3
    for trial in _trials(fs, root):
        assert [s for s, _ in _state(fs, trial)["history"]] == list(range(1, 10))
    rows = list(csv.DictReader(io.StringIO(_read(fs, f"{root}/trials.csv"))))
    assert len(rows) == 3 and all(r["score"] != "" for r in rows)
    assert sorted((int(r["rank"]), float(r["alpha"])) for r in rows) == [
        (2, 4.0),
        (4, 8.0),
        (8, 16.0),
    ]
    published = ("config.yaml", "report.md", "report.html", "analysis.json", "baseline.jsonl")
    # the best trial's adapter too, copied from its checkpoint in the bucket
    for name in (*published, "best-adapter/adapter_config.json", "best-adapter/README.md"):
        assert _read(fs, f"{root}/{name}"), name
    # every trial's checkpoints and per-record scores are in the run's storage
    assert all(r["checkpoint"].startswith(out) for r in rows)
    assert all(
        _read(fs, f"{pafs.FileSystem.from_uri(r['checkpoint'])[1]}/scores.jsonl") for r in rows
    )
    if storage == "s3":
        assert _read(fs, f"{root}/ray-logs") is None  # the logs link stays on the machine


def _two_done(steps: dict[str, int]) -> list[str]:
    """The two finished trials, once a third has a checkpoint."""
    done = [t for t, s in steps.items() if s == 9]
    return done if len(done) == 2 and any(3 <= s < 9 for s in steps.values()) else []


SWEEP = [
    "sweep.name=resume",
    "train.max_steps=9",
    "train.grad_accum=16",  # steps of ~1 s: the node (and the driver) go while a trial trains
    "train.log_every=1",
    "train.eval_every=3",
    "sweep.ranks=[2, 4, 8]",
    "sweep.max_concurrent_trials=2",
    f"sweep.subsets={{pair: {TASKS}}}",
    f"eval.tasks={TASKS}",
    "data.max_eval_per_task=1",
    "eval.max_new_tokens=4",
    "train.num_workers=1",
    "train.worker_resources={trainer: 1}",  # each trial's worker on a node of its own
    "sweep.driver_resources={driver: 0.01}",  # trial drivers on the head, which stays
    "train.max_failures=2",
]
