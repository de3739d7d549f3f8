"""The sweep report: trials.csv, the table and chart from fake Tune results; the full report
(tables, charts, interaction model, errors) from crafted trials.csv files."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ecomtrain.report import findings
from ecomtrain.report.__main__ import main
from ecomtrain.report.analysis import fit_interaction
from ecomtrain.report.charts import plot_scores
from ecomtrain.report.pages import console_table, write_report
from ecomtrain.report.trials import (
    ReportError,
    checkpoint_uri,
    load_trials,
    trial_rows,
    typed_rows,
    write_csv,
)


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
    typed = load_trials(tmp_path / "trials.csv")
    png = plot_scores(typed, None, tmp_path / "scores.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    text = console_table(typed).splitlines()
    assert text[2].split()[:2] == ["s1", "r16"]  # best first
    assert "failed" in text[-1]


def test_rows_kept_in_memory_are_the_rows_trials_csv_reads_back(tmp_path):
    """A sweep reports from its rows in memory: typed exactly as load_trials reads trials.csv."""
    results = [_result("s1", 4, 0.25), _result("s1", 16, 0.5), _result("s2", 4, None, "boom")]
    results[0].config |= {"seed": 1, "alpha": 8.0, "train.lr": 0.0001, "data.x": [1, 2]}
    results[1].metrics |= {"trainable_params": 4096, "task_entropy": 1.25, "extra/score": 0.1}
    raw = trial_rows(results)
    assert typed_rows(raw) == load_trials(write_csv(raw, tmp_path / "trials.csv"))


def test_swept_params_are_columns_and_never_folded(tmp_path):
    """A `sweep.params` dimension is a column of trials.csv, and the report keeps its values
    apart instead of folding them into "best of n"."""
    results = [_result("s1", 4, 0.25), _result("s1", 4, 0.5), _result("s1", 16, 0.4)]
    for r, lr in zip(results, (0.0001, 0.0003, 0.0001), strict=True):
        r.config["train.lr"] = lr
        r.path += f"-lr{lr}"
    write_csv(trial_rows(results), tmp_path / "trials.csv")
    with open(tmp_path / "trials.csv") as f:
        read = list(csv.DictReader(f))
    assert [r["train.lr"] for r in read] == ["0.0001", "0.0003", "0.0001"]
    md = write_report(tmp_path).read_text()
    assert "| s1 train.lr=0.0001 | " in md and "| s1 train.lr=0.0003 | " in md
    assert "best of" not in md
    assert "| s1 r4 train.lr=0.0003 | 0.5000 |" in md


# --- the full report from trials.csv: ecomtrain.report (CLI, model) and tuning.report_doc ---

ROOT = Path(__file__).resolve().parent.parent
# One family per capability, so a subset's capabilities follow from its tasks.
FAMILY = {1: "query_ner", 2: "numeric_reasoning", 3: "review_rating", 4: "title_translation"}
HEAD = ["trial", "subset", "tasks", "n_tasks", "n_capabilities", "rank", "score", "loss"]
HEAD += ["wall_s", "error", "track/understanding-shopping-concepts"]


def _trial(subset, caps, rank, score, error="", step=None):
    tasks = " ".join(FAMILY[i] for i in range(1, caps + 1))
    row = [f"{subset}-r{rank}", subset, tasks, caps, caps, rank, score, 1.0, 10.0, error]
    row.append("" if score == "" else round(score / 2, 4))
    return row + ([] if step is None else [step])


def _write(folder, rows, head=HEAD):
    with open(folder / "trials.csv", "w", newline="") as f:
        csv.writer(f).writerows([head, *rows])
    return folder


def _ols(d, rank, y):
    """The reference fit, computed here independently of ecomtrain.report."""
    d, lr, y = np.asarray(d, float), np.log2(rank), np.asarray(y, float)
    x = np.column_stack([np.ones_like(d), d, lr, d * lr])
    beta, rss, *_ = np.linalg.lstsq(x, y, rcond=None)
    df = len(y) - 4
    se = np.sqrt(np.diag(rss[0] / df * np.linalg.pinv(x.T @ x)))
    return beta, se, df


LADDER = [  # (step, subset, capabilities, rank, score): a 3 x 3 ladder with an interaction
    (1, "concept", 1, 4, 0.21), (1, "concept", 1, 8, 0.25), (1, "concept", 1, 16, 0.27),
    (2, "concept+knowledge", 2, 4, 0.24), (2, "concept+knowledge", 2, 8, 0.31),
    (2, "concept+knowledge", 2, 16, 0.35),
    (3, "all-4", 4, 4, 0.26), (3, "all-4", 4, 8, 0.37), (3, "all-4", 4, 16, 0.47),
]  # fmt: skip


@pytest.fixture
def ladder_dir(tmp_path):
    rows = [_trial(s, c, r, y, step=step) for step, s, c, r, y in LADDER]
    rows.append(_trial("all-4", 4, 32, "", "RayTaskError: worker died", step=3))
    return _write(tmp_path, rows, HEAD + ["ladder_step"])


def test_ladder_fit_matches_lstsq_and_report(ladder_dir):
    assert main([str(ladder_dir)]) == 0
    beta, se, df = _ols([t[2] for t in LADDER], [t[3] for t in LADDER], [t[4] for t in LADDER])
    fit = fit_interaction(load_trials(ladder_dir / "trials.csv"))
    assert fit["n"] == 9 and fit["df"] == df == 5 and len(fit["terms"]) == 4
    np.testing.assert_allclose(fit["beta"], beta, atol=1e-12)
    np.testing.assert_allclose(fit["se"], se, rtol=1e-9)
    assert (fit["se"] > 0).all()
    half = fit["ci"][:, 1] - fit["beta"]
    np.testing.assert_allclose(half, 2.570582 * se, rtol=1e-5)  # t(0.975, 5 df)
    assert beta[3] > 0  # the crafted scores gain more from rank at higher diversity

    md = (ladder_dir / "report.md").read_text()
    assert "| step | subset | capabilities | tasks | r=4 | r=8 | r=16 | r=32 |" in md
    assert "| 1 | concept | concept (1) | 1 | 0.2100 | 0.2500 | 0.2700 |  |" in md
    assert "| 3 | all-4 | concept+knowledge+behavior+multilingual (4) | 4 | 0.2600 | 0.3700 |" in md
    assert "**0.4700** | failed |" in md  # best cell in bold, the failed trial marked
    assert f"| b3 diversity x log2(rank) | {beta[3]:+.4f} | {se[3]:.4f} |" in md
    assert "1 trial(s) left out" in md and "no standard errors" not in md
    assert "| all-4-r32 | all-4 | 32 | RayTaskError: worker died |" in md
    assert "**all-4 r16** (trial all-4-r16)" in md
    for name in ("heatmap.png", "capabilities.png", "diversity.png"):
        assert (ladder_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in md
    page = (ladder_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,iVBORw0KGgo") == 4 and "<b>0.4700</b>" in page


def test_two_by_two_reports_no_uncertainty(tmp_path):
    scores = {(2, 4): 0.16, (2, 16): 0.24, (4, 4): 0.23, (4, 16): 0.31}
    rows = [_trial(f"caps{c}", c, r, y) for (c, r), y in scores.items()]
    _write(tmp_path, rows)
    write_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "Only 4 scored trial(s) for the 4-parameter model" in md
    assert "no standard errors or confidence intervals" in md and "saturated" in md
    did = (0.31 - 0.23) - (0.24 - 0.16)
    assert f"= {did:+.4f}; a raw contrast" in md
    fit = fit_interaction(load_trials(tmp_path / "trials.csv"))
    assert fit["se"] is None and fit["ci"] is None
    assert math.isclose(fit["beta"][3], did / ((4 - 2) * (4 - 2)), abs_tol=1e-12)
    assert "| b3 diversity x log2(rank) | " in md and "| none | none |" in md


def test_failed_trial_leaves_identifiable_terms(tmp_path):
    rows = [_trial("caps2", 2, 4, 0.16), _trial("caps2", 2, 16, 0.24)]
    rows += [_trial("caps4", 4, 4, 0.23), _trial("caps4", 4, 16, "", "OOM")]
    _write(tmp_path, rows)
    assert main([str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "Only 3 scored trial(s)" in md
    assert "left out: b3 diversity x log2(rank)" in md and "diff-in-diff" not in md
    assert "| caps4-r16 | caps4 | 16 | OOM |" in md and "| caps4 r16 | failed |" in md
    beta = fit_interaction(load_trials(tmp_path / "trials.csv"))["beta"]
    # exact through 3 points: 0.16 = b0 + 2 b1 + 2 b2, 0.24 = ... + 4 b2, 0.23 = ... + 4 b1
    np.testing.assert_allclose(beta, [0.01, 0.035, 0.04], atol=1e-12)


def test_all_failed_still_reports(tmp_path):
    rows = [_trial("a", 1, 4, "", "boom"), _trial("a", 1, 8, "", "Traceback\nValueError: x | y")]
    _write(tmp_path, rows)
    md = write_report(tmp_path).read_text()
    assert "2 trial(s): 0 scored, 2 failed" in md and "No trial was scored." in md
    assert "No scored trials: nothing to fit." in md
    assert "| a-r8 | a | 8 | Traceback ValueError: x \\| y |" in md
    assert (tmp_path / "heatmap.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda rows: rows[1].__setitem__(6, "0.3x"), ":3: column 'score': '0.3x' is not a number"),
        (lambda rows: rows[0].__setitem__(5, "4.5"), ":2: column 'rank': '4.5' is not an integer"),
        (lambda rows: rows[1].append("extra"), ":3: wrong number of fields"),
        (lambda rows: rows[0].__setitem__(5, ""), ":2: column 'rank' must be a positive integer"),
        (lambda rows: rows[1].__setitem__(5, "0"), ":3: column 'rank' must be a positive integer"),
    ],
)
def test_malformed_csv_names_file_line_column(tmp_path, capsys, edit, message):
    rows = [_trial("a", 1, 4, 0.2), _trial("a", 1, 8, 0.3)]
    edit(rows)
    _write(tmp_path, rows)
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'trials.csv'}{message}" in err
    assert not (tmp_path / "report.md").exists()


def test_missing_file_and_columns(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert f"{tmp_path / 'trials.csv'}: not found" in capsys.readouterr().err
    _write(tmp_path, [["x", "4"]], ["trial", "rank"])
    with pytest.raises(ReportError, match=r"trials.csv:1: missing column\(s\) subset, score"):
        load_trials(tmp_path / "trials.csv")
    _write(tmp_path, [], HEAD)
    with pytest.raises(ReportError, match="no trials"):
        load_trials(tmp_path / "trials.csv")
    (tmp_path / "trials.csv").write_bytes(b"trial,subset,rank,score\n\xff\xfe,a,4,0.1\n")
    with pytest.raises(ReportError, match="trials.csv: not a readable CSV file"):
        load_trials(tmp_path / "trials.csv")


def test_cli_module_and_derived_columns(tmp_path):
    """`python -m ecomtrain.report DIR` on a CSV without n_capabilities or error columns."""
    head = ["trial", "subset", "tasks", "rank", "score"]
    rows = [["t1", "pair", "query_ner review_rating", "8", "0.4"]]
    _write(tmp_path, rows, head)
    cmd = [sys.executable, "-m", "ecomtrain.report", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "report.md").read_text()
    assert "| pair | concept+behavior (2) | 2 | **0.4000** |" in md
    bad = subprocess.run(cmd[:-1] + [str(tmp_path / "none")], capture_output=True, text=True)
    assert bad.returncode == 2 and "none/trials.csv: not found" in bad.stderr


def test_write_full_report_after_write_report(tmp_path):
    """The sweep's path: ResultGrid -> trials.csv (with optional columns) -> report."""
    results = [_result("s1", 4, 0.25), _result("s1", 16, 0.5), _result("s2", 4, None, "boom")]
    results[0].config["alpha"] = 8.0
    results[0].config["subset"] |= {"capabilities": ["x"], "ladder_step": 1}
    write_csv(trial_rows(results), tmp_path / "trials.csv")
    header = (tmp_path / "trials.csv").read_text().splitlines()[0].split(",")
    assert header[9:12] == ["alpha", "ladder_step", "capabilities"]
    path = write_report(tmp_path)
    md = path.read_text()
    assert path == tmp_path / "report.md" and "| s2-r4 | s2 | 4 | boom |" in md
    assert "| s1 r4 a8 | 0.2500 |" in md


