"""`ray job submit -- python -m ecomtrain.sweep` against a local `ray start --head`, token auth
on: a 4-trial sweep runs as a job, and the cluster it ran on is left as it was found (no
temporary file, object or open file more)."""

import csv
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from footprint import assert_left_nothing, cluster_services, footprint

from ecomtrain.connect import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOG_CAP = 50  # worker logs Ray's log monitor keeps open at most (its default: 200)


@pytest.mark.slow
def test_ray_job_submit_runs_the_sweep(tmp_path, ecomtrain_cache):
    gcs, dash, agent = free_port(0), free_port(0), free_port(0)
    home = tmp_path / "home"  # a private ~/.ray/auth_token
    home.mkdir()
    tmp = Path(tempfile.mkdtemp(prefix="et-", dir="/tmp"))  # short: Ray's socket paths
    env = {
        **os.environ,
        "HOME": str(home),
        "TMPDIR": str(tmp),  # the temporary folder of every process but Ray's session files
        "RAY_TMPDIR": "/tmp",
        "RAY_LOG_MONITOR_MAX_OPEN_FILES": str(LOG_CAP),
        "PATH": f"{BIN}:{os.environ['PATH']}",  # the job's `python` is this environment's
        "ECOMTRAIN_CACHE": str(ecomtrain_cache),
        "WANDB_MODE": "offline",
    }
    for key in ("RAY_ADDRESS", "WANDB_API_KEY", "RAY_AUTH_MODE"):
        env.pop(key, None)
    subprocess.run(
        [BIN / "ray", "get-auth-token", "--generate"],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert (home / ".ray" / "auth_token").is_file()
    head = subprocess.Popen(
        [
            BIN / "ray",
            "start",
            "--head",
            "--block",
            "--num-cpus=2",
            f"--port={gcs}",
            f"--dashboard-port={dash}",
            f"--dashboard-agent-listen-port={agent}",  # not 52365: another cluster may hold it
            "--include-dashboard=true",
        ],
        env={**env, "RAY_AUTH_MODE": "token"},
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        address = f"http://127.0.0.1:{dash}"
        _wait_for_dashboard(dash)
        token = {**env, "RAY_AUTH_MODE": "token"}
        # torch's cache folder, which importing peft makes once on a machine: as if made before
        (tmp / f"torchinductor_{getpass.getuser()}").mkdir()
        services = cluster_services(psutil.Process(head.pid))
        out = tmp_path / "sweep"
        submit = [
            BIN / "ray",
            "job",
            "submit",
            "--address",
            address,
            "--",
            "python",
            "-m",
            "ecomtrain.sweep",
            "--output",
            str(out),
            "sweep.name=job",
            "train.max_steps=2",
            "train.num_workers=1",
            "train.eval_every=0",
            "data.max_eval_per_task=1",
            "sweep.max_concurrent_trials=2",
            "sweep.ranks=[2, 8]",
            "sweep.seeds=[0]",
            "sweep.subsets={pair: [attribute_inference_mcq, query_ner],"
            " trio: [attribute_inference_mcq, query_ner, review_rating]}",
        ]
        no_token = subprocess.run(
            submit, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert no_token.returncode != 0  # token auth is on: a client without it is refused
        start = footprint(tmp, services, _objects(gcs, token))
        for _ in range(12):  # the head's job agent may start after its dashboard
            proc = subprocess.run(
                submit,
                env=token,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=900,
            )
            if "No available agent" not in proc.stderr:
                break
            time.sleep(5)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "succeeded" in proc.stdout
        time.sleep(5)  # the finished job's workers and objects are released
        end = footprint(tmp, services, _objects(gcs, token))
        print(f"cluster before the job: {start}\nafter it: {end}")
        # Ray's dashboard agent keeps more files open after a job, its GCS more after each
        # trial (cluster/README.md; plain tasks and actors leave about one): bounded at 40 a
        # job and 8 a trial
        assert_left_nothing(start, end, log_cap=LOG_CAP, fds_slack=40 + 8 * 4)
        with open(out / "trials.csv") as f:
            rows = list(csv.DictReader(f))
        points = [(s, r, "0") for s in ("pair", "trio") for r in "28"]
        assert sorted((r["subset"], r["rank"], r["seed"]) for r in rows) == points
        assert all(0.0 <= float(r["score"]) <= 1.0 for r in rows)
        report = (out / "report.md").read_text()
        assert "| pair |" in report and "| trio |" in report  # the subset x rank table
        assert len(list(out.glob("*.png"))) >= 2
        runs = list((out / "wandb").glob("offline-run-*"))
        assert len(runs) == 5  # one per trial and the sweep's summary run
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # --block: ray start stops what it started
        head.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


def _objects(gcs: int, env: dict) -> int:
    """Ray objects in the cluster, counted by a client with the cluster's token."""
    count = (
        "from ray.util.state import list_objects; "
        f"print(len(list_objects(address='127.0.0.1:{gcs}', limit=10_000, "
        "raise_on_missing_output=False)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", count], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split()[-1])


def _wait_for_dashboard(port: int, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                time.sleep(3)
                return
        time.sleep(1)
    raise TimeoutError(f"Ray dashboard did not come up on port {port}")
