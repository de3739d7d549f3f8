"""The held-out sample: stable, unbiased, sized to a target standard error, and split into a
selection part (what trials are ranked on) and a confirmation part (what confirms the best)."""

import json
import math

import pytest

from ecomtrain.config import Config
from ecomtrain.data.overlap import exact_key
from ecomtrain.data.scan import is_eval
from ecomtrain.evaluate import answer
from ecomtrain.evaluate.answer import CONFIRM, SELECT, evaluate_rows
from ecomtrain.evaluate.held_out import held_out_sample, held_out_sizes, part_of

TRACKS = {"a": "k1", "b": "k1", "c": "k2"}


def cfg(target_se=0.0, cap=0, confirm=0.0) -> Config:
    c = Config()
    c.eval.target_se, c.data.max_eval_per_task = target_se, cap
    c.eval.confirm_fraction = confirm
    return c


def test_sizes_without_a_target_are_the_cap():
    sizes, bound = held_out_sizes({"a": 50, "b": 5, "c": 80}, TRACKS, cfg(cap=20))
    assert sizes == {"a": 20, "b": 5, "c": 20}
    # weights: a and b 1/4 each (two tasks in track k1), c 1/2
    want = math.sqrt((1 / 16) / (4 * 20) + (1 / 16) / (4 * 5) + (1 / 4) / (4 * 20))
    assert bound == pytest.approx(want)


def test_a_target_is_reached_with_weights_in_proportion():
    sizes, bound = held_out_sizes({"a": 10_000, "b": 10_000, "c": 10_000}, TRACKS, cfg(0.02))
    assert bound <= 0.02 and bound > 0.019
    assert sizes["c"] == pytest.approx(2 * sizes["a"], rel=0.01) and sizes["a"] == sizes["b"]


def test_the_target_is_the_selection_parts():
    """With a confirmation part, the sample grows so that the part trials are ranked on
    (1 - eval.confirm_fraction of it) still reaches eval.target_se."""
    available = {"a": 10_000, "b": 10_000, "c": 10_000}
    sizes, bound = held_out_sizes(available, TRACKS, cfg(0.02, confirm=0.25))
    alone, _ = held_out_sizes(available, TRACKS, cfg(0.02))
    assert sizes["c"] == pytest.approx(alone["c"] / 0.75, rel=0.01)
    assert bound / 0.75**0.5 == pytest.approx(0.02, rel=0.01)


def test_a_small_task_is_used_whole_and_the_rest_make_up_for_it():
    sizes, bound = held_out_sizes({"a": 100, "b": 10_000, "c": 10_000}, TRACKS, cfg(0.02))
    assert sizes["a"] == 100 and sizes["b"] > 100  # b makes up for a (same weight)
    assert 0.0199 < bound <= 0.02
    sizes, bound = held_out_sizes({"a": 3, "b": 3, "c": 3}, TRACKS, cfg(0.01))
    assert sizes == {"a": 3, "b": 3, "c": 3} and bound > 0.01  # the data cannot reach it


def _rows(n=100, task="a"):
    return [
        {"task_family": task, "capability": TRACKS[task], "input": f"question {i:03d}",
         "source": f"{task}:{i}"}
        for i in range(n)
    ]  # fmt: skip


def test_the_sample_is_by_hash_not_by_text():
    rows = _rows()
    picked, message = held_out_sample(rows, cfg(cap=10))
    want = sorted(rows, key=lambda r: exact_key(r["input"]))[:10]
    assert [{k: r[k] for k in want[0]} for r in picked] == want and picked[0] != rows[0]
    assert picked == held_out_sample(list(reversed(rows)), cfg(cap=10))[0]  # order-free
    assert "10 held-out records over 1 tasks" in message


