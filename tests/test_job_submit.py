"""`ray job submit -- python -m ecomtrain.sweep` against a local `ray start --head`, token auth on."""

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecomtrain.connect import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_ray_job_submit_runs_the_sweep(tmp_path, ecomtrain_cache):
    gcs, dash, agent = free_port(0), free_port(0), free_port(0)
    home = tmp_path / "home"  # a private ~/.ray/auth_token
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
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
            "train.max_steps=4",
            "train.eval_every=0",
            "data.max_eval_per_task=2",
            "sweep.ranks=[2]",
            "sweep.subsets={pair: [attribute_inference_mcq, query_ner],"
            " trio: [attribute_inference_mcq, query_ner, review_rating]}",
        ]
        no_token = subprocess.run(
            submit, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert no_token.returncode != 0  # token auth is on: a client without it is refused
        for _ in range(12):  # the head's job agent may start after its dashboard
            proc = subprocess.run(
                submit,
                env={**env, "RAY_AUTH_MODE": "token"},
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
        with open(out / "trials.csv") as f:
            rows = list(csv.DictReader(f))
        points = {("pair", "2"), ("trio", "2")}
        assert {(r["subset"], r["rank"]) for r in rows} == points
        assert all(0.0 <= float(r["score"]) <= 1.0 for r in rows)
        report = (out / "report.md").read_text()
        assert "| pair |" in report and "| trio |" in report  # the subset x rank table
        assert len(list(out.glob("*.png"))) >= 2
        runs = list((out / "wandb").glob("offline-run-*"))
        assert len(runs) == 3  # one per trial and the sweep's summary run
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # --block: ray start stops what it started
        head.wait(timeout=60)


def _wait_for_dashboard(port: int, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                time.sleep(3)
                return
        time.sleep(1)
    raise TimeoutError(f"Ray dashboard did not come up on port {port}")
