"""Generated hostile inputs for every reader of user files and for the command lines: a reader
returns a correct result or raises the project's own error naming the file (and line and
field where there is one), never a raw traceback. Bounded examples, no deadline (docs/bad-input.md).
"""

from __future__ import annotations

import contextlib
import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecomtrain.config import ConfigError, DataConfig, checked_config, yaml_mapping
from ecomtrain.data.__main__ import main as data_main
from ecomtrain.data.records import Bad, CorpusError, problem
from ecomtrain.data.scan import parse_file
from ecomtrain.evaluate.__main__ import main as evaluate_main
from ecomtrain.evaluate.datafiles import EvalError, load_data, read_responses
from ecomtrain.report.trials import ReportError, load_trials
from ecomtrain.tasks import METRICS_BY_TYPE

BAD = Path(__file__).resolve().parent / "data" / "bad"
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# JSON values, nested a little, with the odd values readers meet: huge and negative numbers,
# floats, empty containers, strings with newlines, digits and lone surrogates.
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", " ", "0", "10", "1. a\n2. b", "0. a\n1. b", "Output:", "\ud800", "[1, 2]", "{[1], 2}"]
)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
TASK_TYPES = st.sampled_from(list(METRICS_BY_TYPE)) | JSON
METRICS = st.sampled_from([m for ms in METRICS_BY_TYPE.values() for m in ms]) | JSON
# A record: the ShopBench fields, each present or not, realistic or hostile.
RECORDS = (
    st.fixed_dictionaries(
        {},
        optional={
            "input_field": st.sampled_from(
                ["Which?\n0. red\n1. blue\nAnswer:", "Pick 2.\n1. a\n2. b\n3. c\nOutput:"]
            )
            | JSON,
            "output_field": JSON,
            "task_type": TASK_TYPES,
            "metric": METRICS,
            "task_name": st.sampled_from(["query_ner", "task3", "my_task", ""]) | JSON,
            "capability": JSON,
            "track": JSON,
            "is_multiple_choice": JSON,
            "provenance": JSON,
            "id": JSON,
        },
    )
    | JSON
)
OUR_ERRORS = (CorpusError, EvalError, ConfigError, ReportError)


def lines_of(values: list) -> str:
    return "".join(json.dumps(v, ensure_ascii=False) + "\n" for v in values)


@FUZZ
@given(RECORDS)
def test_a_record_is_valid_or_names_its_field(record):
    bad = problem(record)
    assert bad is None or (isinstance(bad[0], str) and bad[0] and isinstance(bad[1], str))


@FUZZ
@given(st.lists(RECORDS, max_size=5))
def test_a_corpus_file_reads_as_rows_and_named_bad_records(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("fuzz") / "corpus.jsonl"
    path.write_text(lines_of(records), encoding="utf-8", errors="surrogatepass")
    entries = list(parse_file(str(path), None, DataConfig(), None))
    assert entries  # a record or a bad entry each (a file of one array line is an array)
    for entry in entries:
        assert isinstance(entry, Bad | dict)
        if isinstance(entry, Bad):
            assert str(entry).startswith(f"{path}:") and entry.field
    try:
        load_data(str(path))
    except OUR_ERRORS as e:
        assert str(e).startswith(str(path))


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_read_as_a_corpus_or_a_named_error(tmp_path_factory, data):
    for suffix in (".jsonl", ".json", ".csv"):
        path = tmp_path_factory.mktemp("fuzz") / f"corpus{suffix}"
        path.write_bytes(data)
        for entry in parse_file(str(path), None, DataConfig(), None):
            assert isinstance(entry, Bad | dict)
        try:
            load_data(str(path))
        except OUR_ERRORS as e:
            assert str(e).startswith(str(path))


RESPONSES = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "index": st.integers(-2, 4) | JSON,
            "id": JSON,
            "response": TEXT | JSON,
        },
    )
    | JSON,
    max_size=5,
)


