"""The mixture law (ecomtrain/report/mixture_law.py) on synthetic trial tables: it recovers a
known function and its optimum, and says plainly when it has too few trials or does not
converge."""

import numpy as np
import pytest

from ecomtrain.report.mixture_law import fit_law, table
from ecomtrain.report.proposal import proposal_text

# three tasks of three capabilities: each counts a third of the overall score
TASKS = ["query_ner", "review_rating", "numeric_reasoning"]
LEVEL, GAIN, RATE = np.array([0.9, 0.85, 0.8]), np.array([0.6, 0.5, 0.4]), np.array([2, 5, 10])


def truth(shares: np.ndarray, rank: int) -> np.ndarray:
    """Each task's score: it rises with its own share, faster at a higher rank."""
    speed = RATE * (1 + 0.25 * np.log2(rank / 4))
    return LEVEL - GAIN * np.exp(-np.atleast_2d(shares) * speed)


def optimum(rank: int) -> tuple[np.ndarray, float]:
    """The true best mixture and its score, by brute force on a fine lattice."""
    g = np.linspace(0, 1, 401)
    a, b = np.meshgrid(g, g)
    ok = a + b <= 1
    shares = np.column_stack([a[ok], b[ok], 1 - a[ok] - b[ok]])
    score = truth(shares, rank).mean(axis=1)
    return shares[np.argmax(score)], float(score.max())


def rows_of(n_mixtures: int, ranks=(4,), noise=0.0, seed=0) -> list[dict]:
    rng = np.random.default_rng(seed)
    mixes = rng.dirichlet(np.ones(3), n_mixtures)
    rows = []
    for i, shares in enumerate(mixes):
        for rank in ranks:
            scores = truth(shares, rank)[0] + rng.normal(0, noise, 3)
            row = {"trial": f"t{i}-r{rank}", "mixture": f"dirichlet-{i + 1}", "rank": rank}
            row |= {"score": float(scores.mean()), "error": "", "metric": "score"}
            row |= {f"mix/{t}": float(s) for t, s in zip(TASKS, shares, strict=True)}
            row |= {f"task/{t}": float(s) for t, s in zip(TASKS, scores, strict=True)}
            row |= {f"eval_loss/{t}": float(2 - s) for t, s in zip(TASKS, scores, strict=True)}
            rows.append(row)
    return rows


def test_the_table_is_the_scored_trials_shares_and_per_task_scores():
    rows = rows_of(6) + [{"trial": "bad", "rank": 4, "score": None, "error": "boom"}]
    t = table(rows)
    assert t.names == sorted(TASKS) and t.shares.shape == (6, 3) and len(t.trial) == 6
    assert t.objective == pytest.approx([r["score"] for r in rows[:6]])  # ShopBench's weights
    loss = table(rows, target="loss")
    assert loss.targets[0].startswith("eval_loss/") and (loss.objective < 0).all()


def test_the_exp_law_recovers_a_known_law_and_its_optimum():
    law = fit_law(rows_of(24, ranks=(4, 16)), families=("exp", "linear"), boot=10)
    assert law.ok and law.chosen == "exp", law.message
    exp = next(f for f in law.families if f.name == "exp")
    assert exp.rmse < 1e-3 and exp.spearman > 0.99 and exp.rmse_ci[0] <= exp.rmse <= exp.rmse_ci[1]
    linear = next(f for f in law.families if f.name == "linear")
    assert linear.rmse > 10 * exp.rmse  # a straight line cannot bend to an inside optimum
    for proposal in law.proposals:
        best, value = optimum(proposal.rank)
        got = np.array([proposal.shares[t] for t in sorted(TASKS)])
        want = best[np.argsort(TASKS)]
        assert got == pytest.approx(want, abs=0.02), proposal.rank
        assert proposal.predicted == pytest.approx(value, abs=2e-3)
        assert proposal.interval[0] <= value <= proposal.interval[1]
        assert proposal.best_observed["observed"] <= value + 1e-9


def test_the_gaussian_process_finds_the_optimum_from_noisy_trials():
    law = fit_law(rows_of(30, noise=0.01, seed=1), families=("gp",), boot=5)
    assert law.ok and law.chosen == "gp", law.message
    (proposal,) = law.proposals
    best, value = optimum(4)
    got = np.array([proposal.shares[t] for t in TASKS])
    assert np.abs(got - best).max() < 0.12
    assert truth(got, 4).mean() > value - 0.01  # what the proposal would truly score
    gp = law.families[0]
    assert gp.spearman > 0.8 and gp.spearman_ci[0] < gp.spearman < gp.spearman_ci[1]
    assert law.caution == ""  # it ranks the trials out of sample


