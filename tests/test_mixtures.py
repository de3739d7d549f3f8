"""Mixtures as a dimension of the sweep (tuning/mixtures.py): the draws, the baselines, a
trial's data config, the config errors, and the columns trials.csv carries. No Ray."""

from types import SimpleNamespace

import numpy as np
import pytest

from ecomtrain.config import ConfigError, load_config
from ecomtrain.data.mixture import targets
from ecomtrain.report.trials import load_trials, swept_keys, trial_rows, write_csv
from tuning.mixtures import draws, sizes
from tuning.run import trial_key
from tuning.space import grid_points, mixture_subset, param_space, sweep_mixtures, trial_config

TASKS = ["attribute_inference_mcq", "review_rating", "query_ner"]
SUBSET = f"sweep.subsets={{trio: [{', '.join(TASKS)}]}}"


def config(*overrides: str):
    return load_config(None, [SUBSET, *overrides])


def test_baselines_first_then_seeded_draws_on_the_simplex():
    cfg = config("sweep.mixtures.draws=6", "sweep.mixtures.seed=3")
    mixes = sweep_mixtures(cfg)
    assert [m["id"] for m in mixes[:3]] == ["stratified", "uniform", "dirichlet-1"]
    assert len(mixes) == 8 and mixes[0]["shares"] == {}
    assert mixes[1]["shares"] == {t: pytest.approx(1 / 3, abs=1e-4) for t in TASKS}
    for m in mixes[1:]:
        assert list(m["shares"]) == TASKS and sum(m["shares"].values()) == pytest.approx(1, 1e-3)
        assert min(m["shares"].values()) >= 0
    assert sweep_mixtures(cfg) == mixes  # reproducible
    other = sweep_mixtures(config("sweep.mixtures.draws=6", "sweep.mixtures.seed=4"))
    assert other[2:] != mixes[2:]


def test_concentration_and_prior_set_where_the_draws_fall():
    subset = mixture_subset(config())
    far = config("sweep.mixtures.draws=200", "sweep.mixtures.concentration=0.2")
    near = config("sweep.mixtures.draws=200", "sweep.mixtures.concentration=200")
    spread = [np.std([d[TASKS[0]] for d in draws(c, subset)]) for c in (far, near)]
    assert spread[0] > 0.3 > 0.05 > spread[1]  # corners vs the prior's neighbourhood
    by_size = config("sweep.mixtures.draws=400", "sweep.mixtures.prior=size")
    size = sizes(by_size, subset)
    prior = np.array([size[t] for t in TASKS]) / sum(size.values())
    mean = np.mean([[d[t] for t in TASKS] for d in draws(by_size, subset)], axis=0)
    assert mean == pytest.approx(prior, abs=0.03)


def test_a_grid_of_mixtures_ranks_and_seeds_and_what_each_trial_trains_on():
    cfg = config("sweep.mixtures.draws=3", "sweep.ranks=[2, 8]", "sweep.seeds=[0, 1]")
    points = grid_points(cfg)
    assert len(points) == 5 * 2 * 2
    assert [p["mixture"]["id"] for p in points[:4]] == ["stratified"] * 4  # rank, seed vary faster
    assert param_space(cfg)["mixture"]["grid_search"] == sweep_mixtures(cfg)
    assert trial_key(points[-1]) == ("trio-dirichlet-3-r8", "trio-dirichlet-3-r8-s1")
    strat = trial_config(cfg, points[0]).data
    assert (strat.weighting, strat.temperature, strat.task_weights) == ("size", 1.0, {})
    data = trial_config(cfg, points[-1]).data
    shares = points[-1]["mixture"]["shares"]
    assert data.weighting == "shares" and data.task_weights == shares
    planned = targets({t: [50, 300, 1000][i] for i, t in enumerate(TASKS)}, data)
    total = sum(planned.values())
    assert {t: v / total for t, v in planned.items()} == pytest.approx(shares, abs=1e-9)
    caps = trial_config(config("sweep.mixtures.draws=2", "sweep.mixtures.over=capabilities"), {
        "subset": mixture_subset(cfg),
        "rank": 4,
        "mixture": {"id": "m", "over": "capabilities", "shares": {"user-behavior-alignment": 1}},
    }).data  # fmt: skip
    assert caps.weighting == "shares" and caps.capability_weights["user-behavior-alignment"] == 1


