import json
from collections import Counter

import pytest

from ecomtrain.corpus import CorpusError, read_records, render_answer, resolve_corpus, validate
from ecomtrain.demo import GENERATORS, demo_records
from ecomtrain.tasks import CAPABILITIES, FAMILIES, METRICS_BY_TYPE, capabilities_of, expand


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_is_well_formed(name):
    family = FAMILIES[name]
    assert family.capability in CAPABILITIES
    assert family.metric in METRICS_BY_TYPE[family.task_type]


def test_expand_capabilities_and_families():
    concept = expand(["understanding-shopping-concepts"])
    assert "query_ner" in concept and "review_rating" not in concept
    assert expand(["query_ner", "query_ner"]) == ["query_ner"]
    assert capabilities_of(["review_rating", "query_ner"]) == [CAPABILITIES[0], CAPABILITIES[2]]
    with pytest.raises(KeyError, match="unknown task or capability 'nope'"):
        expand(["nope"])


def test_demo_corpus_covers_every_capability():
    records = demo_records()
    per_cap = Counter()
    for name in {r["task_name"] for r in records}:
        per_cap[FAMILIES[name].capability] += 1
    assert set(per_cap) == set(CAPABILITIES)
    assert min(per_cap.values()) >= 2
    for i, r in enumerate(records):
        validate(r, f"demo:{i}")
        assert r["capability"] == FAMILIES[r["task_name"]].capability


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_demo_answers_parse_back(name):
    from ecomtrain.metrics import task_score

    records = [r for r in demo_records(per_task=20) if r["task_name"] == name]
    truths = [r["output_field"] for r in records]
    responses = [render_answer(r) for r in records]
    assert task_score(records[0]["metric"], truths, responses) == pytest.approx(1.0)


def test_demo_is_deterministic():
    assert demo_records(seed=3) == demo_records(seed=3)
    assert demo_records(seed=3) != demo_records(seed=4)


def test_resolve_demo_writes_cache_once(ecomtrain_cache):
    (path,) = resolve_corpus(["demo"])
    assert path.startswith(str(ecomtrain_cache))
    assert len(read_records(path)) == len(demo_records())
    with pytest.raises(CorpusError, match="nope.jsonl: corpus file not found"):
        resolve_corpus(["nope.jsonl"])


def test_json_array_lines_are_reported(tmp_path):
    path = tmp_path / "arr.json"
    good = {
        "input_field": "q",
        "output_field": 1,
        "task_type": "multiple-choice",
        "metric": "accuracy",
    }
    path.write_text("[\n" + json.dumps(good, indent=2) + ",\n" + json.dumps(good, indent=2) + "\n]")
    (l1, _), (l2, _) = read_records(str(path))
    assert (l1, l2) == (2, 8)


@pytest.mark.parametrize(
    "line, message",
    [
        (
            '{"input_field": "q", "output_field": 1, "task_type": "multiple-choice"}',
            "metric: missing",
        ),
        (
            '{"input_field": " ", "output_field": 1, "task_type": "multiple-choice", "metric": "accuracy"}',
            "input_field: must be a non-empty string",
        ),
        (
            '{"input_field": "q", "output_field": 1, "task_type": "mcq", "metric": "accuracy"}',
            "task_type: unknown 'mcq'",
        ),
        (
            '{"input_field": "q", "output_field": 1, "task_type": "ranking", "metric": "accuracy"}',
            "metric: 'accuracy' is not allowed for ranking",
        ),
        ("[1, 2]", "record: expected an object"),
        ('{"input_field": "q", ', "json: "),
    ],
)
def test_bad_records_name_file_line_field(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    ok = '{"input_field": "q", "output_field": 1, "task_type": "multiple-choice", "metric": "accuracy"}'
    path.write_text(ok + "\n\n" + line + "\n")
    with pytest.raises(CorpusError) as err:
        for lineno, record in read_records(str(path)):
            validate(record, f"{path}:{lineno}")
    assert str(err.value).startswith(f"{path}:3: ")
    assert message in str(err.value)


def test_invalid_utf8_is_located(tmp_path):
    path = tmp_path / "bin.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": "\xff"}\n')
    with pytest.raises(CorpusError, match=r"bin.jsonl:2: encoding: invalid UTF-8"):
        read_records(str(path))


def test_refdata_files_read_and_validate(refdata):
    for path in sorted(refdata.glob("*.json")):
        records = read_records(str(path))
        assert records, path
        for lineno, record in records:
            validate(record, f"{path}:{lineno}")
