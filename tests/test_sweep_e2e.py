"""End to end: the sweep CLI on a local Ray cluster, with every real component.

Ray Data -> Ray Train (2 gloo workers, DeepSpeed ZeRO-2, PEFT LoRA) -> ShopBench scoring ->
Ray Tune -> W&B (offline). Two trials, a few steps each.
"""

import csv
import json
from pathlib import Path

from wandb_files import runs as wandb_runs


def test_sweep_cli_end_to_end(tmp_path, run_cli):
    out = tmp_path / "sweep"
    out.mkdir()  # an older sweep's baseline, on other records, must not be reused
    (out / "baseline.jsonl").write_text(json.dumps({"id": "older:1", "score": 1.0}) + "\n")
    proc = run_cli(
        "ecomtrain.sweep",
        "--output",
        str(out),
        "train.max_steps=4",
        "train.log_every=2",
        "train.eval_every=2",  # a score at step 2 too, for the ASHA replay below
        "sweep.name=e2e",
        "sweep.ranks=[2, 8]",
        "sweep.subsets={pair: [attribute_inference_mcq, review_rating]}",
        "data.max_eval_per_task=2",
    )

    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["subset"], r["rank"]) for r in rows] == [("pair", "2"), ("pair", "8")]
    for r in rows:
        assert 0.0 <= float(r["score"]) <= 1.0
        assert float(r["loss"]) > 0 and float(r["wall_s"]) > 0
        assert r["tasks"] == "attribute_inference_mcq review_rating"
        # every trial is scored on the held-out split of all ten demo tasks
        assert sum(k.startswith("task/") for k in r) == 10
        assert 0.0 < float(r["task_entropy"]) <= 0.7  # two tasks: at most ln 2
    assert (out / "scores.png").read_bytes()[:4] == b"\x89PNG"
    assert "pair" in proc.stdout and "score" in proc.stdout
    # the console tells the sweep's story in a screen: a line per trial per report, no
    # per-rank metric dicts, Ray Data plans, library warnings, W&B banners or loading bars
    console = proc.stdout + proc.stderr
    for noise in ("TrainingReport(", "Execution plan", "Warning", "wandb:", "Loading weights"):
        assert noise not in console
    assert console.count("pair r2  step") == 2 and "done    pair r8  at step 4" in console
    assert "baseline: the untrained base model scores" in console
    # Tune's status table (at the end: test_console), with the subset's id (not its
    # description) and the rank; no Ray error about the W&B logging actors' arguments
    assert "| subset   |   rank |" in console and "| pair     |      2 |" in console
    assert "constructor arguments in the object store" not in console
    assert len(console.splitlines()) < 80, console

    # W&B, offline: a run per trial with its full config and sample answers, and a summary
    # run holding the best adapter, which also lands in best-adapter/
    runs = wandb_runs(out / "wandb")
    trials = [r for r in runs if r["job_type"] == "trial"]
    (summary,) = [r for r in runs if r["job_type"] == "summary"]
    assert len(runs) == 3 and len(trials) == 2
    for run in trials:
        assert run["group"] == "e2e" and run["tags"] == ["e2e", "pair"]
        assert run["config"]["subset"]["id"] == "pair" and run["config"]["train"]["max_steps"] == 4
        assert run["config"]["lora"]["rank"] == run["config"]["rank"]
        assert {"loss", "score", "eval_loss"} <= run["history"]
        tables = list((run["folder"] / "files" / "media" / "table").glob("predictions_*.json"))
        assert len(tables) == 2  # one per evaluation (steps 2 and 4)
        for table in tables:
            predictions = json.loads(table.read_text())
            assert predictions["columns"] == ["task", "input", "gold", "answer", "score"]
            assert len(predictions["data"]) == 16
            assert len({row[0] for row in predictions["data"]}) == 10
    assert summary["tags"] == ["e2e"] and summary["config"]["sweep"]["name"] == "e2e"
    assert "e2e-best-adapter" in summary["artifacts"]
    best = out / "best-adapter"
    assert (best / "adapter_model.safetensors").is_file() and (best / "README.md").is_file()
    assert not (best / "deepspeed").exists()
    assert (out / "report.md").is_file() and (out / "heatmap.png").is_file()
    # each trial's adapter is a PEFT checkpoint of its own rank (one per evaluation)
    adapters = sorted(out.glob("train/*/checkpoint_*/adapter_config.json"))
    assert sorted(json.loads(a.read_text())["r"] for a in adapters) == [2, 2, 8, 8]
    final = Path(rows[0]["checkpoint"])
    assert json.loads((final / "adapter_config.json").read_text())["r"] == int(rows[0]["rank"])
    meta = json.loads((final / "ecomtrain_trial.json").read_text())
    assert meta["n_tasks"] == 2 and meta["n_capabilities"] == 2
    state = json.loads((final / "ecomtrain_state.json").read_text())
    assert state["step"] == 4 and [s for s, _ in state["history"]] == [1, 2, 3, 4]
    # every held-out record's score is kept, and the report's uncertainty rests on them
    scores = [
        json.loads(x) for x in Path(rows[0]["checkpoint"], "scores.jsonl").read_text().splitlines()
    ]
    assert len(scores) == 20 and {"id", "task", "track", "score", "loss"} <= set(scores[0])
    baseline = (out / "baseline.jsonl").read_text().splitlines()
    assert {json.loads(x)["id"] for x in baseline} == {x["id"] for x in scores}
    analysis = json.loads((out / "analysis.json").read_text())
    assert [(c["subset"], c["rank"]) for c in analysis["cells"]] == [("pair", 2), ("pair", 8)]
    assert analysis["records"] == 20 and "baseline" in analysis
    (rank,) = [c for c in analysis["comparisons"] if c["kind"] == "rank"]
    assert rank["ci"][0] <= rank["diff"] <= rank["ci"][1]

    # ASHA replayed over this grid's recorded evaluations, nothing trained again
    figures = tmp_path / "asha.json"
    rule = ["sweep.grace_period=2", "sweep.reduction_factor=2"]  # a rung at step 2 of 4
    run_cli("ecomtrain.bench", "asha", "--grid", str(out), "--json", str(figures), *rule)
    asha = json.loads(figures.read_text())
    assert asha["trials"] == 2 and asha["max_steps"] == 4 and asha["stop_metric"] == "score"
    best = max(rows, key=lambda r: float(r["score"]))
    assert asha["grid_best"] == f"pair-r{best['rank']}"
    assert asha["replay_found_best_in"].endswith(" of 200")
    assert 0.5 <= asha["replay_share_mean"] <= 1.0