def test_given_mixtures_are_normalised_and_unnamed_tasks_get_none():
    cfg = config(
        "sweep.mixtures.given={heavy: {query_ner: 3, review_rating: 1}}", "sweep.mixtures.draws=2"
    )
    heavy = next(m for m in sweep_mixtures(cfg) if m["id"] == "heavy")
    assert heavy["shares"] == {
        "attribute_inference_mcq": 0.0,
        "review_rating": 0.25,
        "query_ner": 0.75,
    }


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["sweep.mixtures.draws=1"], "3 mixtures (stratified and uniform, 0 given, 1 drawn) are "
         "fewer than the mixture law needs for 3 tasks: at least 5"),
        (["sweep.mixtures.given={x: {no_such: 1}}", "sweep.mixtures.fit=false"],
         "sweep.mixtures.given.x: 'no_such' is not one of the tasks of the sweep's subset"),
        (["sweep.mixtures.draws=9", "sweep.subsets={a: [query_ner], b: [review_rating]}"],
         "a sweep of mixtures weighs the tasks of one subset, this one has 2 (a, b)"),
    ],
)  # fmt: skip
def test_mixtures_the_sweep_cannot_use_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sweep_mixtures(load_config(None, [SUBSET, *overrides]))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["sweep.mixtures.draws=5", "data.task_weights={query_ner: 2}"],
         "data.task_weights: set per trial by sweep.mixtures"),
        (["sweep.mixtures.draws=5", "sweep.params={data.capability_weights: [{}]}"],
         "data.capability_weights: set per trial by sweep.mixtures"),
        (["sweep.mixtures.draws=5", "sweep.search=optuna"], "optuna does not search mixtures"),
        (["sweep.mixtures.given={x: {query_ner: -1}}"],
         "sweep.mixtures.given.x.query_ner: -1.0 must be >= 0"),
        (["sweep.mixtures.given={x: {query_ner: 0}}"], "sweep.mixtures.given.x: every share is 0"),
        (["sweep.mixtures.given={uniform: {query_ner: 1}}"], "the name of a baseline or a draw"),
        (["sweep.mixtures.concentration=0"], "sweep.mixtures.concentration: 0.0 must be > 0"),
        (["sweep.mixtures.over=capabilities", "sweep.mixtures.given={x: {shoes: 1}}"],
         "sweep.mixtures.given.x key 'shoes': expected one of understanding-shopping-concepts"),
    ],
)  # fmt: skip
def test_bad_mixture_settings_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        config(*overrides)


def _result(mixture: str, rank: int, shares: dict, score: float):
    metrics = {"score": score, "loss": 1.0, "time_total_s": 3.0, "eval_loss/query_ner": 2.5}
    metrics |= {f"mixture/share/{t}": v for t, v in shares.items()}
    metrics["mixture/capability_share/user-behavior-alignment"] = shares["review_rating"]
    subset = {"id": "trio", "tasks": TASKS, "n_tasks": 3, "n_capabilities": 2}
    point = {"subset": subset, "rank": rank, "mixture": {"id": mixture, "over": "tasks"}}
    return SimpleNamespace(config=point, metrics=metrics, path=f"/x/{mixture}-{rank}", error=None)


def test_trials_csv_carries_each_trials_mixture_and_its_realised_shares(tmp_path):
    even = dict.fromkeys(TASKS, 1 / 3)
    results = [
        _result("dirichlet-1", 4, {"attribute_inference_mcq": 0.2, "review_rating": 0.8,
                                   "query_ner": 0.0}, 0.4),
        _result("uniform", 4, even, 0.5),
        _result("stratified", 4, even, 0.45),
    ]  # fmt: skip
    write_csv(trial_rows(results), tmp_path / "trials.csv")
    rows = load_trials(tmp_path / "trials.csv")
    assert [r["mixture"] for r in rows] == [
        "stratified",
        "uniform",
        "dirichlet-1",
    ]  # baselines first
    top = rows[2]
    assert top["mix/review_rating"] == 0.8 and top["mix/query_ner"] == 0.0
    assert top["mix_cap/user-behavior-alignment"] == 0.8 and top["eval_loss/query_ner"] == 2.5
    assert swept_keys(top) == ["mixture"]  # the report compares mixtures, not shares
    header = (tmp_path / "trials.csv").read_text().splitlines()[0].split(",")
    assert header.index("mixture") < header.index("mix/query_ner")


def test_dry_run_prints_each_trials_mixture(capsys):
    from ecomtrain.sweep import main

    assert main(["--dry-run", SUBSET, "sweep.mixtures.draws=3", "sweep.ranks=[4]"]) == 0
    lines = capsys.readouterr().out.splitlines()
    mixes = [line.split()[1:] for line in lines if line.startswith("        mixture ")]
    assert [m[0] for m in mixes] == ["stratified:", "uniform:", "dirichlet-1:", "dirichlet-2:",
                                     "dirichlet-3:"]  # fmt: skip
    shares = [float(x.rstrip(",")) for x in mixes[1][2::2]]
    assert shares == pytest.approx([1 / 3] * 3, abs=1e-3)
    assert main(["--dry-run", SUBSET, "sweep.mixtures.draws=1"]) == 2  # too few for the law
