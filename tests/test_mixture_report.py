"""The mixture law in the report (ecomtrain/report/mixture_section.py) and the proposal a
finished sweep of mixtures leads to (ecomtrain/report/proposal.py, `sweep --confirm`), from a
crafted sweep folder: its config.yaml and a trials.csv of a known law. No Ray."""

import json

import numpy as np
import pytest
import yaml

from ecomtrain.config import CONFIG_FILE, config_yaml, load_config
from ecomtrain.report.mixture_law import fit_law
from ecomtrain.report.mixture_section import (
    CV_CHART,
    LAW_FILE,
    PROPOSAL_CHART,
    mixture_section,
    wandb_logs,
)
from ecomtrain.report.pages import write_report
from ecomtrain.report.proposal import (
    PROPOSAL_FILE,
    confirmation_configs,
    confirmation_table,
    propose,
)
from ecomtrain.report.trials import load_trials, write_csv
from ecomtrain.report.wandb_summary import log_summary
from ecomtrain.sweep import main as sweep_main
from tuning.space import grid_points

TASKS = ["attribute_inference_mcq", "review_rating", "query_ner"]
SUBSET = f"sweep.subsets={{trio: [{', '.join(TASKS)}]}}"
RATE = np.array([3.0, 6.0, 10.0])


def scores(shares: np.ndarray, rank: int) -> np.ndarray:
    return 0.8 - 0.6 * np.exp(-shares * RATE * (1 + 0.2 * np.log2(rank / 4)))


def sweep_folder(tmp_path, draws: int = 8, seeds=(0,)) -> tuple:
    """A finished sweep of mixtures: its config and a trials.csv whose per-task scores follow
    `scores` (no checkpoints)."""
    cfg = load_config(None, [SUBSET, f"sweep.mixtures.draws={draws}", "sweep.ranks=[4, 16]",
                             f"sweep.seeds={list(seeds)}", "sweep.name=mix"])  # fmt: skip
    (tmp_path / CONFIG_FILE).write_text(config_yaml(cfg))
    rng = np.random.default_rng(0)
    rows = []
    for i, point in enumerate(grid_points(cfg)):
        mixture = point["mixture"]
        shares = np.array([mixture["shares"].get(t, 0.0) for t in TASKS])
        if not mixture["shares"]:  # stratified: the demo corpus' sizes, nearly even
            shares = np.array([0.35, 0.35, 0.30])
        task = scores(shares, point["rank"]) + rng.normal(0, 0.005, 3)
        row = {"trial": f"t{i}", "subset": "trio", "tasks": " ".join(TASKS), "rank": point["rank"],
               "seed": point["seed"], "mixture": mixture["id"], "mixture_over": "tasks",
               "score": float((task[0] + task[2]) / 4 + task[1] / 2), "metric": "score"}  # fmt: skip
        row |= {f"mix/{t}": float(s) for t, s in zip(TASKS, shares, strict=True)}
        row |= {f"task/{t}": float(s) for t, s in zip(TASKS, task, strict=True)}
        rows.append(row)
    write_csv(rows, tmp_path / "trials.csv")
    return cfg, load_trials(tmp_path / "trials.csv")


def test_the_report_section_fits_the_law_and_draws_its_charts(tmp_path):
    _, rows = sweep_folder(tmp_path)
    blocks = mixture_section(rows, tmp_path)
    kinds = [b[0] for b in blocks]
    assert blocks[0] == ("h2", "Which mixture: the mixture law")
    assert kinds == ["h2", "p", "table", "img", "table", "img", "p"]
    head, body = blocks[2][1:]
    assert head[0] == "family" and {r[0] for r in body} == {"exp", "gp", "linear"}
    assert any(r[3] == "chosen" for r in body)
    head, body = blocks[4][1:]
    assert [r[0] for r in body] == ["4", "16"] and all(r[4] != "-" for r in body)
    for name in (CV_CHART, PROPOSAL_CHART):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    law = json.loads((tmp_path / LAW_FILE).read_text())
    assert law["chosen"] and len(law["proposals"]) == 2
    logs = wandb_logs(fit_law(rows, boot=5), tmp_path)
    assert {"mixture/cv", "mixture/proposals", "charts/mixture_cv"} <= set(logs)


def test_a_sweep_without_mixtures_has_no_section_and_too_few_says_so(tmp_path):
    _, rows = sweep_folder(tmp_path)
    plain = [{k: v for k, v in r.items() if k != "mixture"} for r in rows]
    assert mixture_section(plain, tmp_path) == []
    few = [r for r in rows if r["mixture"] in ("stratified", "uniform", "dirichlet-1")]
    blocks = mixture_section(few, tmp_path)
    assert blocks[1][0] == "p" and blocks[1][1].startswith("too few trials for the mixture law")


def test_confirm_writes_the_proposal_and_the_sweeps_that_confirm_it(tmp_path, capsys, monkeypatch):
    cfg, _ = sweep_folder(tmp_path, seeds=(0, 1))
    monkeypatch.chdir(tmp_path.parent)  # a relative DIR, as typed: Tune needs it absolute
    assert sweep_main(["--confirm", tmp_path.name, "--dry-run"]) == 0
    out = capsys.readouterr().out
    proposal = json.loads((tmp_path / PROPOSAL_FILE).read_text())
    assert proposal["sweep"] == "mix" and proposal["confirmation"]["status"].startswith("to train")
    assert proposal["confirmation"]["metric"] == "confirm/score"
    assert [p["rank"] for p in proposal["proposals"]] == [4, 16]
    assert sum(proposal["proposals"][0]["shares"].values()) == pytest.approx(1, abs=1e-3)
    for rank in (4, 16):
        saved = yaml.safe_load((tmp_path / f"confirm-r{rank}.yaml").read_text())
        sweep = saved["sweep"]
        assert sweep["ranks"] == [rank] and sweep["seeds"] == [2, 3, 4]  # fresh seeds
        assert sweep["output"] == str(tmp_path / f"confirm-r{rank}")
        assert sweep["scheduler"] == "fifo" and sweep["mixtures"]["uniform"] is False
        assert "proposed" in sweep["mixtures"]["given"]
    assert "mixture law: 40 trials over 10 mixtures" in out
    trials = [line for line in out.splitlines() if line.startswith("        mixture ")]
    ids = {line.split()[1].rstrip(":") for line in trials}
    assert {"stratified", "proposed"} <= ids and len(trials) in (
        12,
        18,
    )  # 2 or 3 arms x 3 seeds x 2