@FUZZ
@given(RESPONSES | st.binary(max_size=200))
def test_a_responses_file_matches_every_record_or_names_its_line(tmp_path_factory, responses):
    data = str(BAD / "score_data.jsonl")
    records, places = load_data(data)
    path = tmp_path_factory.mktemp("fuzz") / "responses.jsonl"
    if isinstance(responses, bytes):
        path.write_bytes(responses)
    else:
        path.write_text(lines_of(responses), encoding="utf-8", errors="surrogatepass")
    try:
        got = read_responses(str(path), data, records, places)
    except EvalError as e:
        assert str(e).startswith(str(path))
        return
    assert len(got) == len(records) and all(isinstance(r, str) for r in got)


CONFIG_KEYS = st.sampled_from(
    ["model", "lora", "data", "train", "eval", "sweep", "wandb", "rank", "lr", "tasks", ""]
)
CONFIGS = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(CONFIG_KEYS | TEXT, inner, max_size=4)
    ),
    max_leaves=10,
)


@FUZZ
@given(CONFIGS | st.text(max_size=200))
def test_a_config_loads_or_names_its_key(raw):
    text = raw if isinstance(raw, str) else json.dumps(raw)  # JSON is YAML too
    try:
        checked_config(yaml_mapping(text, "fuzz.yaml"), "fuzz.yaml")
    except ConfigError as e:
        assert str(e).startswith("fuzz.yaml")


CSV_CELLS = st.text(alphabet=string.printable, max_size=12) | st.sampled_from(
    ["", "nan", "inf", "-1", "0", "4.5", "1e309", '"', "a,b"]
)


@FUZZ
@given(
    st.lists(CSV_CELLS, min_size=1, max_size=6),
    st.lists(st.lists(CSV_CELLS, max_size=7), max_size=4),
)
def test_a_trials_csv_loads_typed_or_names_line_and_column(tmp_path_factory, head, rows):
    import csv

    folder = tmp_path_factory.mktemp("fuzz")
    head = (
        head + [c for c in ("trial", "subset", "rank", "score") if c not in head][: len(head) % 5]
    )
    with open(folder / "trials.csv", "w", newline="") as f:
        csv.writer(f).writerows([head, *rows])
    try:
        typed = load_trials(folder / "trials.csv")
    except ReportError as e:
        assert str(e).startswith(str(folder / "trials.csv"))
        return
    for row in typed:
        assert isinstance(row["rank"], int) and row["rank"] >= 1
        assert row["score"] is None or isinstance(row["score"], float)


FLAGS = st.sampled_from(
    ["--data", "--responses", "--out", "--window", "--max-seq-len", "--max-chars"]
)
VALUES = st.sampled_from(
    ["0", "-1", "", "/proc/x", "/dev/null", "{bad}/score_data.jsonl", "{tmp}/file/x", "nan"]
) | st.text(alphabet=string.ascii_letters + "./-", max_size=12)


@pytest.mark.slow  # each example may tokenise the corpus (`data stats`)
@settings(FUZZ, max_examples=60)
@given(st.lists(st.tuples(FLAGS, VALUES), max_size=4), st.sampled_from(["score", "stats"]))
def test_command_lines_end_in_a_result_or_a_clear_error(tmp_path_factory, capsys, pairs, which):
    """`evaluate score` and `data stats` with generated arguments: an exit code, and any
    error a line of its own (argparse's usage error, or "error: ..."), never a traceback;
    the inputs are never overwritten."""
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "file").write_text("x\n")
    argv = [x.replace("{bad}", str(BAD)).replace("{tmp}", str(tmp)) for p in pairs for x in p]
    before = (BAD / "score_data.jsonl").read_bytes()
    try:
        if which == "score":
            code = evaluate_main(["score", *argv])
        else:
            code = data_main(["stats", *argv, str(BAD / "score_data.jsonl")])
    except SystemExit as e:  # argparse: a usage error
        code = e.code
    err = capsys.readouterr().err
    assert code in (0, 1, 2) and "Traceback" not in err
    assert (BAD / "score_data.jsonl").read_bytes() == before


@pytest.mark.parametrize("bad", sorted(BAD.glob("*.json*")), ids=lambda p: p.name)
def test_the_corpus_files_load_or_fail_with_our_error(bad):
    """Every file of the bad-input corpus through the scorer's loader: our error or records."""
    with contextlib.suppress(OUR_ERRORS):
        load_data(str(bad))
