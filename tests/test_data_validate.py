"""`python -m ecomtrain.data validate`: every class of bad record, with file and line."""

import json

import pytest

from ecomtrain.config import DataConfig
from ecomtrain.data.__main__ import main
from ecomtrain.data.pipeline import check_scan
from ecomtrain.data.scan import scan_corpus

MC = {
    "input_field": "Which one?\n0. red\n1. blue\nAnswer:",
    "output_field": 1,
    "task_type": "multiple-choice",
    "metric": "accuracy",
    "task_name": "attribute_inference_mcq",
}
RET = {
    "input_field": "Pick 2 of the list.\n1. a\n2. b\n3. c\nOutput:",
    "output_field": [1, 3],
    "task_type": "retrieval",
    "metric": "hit rate@3",
    "task_name": "also_bought_retrieval",
}
GEN = {
    "input_field": "Summarize the product in a sentence: a red kettle.",
    "output_field": "A red kettle.",
    "task_type": "generation",
    "metric": "rougel",
    "task_name": "product_summarization",
}


def js(record) -> str:
    return json.dumps(record, ensure_ascii=False)


# (JSON Lines line, field, reason fragment): one class of bad record each.
BAD = [
    ('{"input_field": "q", ', "json", "Expecting"),
    ("[1, 2]", "record", "expected an object, got list"),
    (js({k: v for k, v in MC.items() if k != "metric"}), "metric", "missing"),
    (js(MC | {"input_field": "  "}), "input_field", "must be a non-empty string"),
    (js(MC | {"input_field": 42}), "input_field", "must be a string, got int"),
    (js(MC | {"task_type": "mcq"}), "task_type", "unknown 'mcq'"),
    (js(RET | {"metric": "accuracy"}), "metric", "'accuracy' is not allowed for retrieval"),
    (js(MC | {"output_field": "1"}), "output_field", "must be an int"),
    (js(MC | {"output_field": True}), "output_field", "must be an int"),
    (js(MC | {"output_field": 3}), "output_field", "3 is not one of the listed choices [0, 1]"),
    (js(MC | {"input_field": "Which one?"}), "output_field", "lists no numbered choices"),
    (js(RET | {"output_field": [1, "2"]}), "output_field", "non-empty list of ints"),
    (js(RET | {"output_field": [1, 4]}), "output_field", "must be item numbers in 1..3"),
    (js(RET | {"output_field": [1, 1]}), "output_field", "repeats an item"),
    (
        '{"input_field": "Rank them.\\n1. a\\n2. b", "output_field": [1, NaN], '
        '"task_type": "ranking", "metric": "ndcg"}',
        "output_field",
        "relevance weights in 0..100",
    ),
    (
        js(
            {
                "input_field": "Query: x",
                "output_field": "x",
                "task_type": "named_entity_recognition",
            }
        ).replace("}", ', "metric": "micro f1"}'),
        "output_field",
        "list of strings",
    ),
    (js(GEN | {"output_field": ""}), "output_field", "must be a non-empty string"),
    (js(GEN | {"input_field": "x" * 101}), "input_field", "101 characters, over the limit of 100"),
    (json.dumps(GEN | {"input_field": "bad \udcff escape"}), "input_field", "lone surrogate"),
    (js(GEN | {"task_name": "shoe sizes"}), "task_name", "'shoe sizes' is no built-in family"),
    (js(GEN | {"task_name": "query_ner"}), "task_type", "family query_ner is named_entity"),
    (js(GEN | {"capability": "cooking"}), "capability", "unknown capability 'cooking'"),
    (js(GEN | {"track": "amazon-kdd-cup-24-multi-lingual-abilities"}), "track", "belongs to"),
    (js(MC | {"is_multiple_choice": False}), "is_multiple_choice", "contradicts"),
    (
        js({k: v for k, v in GEN.items() if k != "task_name"} | {"input_field": "Say hi."}),
        "task_name",
        "maps 'bad.*' to review_rating (multiple-choice)",
    ),
]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    jsonl = root / "bad.jsonl"
    lines = [js(MC)]  # line 1 is good
    for text, _, _ in BAD:
        lines += [text, ""]  # blank lines must not shift the numbering
    data = "\n".join(lines).encode("utf-8") + b"\n"
    data += js(GEN).encode("utf-8").replace(b"A red", b"A \xff red") + b"\n"  # a raw bad byte
    jsonl.write_bytes(data)
    array = root / "bad.json"
    array.write_text(
        "[\n" + json.dumps(MC, indent=1) + ",\n" + json.dumps(MC | {"output_field": 9}) + ",\n{]"
    )
    return root, jsonl, array


