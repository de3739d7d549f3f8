"""Generation building blocks: specs, the plan, dedup, decontamination, the quality gate,
and the crash-safe output folder."""

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from ecomtrain.config import ConfigError
from ecomtrain.data.overlap import (
    Decontaminator,
    Deduplicator,
    MinHashIndex,
    frequent_shingles,
    ngrams,
    words,
)
from ecomtrain.data.records import CorpusError, split_options
from ecomtrain.generate.quality import Reject, balance, dedup_texts, parse_completion, to_record
from ecomtrain.generate.spec import difficulty_order, load_seeds, load_spec, plan
from ecomtrain.generate.store import Store, read_jsonl

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "configs" / "generate").glob("*.yaml"))
MCQ = "Which fits?\n0. red\n1. blue\n2. green\n3. black\nAnswer: "
SPEC = f"""
family: category_attribute_mcq
instruction: Write one question.
target: 10
mix: {{easy: 1, hard: 3}}
seeds: {{items: [lamp, {{category: tent}}]}}
examples:
  - {{difficulty: easy, input_field: {json.dumps(MCQ)}, output_field: 1, why: NEVER-SENT}}
  - {{difficulty: hard, input_field: {json.dumps(MCQ.replace("red", "crimson"))}, output_field: 2}}
"""


@pytest.fixture(autouse=True)
def refdata_env(refdata, monkeypatch):
    monkeypatch.setenv("ECOMTRAIN_REFDATA", str(refdata))


def write_spec(tmp_path, text=SPEC, name="spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_spec_loads_with_examples_per_difficulty(path):
    spec = load_spec(path)
    levels = Counter(ex.difficulty for ex in spec.parsed_examples)
    assert set(levels) == set(spec.mix) and len(levels) >= 2
    assert spec.decontaminate.against, "every spec decontaminates against an eval set"
    assert load_seeds(spec)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s + "colour: red\n", r"spec.yaml: colour: unknown key"),
        (lambda s: s.replace("seeds: {items", "seeds: {paths: [], items"), r"seeds.paths: unknown"),
        (lambda s: s.replace("target: 10", "target: ten"), r"target: expected int, got str"),
        (lambda s: s.replace("hard: 3", "hard: 3, expert: 1"), r"mix.expert: no example"),
        (lambda s: s.replace("difficulty: hard", "difficulty: hrad"), r"examples\[1\].difficulty"),
        (lambda s: s.replace("why: NEVER", "whyy: NEVER"), r"examples\[0\].whyy: unknown key"),
        (lambda s: s.replace("family: category_attribute_mcq", "family: nope"), r"family: unknown"),
        (lambda s: s.replace(json.dumps(MCQ), '"  "'), r"examples\[0\]: input_field: must be"),
        (lambda s: s.replace("1. blue", "one. blue"), r"examples\[0\].*numbered"),
        (
            lambda s: s + "dedup: {against: [$NO_SUCH_VAR/x.json]}\n",
            r"dedup.against\[0\]: \$NO_SUCH_VAR is not expanded",
        ),
        (lambda s: s + "dedup: {against: [nope.json]}\n", r"dedup.against\[0\]: file not found"),
        (lambda s: s.replace("seeds: {items: [lamp, {category: tent}]}", "seeds: {}"), "seeds:"),
    ],
)
def test_spec_errors_name_file_and_key(tmp_path, edit, message):
    with pytest.raises(ConfigError, match=message):
        load_spec(write_spec(tmp_path, edit(SPEC)))