def test_confirm_with_too_few_trials_says_so_and_trains_nothing(tmp_path, capsys):
    sweep_folder(tmp_path, draws=3)
    rows = [r for r in load_trials(tmp_path / "trials.csv") if r["rank"] == 4][:4]
    write_csv(rows, tmp_path / "trials.csv")
    assert sweep_main(["--confirm", str(tmp_path)]) == 1
    assert "too few trials for the mixture law" in capsys.readouterr().out
    assert json.loads((tmp_path / PROPOSAL_FILE).read_text())["proposals"] == []
    assert not list(tmp_path.glob("confirm-r*"))


def test_a_confirmation_is_called_one_only_on_the_confirmation_sample(tmp_path):
    cfg, rows = sweep_folder(tmp_path)
    law = propose(tmp_path)[1]
    configs = confirmation_configs(cfg, law, tmp_path)
    assert set(configs) == {4, 16} and configs[4].sweep.mixtures.fit is False
    text, figures = confirmation_table(rows[:6])
    assert not figures["confirmed"] and text.startswith("NOT A CONFIRMATION")
    text, figures = confirmation_table([r | {"confirm/score": 0.5} for r in rows[:6]])
    assert figures["confirmed"] and "confirm/score 0.5000" in text


def test_the_confirmation_compares_each_mixture_with_the_stratified_one_over_seeds():
    """Paired by seed where the arms trained the same seeds: a seed's luck, shared by both
    arms, drops out of the difference; Welch's interval where the seeds differ."""
    luck = {1: 0.0, 2: 0.2, 3: 0.4}  # each seed's own, the same in every arm
    gain = {1: 0.09, 2: 0.10, 3: 0.11}  # the proposal's gain with each seed
    rows = [{"rank": 4, "mixture": "stratified", "seed": s, "score": 0.1,
             "confirm/score": 0.5 + luck[s]} for s in luck]  # fmt: skip
    rows += [{"rank": 4, "mixture": "proposed", "seed": s, "score": 0.1,
              "confirm/score": 0.5 + luck[s] + gain[s]} for s in luck]  # fmt: skip
    text, figures = confirmation_table(rows)
    proposed = next(a for a in figures["arms"] if a["mixture"] == "proposed")["vs_stratified"]
    assert proposed["diff"] == pytest.approx(0.1) and proposed["test"] == "paired by seed"
    half = 4.3027 * 0.01 / np.sqrt(3)  # t(0.975, 2 df) x the gains' sd 0.01 / sqrt(3)
    assert proposed["ci"] == pytest.approx([0.1 - half, 0.1 + half], rel=1e-4)
    assert "vs stratified +0.1000" in text and figures["metric"] == "confirm/score"
    # one stratified trial failed: the arms' seeds differ, so Welch over what is there
    text, figures = confirmation_table(
        [r for r in rows if (r["mixture"], r["seed"]) != ("stratified", 3)]
    )
    proposed = next(a for a in figures["arms"] if a["mixture"] == "proposed")["vs_stratified"]
    assert proposed["test"] == "Welch" and proposed["ci"][0] < 0 < proposed["ci"][1]


def test_a_sweep_without_a_confirmation_part_gets_a_proposal_and_no_confirmation(tmp_path, capsys):
    sweep_folder(tmp_path)
    saved = yaml.safe_load((tmp_path / CONFIG_FILE).read_text())
    saved["eval"]["confirm_fraction"] = 0.0
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(saved))
    assert sweep_main(["--confirm", str(tmp_path), "--dry-run"]) == 1
    assert "eval.confirm_fraction 0" in capsys.readouterr().out
    proposal = json.loads((tmp_path / PROPOSAL_FILE).read_text())
    assert proposal["proposals"] and proposal["confirmation"]["status"].startswith("no confirm")
    assert not list(tmp_path.glob("confirm-r*"))


def test_the_report_and_the_wandb_summary_carry_the_mixture_section(tmp_path, monkeypatch):
    _, rows = sweep_folder(tmp_path)
    report = write_report(tmp_path).read_text()
    assert "## Which mixture: the mixture law" in report and f"({CV_CHART})" in report
    assert report.index("## Which mixture") < report.index("## Charts")
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = log_summary(rows, "ecomtrain-test", "mix", "offline", tmp_path)
    media = run_dir / "files" / "media"
    assert list(media.glob("table/mixture/cv_*.table.json"))
    assert list(media.glob("table/mixture/proposals_*.table.json"))


def test_a_sweep_that_fits_no_law_has_no_mixture_section(tmp_path):
    sweep_folder(tmp_path)
    saved = yaml.safe_load((tmp_path / CONFIG_FILE).read_text())
    saved["sweep"]["mixtures"]["fit"] = False
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(saved))
    assert "Which mixture" not in write_report(tmp_path).read_text()
    assert not (tmp_path / LAW_FILE).exists()
