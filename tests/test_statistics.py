"""The statistics behind every published number, on synthetic per-record scores (no training).

The simulated world has the shape of configs/world.yaml's held-out set: 4 tracks x 3 tasks x
50 records, 3 seeds per cell. Record difficulty is shared by every trial (so trials are
correlated, as real adapters are), and each seed shifts a trial's success rate a little
(training noise).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecomtrain.evaluate.metrics import aggregate
from ecomtrain.report import statistics
from ecomtrain.report.analysis import analyze, fit_interaction
from ecomtrain.report.charts import extra_charts
from ecomtrain.report.pages import report_sections

TRACKS, TASKS_PER_TRACK, PER_TASK, SEEDS = 4, 3, 60, 3


def simulate(rng, diff: float, seeds: int = SEEDS) -> list[dict[str, dict]]:
    """Per-record scores of two cells (seeds each); cell B's expected score is `diff` higher.

    Record difficulty p ~ Beta(0.3, 0.3) is shared: most records are easy or hard for every
    adapter, as greedy answers of similar models are. B solves each record with probability
    p + d (1 - p), d = 2 * diff, which adds `diff` to the expected score."""
    n_tasks = TRACKS * TASKS_PER_TRACK
    p = rng.beta(0.3, 0.3, size=n_tasks * PER_TASK)
    trials = []
    for d in (0.0, 2 * diff):
        for _ in range(seeds):
            seed_shift = rng.normal(0, 0.01)  # training noise of this seed
            correct = rng.random(len(p)) < np.clip(p + d * (1 - p) + seed_shift, 0, 1)
            trials.append(
                {
                    f"r{i}": {
                        "id": f"r{i}",
                        "task": f"t{i // PER_TASK}",
                        "track": f"k{i // PER_TASK // TASKS_PER_TRACK}",
                        "metric": "accuracy",
                        "score": float(correct[i]),
                    }
                    for i in range(len(p))
                }
            )
    return trials


def paired_difference(trials, n_boot=400, seed=0) -> statistics.Estimate:
    s = statistics.align(trials)
    point = statistics.overall(s, statistics.task_scores(s))[0]
    boot = statistics.overall(s, statistics.task_scores(s, statistics.draws(s, n_boot, seed)))
    k = len(trials) // 2
    cells = [0] * k + [1] * k
    var, df = statistics.seed_variance(point, boot, cells)
    w = np.array([-1 / k] * k + [1 / k] * k)
    return statistics.combine(w, point, boot, var, df)


def test_no_true_difference_is_covered():
    """Under no true difference the 95 % paired interval covers 0 in >= 90 % of data sets."""
    rng = np.random.default_rng(1)
    covered = [not paired_difference(simulate(rng, 0.0), seed=i).clear for i in range(200)]
    assert np.mean(covered) >= 0.90, np.mean(covered)


def test_a_planted_difference_is_found():
    """A true difference of 0.05 is called clear in >= 80 % of data sets of this size."""
    rng = np.random.default_rng(2)
    found = []
    for i in range(200):
        e = paired_difference(simulate(rng, 0.05), seed=i)
        found.append(e.clear and e.estimate > 0)
    assert np.mean(found) >= 0.80, np.mean(found)


def test_without_replicates_only_held_out_noise_is_counted():
    rng = np.random.default_rng(3)
    e = paired_difference(simulate(rng, 0.0, seeds=1))
    assert not e.seed_noise and e.df == float("inf")
    assert e.as_dict()["df"] is None


def _records(task, track, metric, outputs, responses):
    recs = [
        {"output_field": o, "metric": metric, "task_type": t, "task_name": task, "track": track}
        for o, t in outputs
    ]
    return recs, responses


def test_point_estimate_follows_shopbench_aggregation():
    """Overall = mean over tracks of the mean over tasks of the mean over records (micro F1
    pooled), exactly as the evaluator computes it, whatever the tasks' sizes."""
    mc = "multiple-choice"
    ner = "named_entity_recognition"
    groups = [
        _records("big", "k1", "accuracy", [(0, mc)] * 9, ["0"] * 3 + ["1"] * 6),
        _records("small", "k1", "accuracy", [(1, mc)] * 2, ["1", "1"]),
        _records("ner", "k2", "micro f1", [(["a", "b"], ner), (["c"], ner)], ["a", "c, d"]),
    ]
    records = [r for recs, _ in groups for r in recs]
    responses = [x for _, resp in groups for x in resp]
    want = aggregate(records, responses)["overall"]
    # per-record scores as the loop writes them (pooled counts for micro F1)
    rows = {}
    for i, (rec, resp) in enumerate(zip(records, responses, strict=True)):
        one = aggregate([rec], [resp])["tasks"][rec["task_name"]]
        row = {"id": f"{i}", "task": rec["task_name"], "track": rec["track"],
               "metric": rec["metric"], "score": one["score"]}  # fmt: skip
        if rec["metric"] == "micro f1":
            truth, pred = set(rec["output_field"]), {p.strip() for p in resp.split(",")}
            row |= {"tp": len(truth & pred), "fp": len(pred - truth), "fn": len(truth - pred)}
        rows[row["id"]] = row
    s = statistics.align([rows])
    got = statistics.overall(s, statistics.task_scores(s))[0, 0]
    assert got == pytest.approx(want, abs=1e-12)
    # (1/3 + 1) / 2 for track k1, F1 of pooled (tp 2, fp 1, fn 1) = 2/3 for track k2
    assert want == pytest.approx(((3 / 9 + 1.0) / 2 + 2 / 3) / 2)
    # every bootstrap resample keeps each task's size: stratified by task
    for k, counts in enumerate(statistics.draws(s, 50)):
        assert (counts.sum(axis=1) == (s.task == k).sum()).all()


