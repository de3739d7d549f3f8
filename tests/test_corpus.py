import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from records import mc

from ecomtrain.config import DataConfig
from ecomtrain.data.corpus import (
    iter_items,
    read_records,
    resolve_corpus,
    validate,
)
from ecomtrain.data.demo import GENERATORS, demo_records
from ecomtrain.data.records import Bad, CorpusError, assign_family, problem, render_answer
from ecomtrain.data.scan import parse_file
from ecomtrain.files import cache_dir
from ecomtrain.tasks import (
    CAPABILITIES,
    DEV_TASKS,
    FAMILIES,
    METRICS_BY_TYPE,
    capabilities_of,
    expand,
    recognise,
)

FIXTURES = Path(__file__).parent / "data" / "families.jsonl"


def fixture_rows() -> list[dict]:
    return [record for _, record in read_records(str(FIXTURES))]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_is_well_formed(name):
    family = FAMILIES[name]
    assert family.capability in CAPABILITIES
    assert family.metric in METRICS_BY_TYPE[family.task_type]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_recognises_its_fixture_rows(name):
    """Each family has a fixture row; its recogniser, and only its, claims the row."""
    rows = [r for r in fixture_rows() if r["task_name"] == name]
    assert rows, f"add a row for {name} to {FIXTURES}"
    for r in rows:
        validate(r, f"{FIXTURES}:{name}")
        unnamed = {k: v for k, v in r.items() if k != "task_name"}
        assert recognise(r["input_field"], r["task_type"], render_answer(r)) == [name]
        got = assign_family(unnamed, str(FIXTURES), {}, {})
        assert got == (name, FAMILIES[name].capability, "")


def test_taxonomy_size_and_dev_map():
    assert len(FAMILIES) >= 22 and len(CAPABILITIES) == 4
    assert [DEV_TASKS[f"task{i}"] for i in (1, 13, 18)] == [
        "category_explanation",
        "next_query_in_session",
        "cross_language_description_match",
    ]
    for cap in CAPABILITIES:
        assert len(expand([cap])) >= 4


def test_expand_capabilities_and_families():
    concept = expand(["understanding-shopping-concepts"])
    assert "query_ner" in concept and "review_rating" not in concept
    assert expand(["query_ner", "query_ner"]) == ["query_ner"]
    assert capabilities_of(["review_rating", "query_ner"]) == [CAPABILITIES[0], CAPABILITIES[2]]
    assert expand(["mine", "query_ner"]) == ["mine", "query_ner"]  # a task of the user's own
    assert capabilities_of(["mine"]) == []  # its capability is the corpus scan's


def test_assignment_order_name_then_file_then_recogniser(tmp_path):
    r = mc("How many socks are in 3 packs of 4?\n0. 7\n1. 12\nAnswer:")
    knowledge, behavior = "shopping-knowledge-reasoning", "user-behavior-alignment"
    assert assign_family(r, "x.json", {}, {}) == ("numeric_reasoning", knowledge, "")
    assert assign_family(r | {"task_name": "task9"}, "x.json", {}, {})[0] == "commonsense_event"
    got = assign_family(r, "/d/x.json", {"x.*": "review_rating"}, {})
    assert got == ("review_rating", behavior, "")
    family, _, reason = assign_family(r, "/d/x.json", {"*.json": "query_ner"}, {})
    assert not family and "maps '*.json' to query_ner" in reason


def test_records_of_no_built_in_family_make_tasks_of_their_own():
    """A well-formed record is never rejected for want of a family: its own task_name, a
    data.file_tasks name of the user's own, or its file's name; its capability from its
    label, data.file_capabilities, else "unknown"."""
    r = mc()
    caps = {"*mine*": "user-behavior-alignment"}
    assert assign_family(r, "/d/my-tasks.v2.json", {}, {}) == ("my-tasks", "unknown", "")
    assert assign_family(r, "/d/mine.json", {}, caps) == ("mine", "user-behavior-alignment", "")
    assert assign_family(r, "/d/x.json", {"x.json": "picks"}, {})[:2] == ("picks", "unknown")
    named = r | {"task_name": "my_task", "capability": "multi-lingual-abilities"}
    assert assign_family(named, "/d/mine.json", {}, caps) == (
        "my_task",
        "multi-lingual-abilities",
        "",
    )
    tracked = r | {"task_name": "my_task", "track": "amazon-kdd-cup-24-user-behavior-alignment"}
    assert assign_family(tracked, "/d/x.json", {}, {})[1] == "user-behavior-alignment"
    assert assign_family(r, "/d/2024 data!.json", {}, {})[0] == "2024_data_"
    assert assign_family(r, "/d/_x.json", {}, {})[0] == "file__x"
    assert problem(r | {"task_name": "my task/1"})[0] == "task_name"


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
    from ecomtrain.evaluate.metrics import task_score

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
    (bigger,) = resolve_corpus(["demo:100"])  # a larger demo corpus, cached beside it
    assert bigger != path and len(read_records(bigger)) == len(demo_records(per_task=100))
    with pytest.raises(CorpusError, match="nope.jsonl: corpus file not found"):
        resolve_corpus(["nope.jsonl"])