def test_the_sweep_metric_is_the_score_column_and_picks_the_records(tmp_path):
    """With sweep.metric extra/track/X, trials.csv's score is that metric (named in the
    metric column) and the report's intervals rest on the extra files' X records only."""
    from ecomtrain.report.pages import only

    results = [_result("s1", 4, 0.25), _result("s1", 16, 0.5)]
    for r, v in zip(results, (0.7, 0.9), strict=True):
        r.metrics["extra/track/x"] = v
    rows = trial_rows(results, "extra/track/x")
    assert [r["score"] for r in rows] == [0.7, 0.9] and {r["metric"] for r in rows} == {
        "extra/track/x"
    }
    entries = {"a": {"track": "x"}, "b": {"track": "y"}}
    assert only("extra/track/x", entries) == {"a": {"track": "x"}}
    assert only("score", entries) == entries


def test_checkpoints_on_cloud_storage_are_uris():
    """Ray Train reports a cloud checkpoint's path inside its filesystem; trials.csv holds
    the URI the report and a reader open."""
    assert checkpoint_uri("b/p/train/t/ckpt_1", "s3://b/p") == "s3://b/p/train/t/ckpt_1"
    assert checkpoint_uri("/runs/x/train/t/ckpt_1", "/runs/x") == "/runs/x/train/t/ckpt_1"
    assert checkpoint_uri("gs://b/p/ckpt", "gs://b/p") == "gs://b/p/ckpt"
    assert checkpoint_uri("", "s3://b/p") == ""