def test_analyze_writes_cells_comparisons_interaction_and_baseline():
    rng = np.random.default_rng(4)
    trials = simulate(rng, 0.2) + simulate(rng, 0.0, seeds=2)[:2]
    caps = {"lo": 1, "hi": 2}
    rows, per_record = [], {}
    for i, scores in enumerate(trials[:6]):
        subset, rank = ("lo", 4) if i < 3 else ("hi", 4)
        rows.append({"trial": f"t{i}", "subset": subset, "rank": rank, "score": 0.5,
                     "error": "", "tasks": ["t0"], "n_capabilities": caps[subset]})  # fmt: skip
        per_record[f"t{i}"] = scores
    for i, scores in enumerate(trials[6:]):
        subset = ("lo", "hi")[i]
        rows.append({"trial": f"u{i}", "subset": subset, "rank": 16, "score": 0.5, "error": "",
                     "tasks": ["t0"], "n_capabilities": caps[subset]})  # fmt: skip
        per_record[f"u{i}"] = scores
    out = analyze(rows, per_record, baseline=trials[0], n_boot=300)
    json.dumps(out)  # analysis.json is plain JSON
    cells = {(c["subset"], c["rank"]): c for c in out["cells"]}
    assert cells["hi", 4]["n_seeds"] == 3 and cells["lo", 16]["n_seeds"] == 1
    assert cells["hi", 4]["mean"] > cells["lo", 4]["mean"] + 0.1
    lo, hi = cells["hi", 4]["ci"]
    assert lo < cells["hi", 4]["mean"] < hi
    kinds = {(c["a"], c["b"]): c for c in out["comparisons"]}
    assert kinds["lo r16", "lo r4"]["kind"] == kinds["hi r16", "hi r4"]["kind"] == "rank"
    (top,) = [c for c in out["comparisons"] if c["kind"] == "best vs runner-up"]
    assert top["a"] == "hi r4" and top["clear"] and top["diff"] > 0
    assert out["interaction"] is not None and len(out["interaction"]["ci"]) == 2
    assert out["baseline"]["mean"] == pytest.approx(
        statistics.overall(statistics.align([trials[0]]), statistics.task_scores(
            statistics.align([trials[0]])))[0, 0]
    )  # fmt: skip
    parts = {(x["subset"], x["rank"], x["part"]) for x in out["seen_unseen"]}
    assert ("hi", 4, "seen") in parts and ("hi", 4, "unseen") in parts
    heads = [block[1] for block in report_sections(rows, "x", out, []) if block[0] == "h2"]
    assert "Comparisons" in heads  # and no per-capability ladder section: there is no ladder
    assert "Per capability, between ladder steps" not in heads