def test_hub_dataset_is_read_from_its_local_copy():
    target = cache_dir() / "hub" / "shop__reviews.train.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(FIXTURES.read_text())
    assert resolve_corpus(["hf:shop/reviews"]) == [str(target)]


def test_hub_dataset_offline_is_a_clear_error(tmp_path):
    env = os.environ | {"HF_HUB_OFFLINE": "1", "ECOMTRAIN_CACHE": str(tmp_path)}
    code = (
        "from ecomtrain.data.corpus import resolve_corpus; resolve_corpus(['hf:someone/shop-qa'])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "CorpusError: hf:someone/shop-qa: cannot load from the Hugging Face hub" in out.stderr
    assert "pass its local file" in out.stderr


def test_json_array_lines_and_indices(tmp_path):
    path = tmp_path / "arr.json"
    good = mc("q\n0. a\n1. b")
    path.write_text("[\n" + json.dumps(good, indent=2) + ",\n" + json.dumps(good, indent=2) + "\n]")
    items = list(iter_items(str(path)))
    assert [(i.line, i.index) for i in items] == [(2, 0), (8, 1)]
    assert [(line, r) for line, r in read_records(str(path))] == [(2, good), (8, good)]


def test_jsonl_keeps_line_numbers_across_blank_lines_and_u2028(tmp_path):
    path = tmp_path / "x.jsonl"
    rec = {"input_field": "a\u2028b", "output_field": "c", "task_type": "generation"}
    path.write_text(json.dumps(rec, ensure_ascii=False) + "\n\n" + json.dumps(rec) + "\n")
    assert [line for line, _ in read_records(str(path))] == [1, 3]


def test_invalid_utf8_is_located_in_its_record(tmp_path):
    path = tmp_path / "bin.jsonl"
    ok = b'{"input_field": "q", "output_field": "a", "task_type": "generation", "metric": "rougel"}'
    path.write_bytes(ok + b"\n" + ok.replace(b'"a"', b'"\xff"') + b"\n")
    entries = list(
        parse_file(str(path), None, DataConfig(file_tasks={"*": "product_summarization"}), None)
    )
    assert isinstance(entries[0], dict) and isinstance(entries[1], Bad)
    assert str(entries[1]).startswith(f"{path}:2: output_field: not valid UTF-8")


def test_refdata_files_read_validate_and_assign(refdata):
    """Every real record is valid and lands in a family; dev records by their own task id
    and, with task_name removed, by the recognisers (which must agree)."""
    families = Counter()
    for path in sorted(refdata.glob("*.json")):
        for entry in parse_file(str(path), None, DataConfig(), None):
            assert not isinstance(entry, Bad), str(entry)
            families[entry["task_family"]] += 1
    assert len(families) >= 18 and sum(families.values()) == 22206
    for _, r in read_records(str(refdata / "kddcup24_development.json")):
        unnamed = {k: v for k, v in r.items() if k not in ("task_name", "track")}
        assert assign_family(unnamed, "dev.json", {}, {})[0] == DEV_TASKS[r["task_name"]]


def test_the_numeric_fallback_needs_a_sum_not_a_relation():
    relation = (
        "What is the relation between the product 'Acme kettle, $20 per unit' and 'descaler, "
        "2 pack'?\n0. complement\n1. substitute\n2. irrelevant\nAnswer:"
    )
    assert "numeric_reasoning" not in recognise(relation, "multiple-choice")
    sums = "A kettle costs $20. How much do 3 kettles cost?\n0. $40\n1. $60\nAnswer:"
    assert recognise(sums, "multiple-choice") == ["numeric_reasoning"]
    assert "numeric_reasoning" not in recognise(
        "How much is too much?\n0. a\n1. b", "multiple-choice"
    )
