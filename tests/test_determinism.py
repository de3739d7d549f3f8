"""Same config and seed, same run, bit for bit, on CPU: two replicates of one point in a
sweep (`sweep.seeds=[1, 1]`) and a separate single run give the same loss curve, the same
held-out score and the same per-record scores; the run started again when its last
checkpoint is already at max_steps reports that checkpoint's score again."""

import csv
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
TASKS = "[attribute_inference_mcq, review_rating]"
SAME = [
    "train.max_steps=6",
    "train.log_every=3",
    "data.max_eval_per_task=3",
    "lora.rank=4",
    "lora.alpha=8.0",
    "train.seed=1",
    "data.seed=1",
    "wandb.mode=disabled",
]


def outcome(checkpoint: Path) -> tuple:
    state = json.loads((checkpoint / "ecomtrain_state.json").read_text())
    scores = (checkpoint / "scores.jsonl").read_text()
    return state["history"], scores


def test_replicates_and_a_single_run_are_identical(tmp_path, run_cli):
    sweep = tmp_path / "sweep"
    run_cli(
        "ecomtrain.sweep",
        "--output",
        str(sweep),
        f"sweep.subsets={{pair: {TASKS}}}",
        "sweep.ranks=[4]",
        "sweep.seeds=[1, 1]",
        *SAME,
    )
    with open(sweep / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["seed"] for r in rows] == ["1", "1"]
    first, second = (outcome(Path(r["checkpoint"])) for r in rows)
    assert rows[0]["score"] == rows[1]["score"] and first == second
    single = tmp_path / "single"
    proc = run_cli("ecomtrain.train", "--output", str(single), f"data.tasks={TASKS}", *SAME)
    # a single run's console: its own progress lines, not Ray Train's per-rank report dicts
    # or the libraries' prints and INFO lines
    console = proc.stdout + proc.stderr
    for noise in ("TrainingReport(", "built successfully", "default tokenizer", "Warning"):
        assert noise not in console, console
    assert "train  step 6/6  loss" in console
    (checkpoint,) = (p for p in single.glob("train/checkpoint_*") if p.is_dir())
    history, scores = outcome(checkpoint)
    assert history == first[0]  # the same loss curve, bit for bit
    assert scores == first[1]  # the same score of every held-out record
    said = [line for line in proc.stdout.splitlines() if line.startswith("score ")]
    assert said and said[-1].split()[1] == rows[0]["score"]
    again = run_cli("ecomtrain.train", "--output", str(single), f"data.tasks={TASKS}", *SAME)
    said = [line for line in again.stdout.splitlines() if line.startswith("score ")]
    assert said and said[-1].split()[1] == rows[0]["score"], again.stdout
    latest = Path(said[-1].split("adapter ")[1])
    assert latest != checkpoint and outcome(latest) == (history, scores)
    # nothing trained again: the state, its clock of every step's end included, is the same
    state = "ecomtrain_state.json"
    assert (latest / state).read_text() == (checkpoint / state).read_text()