def test_a_law_that_does_not_rank_the_trials_says_its_proposal_is_a_guess():
    """Scores that are noise about the mixtures: no family ranks them with their mixture
    left out, and the fit says so beside its proposal (a law that does rank them carries no
    such caution: the Gaussian process's test)."""
    rows = rows_of(8, seed=3)
    rng = np.random.default_rng(4)
    for row in rows:
        noise = rng.uniform(0.2, 0.8, len(TASKS))
        row |= {f"task/{t}": float(v) for t, v in zip(TASKS, noise, strict=True)}
        row["score"] = float(noise.mean())
    law = fit_law(rows, families=("linear",), boot=5)
    assert law.ok and law.families[0].spearman_ci[0] <= 0
    assert law.caution.startswith("the linear law does not rank the trials better than chance")
    assert "CAUTION: the linear law" in proposal_text(law)


def test_the_proposal_stays_where_trials_went():
    """Every task's score rises with query_ner's share, but no trial gave it more than 0.5
    nor less than 0.1: the proposal goes to the edge of that range, not to the corner the
    law would extrapolate to."""
    rows = rows_of(12, seed=2)
    for row in rows:
        shares = np.array([row[f"mix/{t}"] for t in TASKS])
        shares[0] = 0.1 + 0.4 * shares[0]  # query_ner in [0.1, 0.5], the rest rescaled
        shares[1:] *= (1 - shares[0]) / shares[1:].sum()
        row |= {f"mix/{t}": float(v) for t, v in zip(TASKS, shares, strict=True)}
        row |= {f"task/{t}": 0.2 + 0.6 * float(shares[0]) for t in TASKS}
        row["score"] = 0.2 + 0.6 * float(shares[0])
    law = fit_law(rows, families=("linear",), boot=5)
    assert law.ok, law.message
    (proposal,) = law.proposals
    tried = [row["mix/query_ner"] for row in rows]
    assert proposal.shares["query_ner"] == pytest.approx(max(tried), abs=0.01)
    assert proposal.predicted == pytest.approx(0.2 + 0.6 * max(tried), abs=0.01)


def test_the_exp_law_does_not_explode_off_its_mixtures():
    """Fitted on y = exp(5 r) for shares r in [0.3, 0.7], its prediction at r = 1 (exp(5),
    about 148) is held within the fitted range widened by its span."""
    from ecomtrain.report.mixture_law import ExpLaw

    r = np.linspace(0.3, 0.7, 9)
    x = np.column_stack([r, 1 - r])
    y = np.exp(5 * r)[:, None]
    law = ExpLaw(2).fit(x, y)
    assert law.predict(x) == pytest.approx(y, rel=1e-3)  # on its mixtures: the law itself
    far = law.predict(np.array([[1.0, 0.0], [0.0, 1.0]]))[:, 0]
    span = np.ptp(y)
    assert far[0] == pytest.approx(y.max() + span) and far[1] >= y.min() - span


def test_a_kl_penalty_keeps_the_proposal_near_the_stratified_prior():
    rows = rows_of(12)
    for r in rows[:1]:
        r["mixture"] = "stratified"
    free = fit_law(rows, families=("exp",), boot=0)
    held = fit_law(rows, families=("exp",), boot=0, kl=1.0)
    assert held.proposals[0].kl < free.proposals[0].kl
    assert held.prior == pytest.approx({t: rows[0][f"mix/{t}"] for t in sorted(TASKS)}, abs=1e-9)


def test_too_few_trials_is_said_plainly_and_proposes_nothing():
    law = fit_law(rows_of(4))
    assert not law.ok and law.proposals == [] and law.families == []
    assert law.message == (
        "too few trials for the mixture law: 4 scored trials over 4 mixtures; a law of 3 "
        "shares needs at least 5 mixtures and 5 trials. No proposal."
    )
    ranked = fit_law(rows_of(4, ranks=(4, 16)))
    assert "a law of 3 shares and the rank needs at least 5 mixtures and 6 trials" in ranked.message


def test_a_fit_that_does_not_converge_is_said_plainly_and_proposes_nothing():
    law = fit_law(rows_of(12), families=("exp",), max_evals=1)
    assert not law.ok and law.chosen is None and law.proposals == []
    assert law.message.startswith("no family of the mixture law converged (exp: least squares")
    assert "No proposal." in law.message
    (exp,) = law.families
    assert not exp.converged and exp.rmse is None


def test_a_sweep_stopped_before_any_trial_finished_says_so():
    rows = [{"trial": f"t{i}", "subset": "s", "rank": 4, "score": None, "mixture": f"m{i}",
             "error": "stopped"} for i in range(6)]  # fmt: skip
    law = fit_law(rows)
    assert not law.ok and not law.proposals and law.message.startswith("no mixture to fit")
