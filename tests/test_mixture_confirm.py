"""A sweep of mixtures trained end to end, then `sweep --confirm` on its folder: the law's
proposal, and the confirmation sweep's arms trained with fresh seeds and compared on the
confirmation records (slow: 4 + up to 9 short trials of the tiny model)."""

import json

import pytest

from ecomtrain.report.proposal import CONFIRMATION_FILE, PROPOSAL_FILE
from ecomtrain.report.trials import load_trials

pytestmark = pytest.mark.slow
SWEEP = [
    "sweep.name=mix",
    "sweep.subsets={pair: [attribute_inference_mcq, review_rating]}",
    "sweep.mixtures.draws=3",
    "sweep.mixtures.uniform=false",  # the stratified mixture is the uniform one here
    "sweep.ranks=[2]",
    "sweep.max_concurrent_trials=2",
    "train.max_steps=4",
    "train.eval_every=0",
    "eval.max_new_tokens=4",
]


def test_a_trained_sweep_of_mixtures_is_confirmed_on_fresh_seeds(tmp_path, run_cli):
    out = tmp_path / "sweep"
    run_cli("ecomtrain.sweep", "--output", str(out), *SWEEP)
    rows = load_trials(out / "trials.csv")
    assert {r["mixture"] for r in rows} == {
        "stratified",
        "dirichlet-1",
        "dirichlet-2",
        "dirichlet-3",
    }
    assert all(r["mix/review_rating"] is not None and r["confirm/score"] is not None for r in rows)
    assert "## Which mixture: the mixture law" in (out / "report.md").read_text()

    proc = run_cli("ecomtrain.sweep", "--confirm", str(out))
    proposal = json.loads((out / PROPOSAL_FILE).read_text())
    assert [p["rank"] for p in proposal["proposals"]] == [2]
    confirmed = load_trials(out / "confirm-r2" / "trials.csv")
    arms = {r["mixture"] for r in confirmed}
    assert {"proposed", "stratified"} <= arms and len(confirmed) == 3 * len(arms)
    assert {r["seed"] for r in confirmed} == {1, 2, 3}  # none of the sweep's (0)
    figures = json.loads((out / CONFIRMATION_FILE).read_text())
    assert figures["confirmed"] and figures["metric"] == "confirm/score"
    proposed = next(a for a in figures["arms"] if a["mixture"] == "proposed")
    assert proposed["seeds"] == 3 and proposed["vs_stratified"]["test"] == "paired by seed"
    assert "confirmation of" in proc.stdout