# --- the report from per-record scores: intervals, the selected best, charts with error bars ---


def scored_sweep(folder: Path, seeds: int = 3, seed_sd: float = 0.01, same_seeds: bool = False):
    """A sweep's folder as the sweep leaves it: trials.csv, each trial's last checkpoint with
    its per-record scores (scores.jsonl, each record in its part) and baseline.jsonl. A 2 x 2
    ladder x rank grid of the simulated world (tests/test_statistics.py), `seeds` a cell;
    `same_seeds`: every seed of a cell has the same score on every task, from other records
    (each seed's records shuffled within their task)."""
    from test_statistics import PER_TASK, RECORDS, as_trial, sweeps

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    grid = [("ladder-1", 1, 4), ("ladder-1", 1, 16), ("ladder-2", 2, 4), ("ladder-2", 2, 16)]
    x = sweeps(rng, 1, len(grid), 1 if same_seeds else seeds, seed_sd, [0, 0.02, 0.03, 0.08])[0]
    if same_seeds:
        x = np.repeat(x, seeds, axis=0).reshape(len(x) * seeds, -1, PER_TASK)
        x = rng.permuted(x, axis=-1).reshape(len(x), -1)
    parts = np.where(np.arange(RECORDS) % PER_TASK < 15, "confirm", "select")
    head = ["trial", "subset", "tasks", "n_tasks", "n_capabilities", "rank", "score", "seed"]
    head += ["ladder_step", "checkpoint", "track/k0"]
    rows = []
    for i, scores in enumerate(x):
        subset, caps, rank = grid[i // seeds]
        checkpoint = folder / f"checkpoint-{i}"
        checkpoint.mkdir(exist_ok=True)
        entries = as_trial(scores, parts).values()
        (checkpoint / "scores.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
        score = float(scores[parts == "select"].mean())
        tasks = "query_ner numeric_reasoning"[: 9 if caps == 1 else None]
        rows.append([f"{subset}-r{rank}-s{i % seeds}", subset, tasks, caps, caps, rank, score,
                     i % seeds, caps, str(checkpoint), score])  # fmt: skip
    baseline = as_trial(rng.random(RECORDS) < 0.3, parts).values()
    (folder / "baseline.jsonl").write_text("".join(json.dumps(e) + "\n" for e in baseline))
    return _write(folder, rows, head)


def test_the_report_rests_on_per_record_scores(tmp_path, monkeypatch):
    """With per-record scores: analysis.json (typed, read back), cells with intervals, the
    selected best confirmed on the confirmation records, adjusted verdicts beside the raw
    ones, and every bar and line of the charts with its 95 % interval as an error bar."""
    import matplotlib.axes

    drawn = []
    for name in ("bar", "errorbar"):
        real = getattr(matplotlib.axes.Axes, name)

        def spy(self, *args, _real=real, _name=name, **kwargs):
            drawn.append((_name, self, kwargs.get("yerr")))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(matplotlib.axes.Axes, name, spy)
    md = write_report(scored_sweep(tmp_path)).read_text()
    found = findings.read(tmp_path)
    assert found.selection_records == 540 and found.confirmation_records == 180
    assert found.selected.confirmed and found.selected.best == "ladder-2 r16"
    assert "| step | subset | tasks | r=4: mean [95 % CI] x seeds |" in md
    assert f"**{found.cell('ladder-2', 16).mean:.4f} [" in md  # the selected best, in bold
    assert "## The selected best" in md and "confirmation records, which chose nothing" in md
    assert "| comparison | a | b | difference [95 % CI] | verdict | adjusted |" in md
    assert "after Holm" in md and "Benjamini-Hochberg" in md
    assert "which did not choose it" in md  # the best trial, confirmed too
    assert drawn and all(yerr is not None for _, _, yerr in drawn)
    assert {ax.get_title().split("\n")[0] for _, ax, _ in drawn} >= {
        "Cell mean by task subset and LoRA rank",
        "Per-capability cell mean",
        "Score by capabilities trained on",
    }
    assert "±" in "".join(t.get_text() for t in _heatmap_texts(tmp_path, found))


def _heatmap_texts(folder: Path, found):
    """The heatmap's annotations, drawn again onto a figure kept open."""
    import matplotlib.pyplot as plt

    from ecomtrain.report.charts import plot_heatmap

    closed = []
    with pytest.MonkeyPatch.context() as m:
        m.setattr(plt, "close", lambda fig: closed.append(fig))
        plot_heatmap(load_trials(folder / "trials.csv"), found, folder / "again.png")
    (fig,) = closed
    return fig.axes[0].texts


def test_one_seed_per_cell_says_training_noise_is_not_in_the_intervals(tmp_path):
    md = write_report(scored_sweep(tmp_path, seeds=1)).read_text()
    assert "r=4: score [95 % CI: held-out noise only, training noise not in it] x 1 seed" in md
    assert "one seed per cell, so training noise is not in the intervals" in md


def test_a_seed_variance_at_zero_is_said_and_keeps_its_uncertainty(tmp_path):
    """Seeds that score exactly alike give a seed variance estimate below 0: the report
    says so, and the intervals are Student's t on the seed degrees of freedom's order, not
    the normal interval of the held-out part alone."""
    md = write_report(scored_sweep(tmp_path, seeds=2, same_seeds=True)).read_text()
    assert "came out at or below 0" in md and "never a narrower normal interval" in md
    found = findings.read(tmp_path)
    assert found.noise.seed_var_raw < 0 and found.noise.seed_sd == 0 and found.noise.seed_df == 4
    diffs = [c for c in found.comparisons if c.kind == "rank"]
    assert diffs and all(c.df is not None and c.df < 100 for c in diffs)


def test_trials_without_per_record_scores_get_no_stale_analysis(tmp_path):
    scored_sweep(tmp_path)
    write_report(tmp_path)
    rows = [_trial("a", 1, 4, 0.2), _trial("a", 1, 8, 0.3)]
    _write(tmp_path, rows)  # the same folder, now without checkpoints
    md = write_report(tmp_path).read_text()
    assert not (tmp_path / "analysis.json").exists()
    assert "no per-record scores, so trial means without intervals" in md
