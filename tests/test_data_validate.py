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


# EC-Guide's product retrieval layout: the first candidate follows a label on its line and the
# candidates are numbered from 0; answers are 0-based item numbers.
INLINE_ZERO = {
    "input_field": "For 'paint brushes', select the products that apply.\n"
    "Products: 0. liner brush size 10/0\n1. soap dish\n2. tail pipe\n3. rigger brush\nOutput:",
    "output_field": [0, 3],
    "task_type": "retrieval",
    "metric": "hit rate@3",
}


def hit_rate_official(pred: list[int], truth: list[int]) -> float:
    """The KDD Cup evaluator's hit rate@3: item numbers compared as written, whatever base."""
    return len(set(truth) & set(pred[:3])) / len(truth)


def test_a_listing_numbered_from_zero_after_a_label_is_read_as_listed(tmp_path, capsys):
    from ecomtrain.data.records import numbered_items, problem

    assert numbered_items(INLINE_ZERO["input_field"]) == (0, 3)
    assert problem(INLINE_ZERO) is None
    assert problem(INLINE_ZERO | {"output_field": [4]})[1] == "[4] must be item numbers in 0..3"
    path = tmp_path / "pr.jsonl"
    path.write_text(js(INLINE_ZERO) + "\n")
    assert main(["validate", str(path)]) == 0
    assert f"{path}: 1 records, 0 bad" in capsys.readouterr().err


@pytest.mark.parametrize(
    "response, score", [("0, 3", 1.0), ("3,0,1", 1.0), ("0", 0.5), ("1, 4", 0.0), ("[0, 2]", 0.5)]
)
def test_a_zero_based_record_scores_as_the_official_evaluator(tmp_path, response, score):
    from ecomtrain.evaluate.datafiles import score_files

    data, responses = tmp_path / "d.jsonl", tmp_path / "r.jsonl"
    data.write_text(js(INLINE_ZERO) + "\n")
    responses.write_text(json.dumps({"index": 0, "response": response}) + "\n")
    result = score_files(str(data), str(responses))
    assert result["overall"] == score
    nums = [int(p) for p in "".join(c for c in response if c.isdigit() or c == ",").split(",")]
    assert score == hit_rate_official(nums, INLINE_ZERO["output_field"])


def zero_based(record: dict) -> dict:
    """A real 1-based record rewritten in EC-Guide's product-retrieval layout: candidates
    numbered from 0, the first after the list's label on its line, answers shifted."""
    lines = record["input_field"].split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith("1. "))
    for i in range(at, len(lines)):
        num, dot, rest = lines[i].partition(". ")
        if dot and num.isdigit():
            lines[i] = f"{int(num) - 1}. {rest}"
    lines[at - 1 : at + 1] = [f"{lines[at - 1].rstrip()} {lines[at]}"]
    return record | {
        "input_field": "\n".join(lines),
        "output_field": [x - 1 for x in record["output_field"]],
    }


def test_real_listings_numbered_from_zero_are_accepted_and_scored(refdata, tmp_path):
    """Every real review-aspect record, renumbered from 0 in EC-Guide's product-retrieval
    layout, is accepted; its gold answer scores 1, and any answer scores what the official
    evaluator gives it (a 1-based answer to a 0-based list hits only where it overlaps)."""
    from ecomtrain.data.records import render_answer
    from ecomtrain.evaluate.datafiles import load_data
    from ecomtrain.evaluate.metrics import aggregate, record_scores

    real = json.loads((refdata / "ecguide_retrieval_review_aspects.json").read_text())
    shifted = [zero_based(r) for r in real]
    assert any(0 in r["output_field"] for r in shifted)
    path = tmp_path / "zero_based.json"
    path.write_text(json.dumps(shifted))
    records, _ = load_data(str(path))
    assert len(records) == len(real) == 1000
    assert aggregate(records, [render_answer(r) for r in records])["overall"] == 1.0
    one_based = [render_answer(r) for r in real]
    scores = [s["score"] for s in record_scores(records, one_based)]
    assert scores == [
        hit_rate_official(o["output_field"], r["output_field"])
        for o, r in zip(real, shifted, strict=True)
    ]
