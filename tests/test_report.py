"""The sweep report: trials.csv, the chart and the table, from fake Tune results."""

import csv
from types import SimpleNamespace

from tuning.report import plot_scores, table, trial_rows, write_csv


def _result(subset, rank, score, error=None):
    return SimpleNamespace(
        config={
            "subset": {"id": subset, "tasks": ["a", "b"], "n_tasks": 2, "n_capabilities": 1},
            "rank": rank,
        },
        metrics={}
        if score is None
        else {
            "score": score,
            "loss": 1.5,
            "time_total_s": 12.34,
            "track/x": score,
            "task/a": score,
        },
        path=f"/x/{subset}-r{rank}",
        error=error,
    )


def test_report_files_and_table(tmp_path):
    results = [_result("s1", 4, 0.25), _result("s1", 16, 0.5), _result("s2", 4, None, "boom")]
    rows = trial_rows(results)
    write_csv(rows, tmp_path / "trials.csv")
    with open(tmp_path / "trials.csv") as f:
        read = list(csv.DictReader(f))
    assert [r["score"] for r in read] == ["0.25", "0.5", ""]
    assert read[2]["error"] == "boom" and read[0]["track/x"] == "0.25"
    assert {"subset", "tasks", "rank", "score", "loss", "wall_s"} <= set(read[0])
    png = plot_scores(rows, tmp_path / "scores.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    text = table(rows).splitlines()
    assert text[2].split()[:2] == ["s1", "16"]  # best first
    assert "failed" in text[-1]
