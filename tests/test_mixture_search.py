"""The mixture search (tuning/mixture_search.py) and ASHA within each rank
(tuning/rank_asha.py): their decisions without Ray, then both inside a real Tuner."""

import os
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
from ray import tune
from ray.tune.schedulers import TrialScheduler

from ecomtrain.bench.mixture import TASKS, Surface
from ecomtrain.config import load_config
from ecomtrain.report.trials import load_trials, trial_rows, write_csv
from tuning.mixture_search import MixtureSearch
from tuning.run import run_sweep, scheduler, search_alg
from tuning.space import param_space, trial_config

SUBSET = "sweep.subsets={trio: [attribute_inference_mcq, review_rating, query_ner]}"


def test_asha_by_rank_measures_a_trial_against_its_own_rank_only():
    """A rank-8 trial behind a rank-2 one at the first rung: ASHA stops it, ASHA by rank
    lets it go on (it is the first of its rank)."""
    rule = ["train.max_steps=4", "sweep.grace_period=1", "sweep.reduction_factor=2"]
    stops = {}
    for kind in ("asha", "asha-by-rank"):
        sched = scheduler(load_config(None, [*rule, f"sweep.scheduler={kind}"]))
        low = SimpleNamespace(trial_id="low", config={"rank": 2})
        high = SimpleNamespace(trial_id="high", config={"rank": 8})
        for t in (low, high):
            sched.on_trial_add(None, t)
        assert sched.on_trial_result(None, low, {"step": 1, "score": 0.9}) == "CONTINUE"
        stops[kind] = sched.on_trial_result(None, high, {"step": 1, "score": 0.5})
    assert stops == {"asha": TrialScheduler.STOP, "asha-by-rank": TrialScheduler.CONTINUE}
    restored = pickle.loads(pickle.dumps(sched))  # Tune checkpoints it
    assert set(restored.by_rank) == {2, 8}


def simulated(search: MixtureSearch, surface: Surface, n: int, seed: int = 0) -> list:
    """`n` trials of the search on the simulated surface: (mixture id, rank, true score)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        point = search.suggest(f"t{i}")
        shares = np.array([point["mixture"]["shares"][t] for t in TASKS])
        observed = surface.observe(shares, point["rank"], surface.max_steps, rng)
        result = {"score": float(observed.mean())}
        result |= {f"mixture/share/{t}": float(s) for t, s in zip(TASKS, shares, strict=True)}
        search.on_trial_complete(f"t{i}", result)
        out.append((point["mixture"]["id"], point["rank"], surface.score(shares, point["rank"])[0]))
    return out


def searcher(seed: int = 0, ranks=(8, 32)) -> MixtureSearch:
    rng = np.random.default_rng(seed)
    start = [
        {
            "id": f"dirichlet-{i + 1}",
            "over": "tasks",
            "shares": dict(zip(TASKS, d.tolist(), strict=True)),
        }
        for i, d in enumerate(rng.dirichlet(np.ones(4), 3))
    ]
    subset = {"id": "sim", "tasks": TASKS}
    alphas = dict.fromkeys(ranks, 1.0)
    return MixtureSearch("score", subset, TASKS, "tasks", start, alphas, 1.0, seed, 600)


def test_the_search_starts_with_the_sweeps_mixtures_then_climbs_the_law():
    surface = Surface(0, 600, 0.01)
    trials = simulated(searcher(), surface, 18)
    first = [(m, r) for m, r, _ in trials[:6]]
    assert first == [(f"dirichlet-{i}", r) for i in (1, 2, 3) for r in (8, 32)]
    assert [m for m, _, _ in trials[6:]] == [f"search-{i}" for i in range(7, 19)]
    start, searched = [v for *_, v in trials[:6]], [v for *_, v in trials[6:]]
    best, _, _ = surface.best([8, 32])
    assert max(searched) > max(start) and best - max(searched) < 0.02
    assert np.mean(searched[-6:]) > np.mean(start)


def test_the_search_resumes_where_it_stood_and_spreads_trials_that_run_at_once():
    surface = Surface(0, 600, 0.01)
    a, b = searcher(), searcher()
    simulated(a, surface, 8)
    simulated(b, surface, 8)
    copy = pickle.loads(pickle.dumps(a))  # what Tune's save and restore keep
    assert copy.suggest("x")["mixture"] == a.suggest("x")["mixture"]
    # two suggestions before any result: the second does not repeat the first
    one, two = b.suggest("p1"), b.suggest("p2")
    assert one["mixture"]["shares"] != two["mixture"]["shares"]


def test_a_stratified_trial_counts_with_the_shares_it_realised():
    cfg = load_config(None, [SUBSET, "sweep.search=mixture", "sweep.mixtures.draws=3",
                             "sweep.num_samples=8", "sweep.ranks=[4]"])  # fmt: skip
    search = search_alg(cfg)
    assert isinstance(search, MixtureSearch) and param_space(cfg) == {}
    point = search.suggest("t0")
    assert point["mixture"]["id"] == "stratified" and point["alpha"] == 8.0
    assert trial_config(cfg, point).data.weighting == "size"
    tasks = point["subset"]["tasks"]
    result = {"score": 0.5} | {
        f"mixture/share/{t}": s for t, s in zip(tasks, [2, 1, 1], strict=True)
    }
    search.on_trial_complete("t0", result)
    ((shares, rank, step, value),) = search.seen.values()
    assert shares == pytest.approx([0.5, 0.25, 0.25])
    assert (rank, step, value) == (4, cfg.train.max_steps, 0.5)
    search.on_trial_complete("t1", {"score": 0.4})  # never suggested: nothing learnt
    assert len(search.seen) == 1


@pytest.mark.slow
def test_a_mixture_search_under_asha_by_rank_runs_in_tunes_own_loop(local_ray, tmp_path):
    """Simulated trials (no training) through the sweep's Tuner: the searcher's points are
    trials like a grid's, ASHA within each rank stops some, trials.csv carries them."""
    cfg = load_config(
        None,
        [SUBSET, "sweep.search=mixture", "sweep.mixtures.draws=3", "sweep.num_samples=12",
         "sweep.ranks=[2, 8]", "sweep.scheduler=asha-by-rank", "sweep.grace_period=2",
         "sweep.reduction_factor=2", "train.max_steps=6", "wandb.mode=disabled",
         "sweep.name=search"],
    )  # fmt: skip
    surface = Surface(0, 6, 0.01)

    def trial(point):
        shares = np.array(list(point["mixture"]["shares"].values()) or [1 / 3] * 3)
        for step in (2, 4, 6):
            score = float(surface.score(np.r_[shares, 0.0], point["rank"], step)[0])
            metrics = {"step": step, "score": score}
            names = point["subset"]["tasks"]
            metrics |= {f"mixture/share/{t}": float(s) for t, s in zip(names, shares, strict=True)}
            tune.report(metrics)

    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    fn = tune.with_resources(trial, {"CPU": 0.01})
    results = run_sweep(cfg, str(tmp_path), str(tmp_path), fn=fn)
    assert len(results) == 12 and not results.errors
    write_csv(trial_rows(results), tmp_path / "trials.csv")
    rows = load_trials(tmp_path / "trials.csv")
    ids = {r["mixture"] for r in rows}
    assert {"stratified", "uniform", "dirichlet-3"} <= ids and any(
        i.startswith("search-") for i in ids
    )
    assert {r["rank"] for r in rows} == {2, 8}
    assert all(r["mix/query_ner"] is not None for r in rows)
    assert any(r["wall_s"] is not None for r in rows)