def test_a_records_part_follows_from_its_own_text():
    """part_of: the same part for a record whatever the sample around it, equal for texts
    equal after normalisation, about the fraction asked for, and independent of the
    train/eval split (which hashes the same text unsalted)."""
    texts = [f"Which product fits query number {i}?" for i in range(4000)]
    parts = [part_of({"input": t}, 0.25) for t in texts]
    assert set(parts) == {SELECT, CONFIRM}
    assert 0.22 < parts.count(CONFIRM) / len(parts) < 0.28
    assert part_of({"input": "WHICH product fits query number 7"}, 0.25) == parts[7]
    assert all(part_of({"input": t}, 0.0) == SELECT for t in texts[:50])
    held = [t for t in texts if is_eval(t, 0.25)]  # the train/eval split's own quarter
    share = sum(part_of({"input": t}, 0.25) == CONFIRM for t in held) / len(held)
    assert 0.2 < share < 0.3  # not the same quarter


def test_the_sample_carries_each_records_part_and_says_the_sizes():
    rows = _rows(80, "a") + _rows(80, "c")
    picked, message = held_out_sample(rows, cfg(cap=40, confirm=0.25))
    assert all(r["part"] == part_of(r, 0.25) for r in picked)  # no task lacks selection
    n_confirm = sum(r["part"] == CONFIRM for r in picked)
    assert 0 < n_confirm < len(picked)
    assert f"{len(picked) - n_confirm} records" in message
    assert f"{n_confirm} records" in message and "eval.confirm_fraction 0.25" in message
    # a sample of a few records per task may leave a task out of a part: said, not hidden
    select = [r for r in _rows(80, "a") if part_of(r, 0.25) == SELECT][:3]
    _, message = held_out_sample(select + rows[80:], cfg(cap=40, confirm=0.25))
    assert "no confirmation record for a: the confirmation part's scores leave it out" in message
    # a task whose records would all be confirmation records keeps them for selection
    confirm = [r for r in rows[80:] if part_of(r, 0.25) == CONFIRM]
    picked, message = held_out_sample(select + confirm, cfg(confirm=0.25))
    assert {r["part"] for r in picked} == {SELECT} and "no confirmation record for a, c" in message


def test_trials_are_scored_on_the_selection_part_and_confirm_on_the_other(monkeypatch):
    """evaluate_rows scores every row once: the metrics trials are ranked and stopped on
    come from the selection part, confirm/* from the confirmation part, and each per-record
    entry carries its part."""
    rows = []
    for i in range(12):
        rows.append({"source": f"f:{i}", "input": f"q{i}", "answer": "1", "task_type":
                     "multiple-choice", "metric": "accuracy", "task_family": "t" + "xy"[i % 2],
                     "task_name": "", "capability": "k1", "output_json": json.dumps(1),
                     "part": CONFIRM if i >= 8 else SELECT})  # fmt: skip
    right = {0, 1, 2, 3, 8}  # selection: 4 of 8 right; confirmation: 1 of 4
    monkeypatch.setattr(
        answer, "respond", lambda m, t, rs, *a: ["1" if i in right else "2" for i in range(len(rs))]
    )
    monkeypatch.setattr(answer, "answer_losses", lambda m, t, rs, *a: [(1.0, 1)] * len(rs))
    flat, entries = evaluate_rows(None, None, rows, Config())
    assert flat["score"] == pytest.approx(0.5) and flat["eval_records"] == 12
    assert flat["confirm/score"] == pytest.approx(0.25) and flat["confirm/records"] == 4
    assert flat["task/tx"] == pytest.approx(0.5) and flat["confirm/task/tx"] == pytest.approx(0.5)
    assert flat["confirm/track/k1"] == pytest.approx(0.25)
    assert [e["part"] for e in entries] == [r["part"] for r in rows]
    assert not any(k.startswith("confirm/eval_loss") for k in flat)
    # rows without a part (an extra eval file, a caller's own rows) are all selection
    plain = [{k: v for k, v in r.items() if k != "part"} for r in rows]
    flat, entries = evaluate_rows(None, None, plain, Config())
    assert flat["score"] == pytest.approx(5 / 12) and "confirm/score" not in flat
    assert {e["part"] for e in entries} == {SELECT}
