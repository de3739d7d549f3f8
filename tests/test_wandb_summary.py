"""The sweep's W&B summary run, offline: the trials table, the charts and the line chart."""

import csv
import json

import wandb
from wandb_files import read_run

from ecomtrain.report.pages import write_report
from ecomtrain.report.trials import load_trials
from ecomtrain.report.wandb_summary import log_summary

ROWS = [  # subset, capabilities, tasks, rank, score ("" = failed)
    ("concept+behavior", 2, "query_ner review_rating", 4, 0.16),
    ("concept+behavior", 2, "query_ner review_rating", 16, 0.24),
    ("all-4", 4, "query_ner numeric_reasoning review_rating title_translation", 4, 0.23),
    ("all-4", 4, "query_ner numeric_reasoning review_rating title_translation", 16, ""),
]


def _sweep_dir(tmp_path):
    with open(tmp_path / "trials.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["trial", "subset", "tasks", "n_capabilities", "rank", "score", "error"])
        for subset, caps, tasks, rank, score in ROWS:
            error = "" if score != "" else "worker died"
            out.writerow([f"{subset}-r{rank}", subset, tasks, caps, rank, score, error])
    write_report(tmp_path)
    return tmp_path


def test_log_summary_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    init, seen = wandb.init, {}
    monkeypatch.setattr(wandb, "init", lambda **kw: seen.update(kw) or init(**kw))
    out = _sweep_dir(tmp_path)
    rows = load_trials(out / "trials.csv")
    run_dir = log_summary(rows, "ecomtrain-test", "sweep7", "offline", out)

    assert run_dir.parent == out / "wandb" and run_dir.name.startswith("offline-run-")
    media = run_dir / "files" / "media"
    images = sorted(p.name.split("_")[0] for p in (media / "images" / "charts").glob("*.png"))
    assert images == ["capabilities", "diversity", "heatmap", "scores"]
    for png in (media / "images" / "charts").glob("*.png"):
        assert png.read_bytes()[:4] == b"\x89PNG"

    (table,) = (media / "table").glob("trials_*.table.json")
    data = json.loads(table.read_text())
    assert data["columns"][:3] == ["trial", "subset", "tasks"]
    assert [r[0] for r in data["data"]] == [f"{s}-r{k}" for s, _, _, k, _ in ROWS]
    failed = data["data"][3]
    assert failed[data["columns"].index("score")] is None
    assert failed[data["columns"].index("error")] == "worker died"

    (lines,) = (media / "table").glob("score_by_capabilities_table_*.table.json")
    points = json.loads(lines.read_text())["data"]  # [x, line key, y]
    assert sorted(points) == [[2, "rank 16", 0.24], [2, "rank 4", 0.16], [4, "rank 4", 0.23]]

    assert (seen["name"], seen["group"], seen["job_type"]) == (
        "sweep7-summary",
        "sweep7",
        "summary",
    )
    assert seen["project"] == "ecomtrain-test" and seen["mode"] == "offline"


def test_log_summary_disabled_writes_nothing(tmp_path):
    rows = load_trials(_sweep_dir(tmp_path) / "trials.csv")
    assert log_summary(rows, "ecomtrain-test", "sweep7", "disabled", tmp_path) is None
    assert not (tmp_path / "wandb").exists()


def test_log_summary_charts_cell_means_with_intervals(tmp_path, monkeypatch):
    """With per-record scores the summary run takes the analysis (analysis.json): the cells
    with their intervals as a table, the line chart's cell means with each interval's ends,
    and the selected best's confirmation in the run summary."""
    from test_report import scored_sweep

    monkeypatch.setenv("WANDB_MODE", "offline")
    out = scored_sweep(tmp_path)
    write_report(out)
    rows = load_trials(out / "trials.csv")
    run_dir = log_summary(rows, "ecomtrain-test", "sweep8", "offline", out)
    media = run_dir / "files" / "media" / "table"
    (cells,) = media.glob("cells_*.table.json")
    cells = json.loads(cells.read_text())
    assert cells["columns"][-3:] == ["mean", "ci_low", "ci_high"] and len(cells["data"]) == 4
    assert all(lo < mean < hi for *_, mean, lo, hi in cells["data"])
    (lines,) = media.glob("score_by_capabilities_table_*.table.json")
    keys = {key for _, key, _ in json.loads(lines.read_text())["data"]}
    assert keys == {f"rank {r}{end}" for r in (4, 16) for end in ("", " 95% low", " 95% high")}
    summary = read_run(run_dir)["summary"]
    assert summary["best/cell"] == "ladder-2 r16" and summary["best/confirmed"] is True
    lo, hi = summary["best/cell_ci"]
    assert lo < summary["best/cell_mean"] < hi