def test_seed_pool_from_a_file_with_field_filter_and_limit(tmp_path, refdata):
    rows = [{"text": f"item {i}", "kind": "a" if i % 2 else "b"} for i in range(10)]
    (tmp_path / "pool.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    seeds = "seeds: {path: pool.jsonl, text_field: text, where: {kind: a}, limit: 3, items: [x]}"
    spec = load_spec(
        write_spec(tmp_path, SPEC.replace("seeds: {items: [lamp, {category: tent}]}", seeds))
    )
    assert load_seeds(spec) == ["item 1", "item 3", "item 5", "x"]
    (tmp_path / "pool.jsonl").write_text('{"text": "a", "kind": "a"}\n{"kind": "a"}\n')
    with pytest.raises(ConfigError, match=r"pool.jsonl:2: text: missing"):
        load_seeds(spec)
    evals = f"\ndecontaminate: {{against: [{refdata}/kddcup24_development.json]}}\n"
    bad = SPEC.replace(
        "{items: [lamp", f"{{path: {refdata}/kddcup24_development.json, items: [lamp"
    )
    with pytest.raises(ConfigError, match="seeds.path: is an eval file"):
        load_spec(write_spec(tmp_path, bad + evals))


def test_plan_is_deterministic_prefix_stable_and_shows_only_its_level(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    seeds = load_seeds(spec)
    items = plan(spec, seeds)
    assert [it.key for it in items] == [it.key for it in plan(spec, seeds)]
    assert len({it.key for it in items}) == 10
    assert Counter(it.difficulty for it in items) == {"easy": 3, "hard": 7}
    for n in range(1, 11):  # every prefix keeps the mix within one item
        assert abs(difficulty_order(spec)[:n].count("hard") - 0.75 * n) <= 1
    for it in items:
        prompt = json.dumps(it.messages)
        assert "NEVER-SENT" not in prompt and "hard" not in prompt
        assert ("crimson" in prompt) == (it.difficulty == "hard")
    spec.target = 25
    assert [it.key for it in plan(spec, seeds)][:10] == [it.key for it in items]


def test_exact_and_near_duplicates():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(500)]
    text = " ".join(rng.choice(vocab) for _ in range(80))
    dedup = Deduplicator(threshold=0.8)
    dedup.add(text, text, "first")
    assert dedup.check(text.upper() + " !!", "other") == ("exact", "first")
    tokens = text.split()
    tokens[40] = "changed"
    kind, label = dedup.check(" ".join(tokens), " ".join(tokens))
    assert kind == "near" and label.startswith("first")
    fresh = " ".join(rng.choice(vocab) for _ in range(80))
    assert dedup.check(fresh, fresh) is None


def test_minhash_estimates_jaccard():
    index = MinHashIndex(threshold=0.5, num_perm=256)
    rng = random.Random(1)
    base = [f"w{rng.randrange(10_000)}" for _ in range(200)]
    for cut in (50, 100, 150):
        other = base[:cut] + [f"x{rng.randrange(10_000)}" for _ in range(200 - cut)]
        a, b = ngrams(words(" ".join(base)), 5), ngrams(words(" ".join(other)), 5)
        true = len(a & b) / len(a | b)
        assert abs(index.signature(a).jaccard(index.signature(b)) - true) < 0.1


def test_the_threshold_decides_what_is_a_near_duplicate():
    """LSH's bands follow dedup.threshold: a pair at Jaccard ~0.65 is caught at 0.5, not 0.8,
    and one at ~0.93 at both (fixed 16x8 bands found a 0.5 pair only ~6 % of the time)."""
    rng = random.Random(3)
    caught = {0.5: 0, 0.8: 0}
    for trial in range(30):
        base = [f"w{rng.randrange(100_000)}" for _ in range(300)]
        for cut, want in ((237, {0.5: True, 0.8: False}), (290, {0.5: True, 0.8: True})):
            other = base[:cut] + [f"y{trial}x{i}" for i in range(300 - cut)]
            for threshold in (0.5, 0.8):
                dedup = Deduplicator(threshold=threshold)
                dedup.add("q", " ".join(base), "base")
                hit = dedup.check("other question", " ".join(other)) is not None
                if cut == 237:
                    caught[threshold] += hit
                else:
                    assert hit == want[threshold]
    assert caught[0.5] >= 27 and caught[0.8] <= 3, caught


def test_near_duplicates_are_judged_on_content_not_template():
    template = " ".join(f"t{i}" for i in range(40))  # a long instruction every record repeats
    rng = random.Random(2)
    queries = [
        f"{template} Query: " + " ".join(f"q{rng.randrange(1000)}" for _ in range(10))
        for _ in range(3)
    ]
    plain = Deduplicator(threshold=0.6)
    plain.add(queries[0], queries[0], "q0")
    assert plain.check(queries[1], queries[1])[0] == "near"  # the template makes them alike
    aware = Deduplicator(threshold=0.6, template=frequent_shingles(queries, 5, min_df=2, frac=0))
    aware.add(queries[0], queries[0], "q0")
    assert aware.check(queries[1], queries[1]) is None
    assert aware.check("q", queries[0] + " extra")[0] == "near"


def test_dedup_texts_sort_options_and_add_the_answer():
    a = {"input_field": MCQ, "output_field": 1, "task_type": "multiple-choice"}
    b = {"input_field": MCQ.replace("0. red\n1. blue", "0. blue\n1. red"), "output_field": 0}
    assert dedup_texts(a) == dedup_texts(b | {"task_type": "multiple-choice"})
    assert dedup_texts(a)[1].endswith("\nblue")
    de = {"input_field": "Translate 'red cup' into German.", "output_field": "roter Becher"}
    fr = {"input_field": "Translate 'red cup' into German.", "output_field": "tasse rouge"}
    assert dedup_texts(de)[0] == dedup_texts(fr)[0] and dedup_texts(de)[1] != dedup_texts(fr)[1]


def test_decontamination_ignores_task_template():
    template = "Which of the following product categories may have the attribute"
    evals = [
        ("dev:1", f"{template} thread count? 0. bed sheet 1. lamp shade with brass fittings", "0"),
        ("dev:2", f"{template} screen size? 0. television 1. garden hose", "0"),
    ]
    decon = Decontaminator(evals, n=8)
    assert decon.check(f"{template} wattage? 0. kettle 1. rug") is None
    hit = decon.check("for sale: bed sheet 1. lamp shade with brass fittings and more")
    assert hit and hit[:2] == ("ngram", "dev:1")
    # Texts given as template (a spec's instruction and examples) are never content.
    decon = Decontaminator(evals, n=8, template=["bed sheet 1. lamp shade with brass fittings"])
    assert decon.check("for sale: bed sheet 1. lamp shade with brass fittings and more") is None


@pytest.mark.parametrize(
    "text, finish, reason",
    [
        ("", "stop", "empty"),
        ("Sure, here it is.", "stop", "bad_json"),
        ('{"input_field": "Which', "length", "truncated"),
        ('{"input_field": "q"}', "stop", "fields"),
        ('{"input_field": "q", "output_field": 1, "why": "x"}', "stop", "fields"),
        ("[1, 2]", "stop", "fields"),
    ],
)
def test_malformed_completions_are_rejected_with_a_reason(text, finish, reason):
    with pytest.raises(Reject) as e:
        parse_completion(text, finish)
    assert e.value.reason == reason and e.value.detail


def test_completion_in_code_fence_parses_and_validates():
    text = '```json\n{"input_field": "Which?\\n0. a\\n1. b\\nAnswer: ", "output_field": 1}\n```'
    record = to_record(parse_completion(text), "category_attribute_mcq", "t")
    assert record["metric"] == "accuracy" and record["capability"].startswith("understanding")
    with pytest.raises(Reject, match="invalid: input_field"):
        to_record({"input_field": " ", "output_field": 1}, "query_ner", "t")


def test_split_options_and_balance_even_out_answer_positions():
    assert split_options("no options here") is None
    assert split_options("Q\n1. a\n2. b") is None  # numbering starts at 0
    head, options, tail = split_options(MCQ)
    assert head == ["Which fits?"] and options == ["red", "blue", "green", "black"]
    positions = Counter()
    for i in range(400):
        record = balance({"input_field": MCQ, "output_field": 1}, positions, f"k{i}")
        assert split_options(record["input_field"])[1][record["output_field"]] == "blue"
        positions[(4, record["output_field"])] += 1
    assert set(positions.values()) == {100}
    with pytest.raises(Reject, match="not an option index"):
        balance({"input_field": MCQ, "output_field": 7}, Counter(), "k")


def test_store_drops_a_torn_last_line_and_repairs_the_ledger(tmp_path):
    rec = {"input_field": "q", "provenance": {"key": "a"}}
    (tmp_path / "records.jsonl").write_text(json.dumps(rec) + '\n{"input_field": "to')
    (tmp_path / "rejects.jsonl").write_text(
        json.dumps({"key": "b", "kind": "rejected", "final": True}) + "\n"
        + json.dumps({"key": "c", "kind": "rejected", "final": False}) + "\n"
    )  # fmt: skip
    store = Store(tmp_path)
    assert store.finished == {"a": "written", "b": "rejected"}
    with pytest.raises(RuntimeError, match="another generation run"):
        Store(tmp_path)
    store.close()
    assert (tmp_path / "records.jsonl").read_text() == json.dumps(rec) + "\n"
    assert {r["key"] for r in read_jsonl(tmp_path / "ledger.jsonl")} == {"a", "b"}
    Store(tmp_path).close()  # nothing more to repair
    assert len(read_jsonl(tmp_path / "ledger.jsonl")) == 2


def test_store_refuses_a_corrupt_middle_line(tmp_path):
    (tmp_path / "records.jsonl").write_text('{"key": "a"}\nnot json\n{"key": "b"}\n')
    with pytest.raises(CorpusError, match=r"records.jsonl:2: json"):
        Store(tmp_path)
