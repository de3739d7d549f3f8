"""The held-out sample: stable, unbiased, sized to a target standard error."""

import math

import pytest

from ecomtrain.config import Config
from ecomtrain.data.overlap import exact_key
from ecomtrain.evaluate.held_out import held_out_sample, held_out_sizes

TRACKS = {"a": "k1", "b": "k1", "c": "k2"}


def cfg(target_se=0.0, cap=0) -> Config:
    c = Config()
    c.eval.target_se, c.data.max_eval_per_task = target_se, cap
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


def test_a_small_task_is_used_whole_and_the_rest_make_up_for_it():
    sizes, bound = held_out_sizes({"a": 100, "b": 10_000, "c": 10_000}, TRACKS, cfg(0.02))
    assert sizes["a"] == 100 and sizes["b"] > 100  # b makes up for a (same weight)
    assert 0.0199 < bound <= 0.02
    sizes, bound = held_out_sizes({"a": 3, "b": 3, "c": 3}, TRACKS, cfg(0.01))
    assert sizes == {"a": 3, "b": 3, "c": 3} and bound > 0.01  # the data cannot reach it


def test_the_sample_is_by_hash_not_by_text():
    rows = [
        {"task_family": "a", "capability": "k1", "input": f"question {i:03d}", "source": f"f:{i}"}
        for i in range(100)
    ]
    picked, message = held_out_sample(rows, cfg(cap=10))
    want = sorted(rows, key=lambda r: exact_key(r["input"]))[:10]
    assert picked == want and picked != rows[:10]
    assert picked == held_out_sample(list(reversed(rows)), cfg(cap=10))[0]  # order-free
    assert "10 held-out records over 1 tasks" in message
