"""data.sources: data sets of other shapes (an instruction set, session logs, query-product
relevance, a CSV of questions) mapped to ShopBench records, with file and line for what
cannot be mapped."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecomtrain.config import ConfigError, DataConfig, SourceConfig, load_config
from ecomtrain.data.corpus import check_files
from ecomtrain.data.records import Bad
from ecomtrain.data.scan import corpus_files, parse_file, scan_corpus

SOURCES = Path(__file__).parent / "data" / "sources"
CONCEPT, BEHAVIOR = "understanding-shopping-concepts", "user-behavior-alignment"


def data_config() -> DataConfig:
    return DataConfig(
        corpus=[],
        sources=[
            SourceConfig(  # EcomInstruct-style instruction / input / output
                path=str(SOURCES / "instructions.jsonl"),
                input="{instruction}\n{input}",
                output="output",
                task="product_qa",
                task_type="generation",
                metric="rougel",
                capability=CONCEPT,
            ),
            SourceConfig(  # session logs: the next item among candidates
                path=str(SOURCES / "sessions.json"),
                input="A shopper viewed: {session}. What will they view next?",
                options="candidates",
                answer="next",
                task="next_item",
                task_type="multiple-choice",
                capability=BEHAVIOR,
            ),
            SourceConfig(  # ESCI-style query-product relevance, fixed choices
                path=str(SOURCES / "esci.parquet"),
                input="Query: {query}\nProduct: {product_title}\nHow relevant is the product?",
                options="Exact|Substitute|Complement|Irrelevant",
                answer="esci_label",
                task="query_product_relevance",
                task_type="multiple-choice",
                capability=BEHAVIOR,
            ),
            SourceConfig(  # a CSV of questions, into a built-in family, at most 2 records
                path=str(SOURCES / "qa.csv"),
                input="question",
                output="answer",
                task="category_explanation",
                limit=2,
            ),
        ],
    )


def parsed(cfg: DataConfig, name: str) -> tuple[list[dict], list[Bad]]:
    entries = list(parse_file(str((SOURCES / name).resolve()), None, cfg, None))
    return [e for e in entries if isinstance(e, dict)], [e for e in entries if isinstance(e, Bad)]


def test_an_instruction_set_maps_by_template_and_names_what_is_missing():
    rows, bad = parsed(data_config(), "instructions.jsonl")
    assert len(rows) == 3 and {r["task_family"] for r in rows} == {"product_qa"}
    assert rows[0]["input"] == (
        "Answer the shopper's question about the product.\nIs the Acme trail runner waterproof?"
    )
    assert rows[0]["answer"] == "Yes, it has a waterproof membrane."
    assert {(r["capability"], r["metric"]) for r in rows} == {(CONCEPT, "rougel")}
    (miss,) = bad
    assert str(miss).endswith("instructions.jsonl:3: output: missing (the source's output column)")


def test_sessions_and_relevance_become_multiple_choice():
    rows, bad = parsed(data_config(), "sessions.json")
    assert [r["answer"] for r in rows] == ["0", "1"]  # by the choice's text, and by index
    assert rows[0]["input"].endswith("\n0. camping stove\n1. lipstick\n2. office chair")
    (wrong,) = bad  # 'garden hose' is none of the choices
    assert (wrong.line, wrong.field) == (20, "next") and "garden hose" in wrong.reason
    rows, bad = parsed(data_config(), "esci.parquet")
    assert not bad and [r["answer"] for r in rows] == ["0", "1", "3", "0"]
    assert rows[2]["input"].startswith("Query: red mug\nProduct: Blue ceramic mug\n")
    assert rows[2]["input"].endswith("\n2. Complement\n3. Irrelevant")
    assert {r["task_type"] for r in rows} == {"multiple-choice"}


def test_a_csv_into_a_built_in_family_keeps_lines_and_its_limit():
    rows, bad = parsed(data_config(), "qa.csv")
    assert not bad and len(rows) == 2  # limit 2 of 3
    assert [r["source"].rsplit(":", 1)[1] for r in rows] == ["2", "3"]
    assert rows[1]["input"] == "Which size is the\nsmall tent?"
    assert {(r["task_family"], r["metric"]) for r in rows} == {
        ("category_explanation", "sent-transformer")
    }


def test_the_scan_counts_every_source_on_ray(local_ray):
    cfg = data_config()
    scan = scan_corpus(corpus_files(cfg), cfg, use_ray=True)
    assert scan["records"] == 4 + 3 + 4 + 2 and scan["bad"] == 2
    counts = {t: c["train"] + c["eval"] for t, c in scan["tasks"].items()}
    assert counts == {
        "category_explanation": 2,
        "next_item": 2,
        "product_qa": 3,
        "query_product_relevance": 4,
    }
    assert scan["capabilities"]["query_product_relevance"] == BEHAVIOR


@pytest.mark.parametrize(
    "source, message",
    [
        ("{path: x.csv, input: q, output: a, task: mine}", r"sources\[0\].task_type: ''"),
        ("{path: x.csv, input: q, task: mine, task_type: generation}", r"sources\[0\].output"),
        ("{path: x.csv, input: q, output: a, task: query_ner, metric: bleu}", "not allowed"),
        ("{path: x.xlsx, format: xlsx, input: q, output: a, task: query_ner}", "format"),
    ],
)
def test_bad_sources_are_named_in_the_config(source, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"data.sources=[{source}]"])


def test_a_missing_source_file_stops_before_any_cluster(tmp_path):
    cfg = load_config(
        None,
        [f"data.sources=[{{path: {tmp_path}/no.csv, input: q, output: a, task: query_ner}}]"],
    )
    with pytest.raises(ConfigError, match=r"data.sources\[0\].path: file not found"):
        check_files(cfg, "config")