def run(capsys, *args) -> tuple[int, list[str]]:
    flags = ["--max-chars", "100", "--file-task", "bad.*=review_rating"]
    code = main(["validate", *flags, *map(str, args)])
    return code, capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("i", range(len(BAD)), ids=[b[1] + ":" + b[2][:25] for b in BAD])
def test_each_bad_record_is_reported_with_file_line_field(report, capsys, i):
    _, jsonl, _ = report
    code, out = run(capsys, jsonl)
    assert code == 1
    _, field, reason = BAD[i]
    line = 2 + 2 * i
    hits = [o for o in out if o.startswith(f"{jsonl}:{line}: {field}: ")]
    assert hits and reason in hits[0], (hits, out)


def test_every_bad_line_is_reported_once_and_good_ones_never(report, capsys):
    _, jsonl, _ = report
    _, out = run(capsys, jsonl)
    assert len(out) == len(BAD) + 1  # + the undecodable latin-1 record at the end
    assert f"{jsonl}:{2 + 2 * len(BAD)}: output_field: not valid UTF-8" in out[-1]
    assert not any(o.startswith(f"{jsonl}:1:") for o in out)


def test_json_array_bad_elements_carry_line_and_index(report, capsys):
    _, _, array = report
    code, out = run(capsys, array)
    assert code == 1
    assert out[0] == (
        f"{array}:9: output_field: 9 is not one of the listed choices [0, 1] (element 1)"
    )
    assert out[1].startswith(f"{array}:10: json: ") and out[1].endswith("unread (element 2)")


def test_refdata_validates_clean(refdata, capsys):
    code = main(["validate", *map(str, sorted(refdata.glob("*.json")))])
    out = capsys.readouterr()
    assert code == 0 and out.out == "", out.out[:500]
    assert "22206 records, 0 bad, in 6 files" in out.err
    # per file: what its records became
    sentiment = refdata / "ecguide_mcq_sentiment.json"
    at = out.err.index(f"{sentiment}: 3500 records, 0 bad\n")
    assert out.err[at:].split("\n")[1:3] == [
        "  families: review_rating 3500",
        "  capabilities: user-behavior-alignment 3500",
    ]


def test_the_summary_counts_bad_records_by_field(report, capsys):
    _, _, array = report
    main(["validate", str(array)])
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"{array}: 3 records, 2 bad"
    assert err[1:3] == [
        "  families: attribute_inference_mcq 1",
        "  capabilities: understanding-shopping-concepts 1",
    ]
    assert err[3].startswith("  bad output_field: 1 (first, line 9: 9 is not one of")
    assert err[4].startswith("  bad json: 1 (first, line 10: ")


def test_bad_fraction_stops_the_run_or_writes_rejects(tmp_path, ecomtrain_cache):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join([js(MC)] * 9 + [js(MC | {"output_field": 5})]) + "\n")
    rejects = tmp_path / "out" / "rejects.jsonl"
    strict = DataConfig(corpus=[str(corpus)], rejects=str(rejects))
    scan = scan_corpus([str(corpus)], strict, use_ray=False)
    assert (scan["records"], scan["bad"]) == (10, 1)
    with pytest.raises(ValueError, match=rf"1 of 10 records are bad .*\n{corpus}:10: output_field"):
        check_scan(scan, strict)
    assert not rejects.exists()
    line = check_scan(scan, DataConfig(rejects=str(rejects), max_bad_fraction=0.1))
    assert "bad 1" in line and str(rejects) in line
    (reject,) = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert reject["path"] == str(corpus) and reject["line"] == 10
    assert reject["field"] == "output_field" and reject["record"]["output_field"] == 5