def test_a_swept_setting_is_compared_task_by_task_and_charted(tmp_path):
    """Each value of a `sweep.params` setting is compared with its first value in an
    otherwise equal cell, per task with intervals; numeric settings and trainable
    parameters get their charts."""
    rng = np.random.default_rng(5)
    trials = simulate(rng, 0.2)  # three trials without the difference, three with it
    plan = [(0.0, 4), (0.0, 4), (0.0, 8), (0.3, 4), (0.3, 4), (0.3, 8)]
    rows, per_record = [], {}
    for i, (fraction, rank) in enumerate(plan):
        rows.append({"trial": f"t{i}", "subset": "all", "rank": rank, "score": 0.5, "error": "",
                     "tasks": ["t0"], "n_capabilities": 4, "data.ood_fraction": fraction,
                     "trainable_params": 1000 * rank})  # fmt: skip
        per_record[f"t{i}"] = trials[i]
    out = analyze(rows, per_record, n_boot=300)
    swept = [c for c in out["comparisons"] if c["kind"] == "data.ood_fraction"]
    assert [(c["a"], c["b"]) for c in swept] == [
        ("all data.ood_fraction=0.3 r4", "all data.ood_fraction=0.0 r4"),
        ("all data.ood_fraction=0.3 r8", "all data.ood_fraction=0.0 r8"),
    ]
    assert all(c["clear"] and c["diff"] > 0.1 for c in swept)
    assert len(swept[0]["tasks"]) == TRACKS * TASKS_PER_TRACK
    assert fit_interaction(rows)["capacity"] == "log2(trainable params)"
    charts = extra_charts(rows, out, tmp_path)
    assert [name for name, _ in charts] == ["capacity.png", "setting-data-ood_fraction.png"]
    assert all((tmp_path / name).read_bytes()[:4] == b"\x89PNG" for name, _ in charts)
    blocks = report_sections(rows, "x", out, charts)
    (i,) = [
        k for k, b in enumerate(blocks) if b[:2] == ("h2", "Per task, along each swept setting")
    ]
    head, body = blocks[i + 2][1:]
    assert head[-1] == "better" and len(body) == 2 * TRACKS * TASKS_PER_TRACK
    better = [r[-1] for r in body]
    assert (
        better.count("all data.ood_fraction=0.3 r4") >= 4
        and "all data.ood_fraction=0.0 r4" not in better
    )
    assert ("img", "setting-data-ood_fraction.png", charts[1][1]) in blocks


HASH_SEED_SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_statistics import simulate
from ecomtrain.report.analysis import analyze
trials = simulate(np.random.default_rng(5), 0.05) + simulate(np.random.default_rng(6), 0.05)
rows = [dict(trial=f"t{{i}}", subset="abcd"[i // 3], rank=4, score=0.5, error="", tasks=["t0"],
             n_capabilities=1) for i in range(12)]
print(json.dumps(analyze(rows, {{f"t{{i}}": s for i, s in enumerate(trials)}}, n_boot=50)))
"""


def test_the_analysis_is_the_same_in_every_process():
    """analysis.json is the same bit for bit whatever Python's per-process string hashing
    (PYTHONHASHSEED): no sum follows the order of a set."""
    script = HASH_SEED_SCRIPT.format(tests=str(Path(__file__).parent))
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in range(4)
    }
    assert len(outputs) == 1
