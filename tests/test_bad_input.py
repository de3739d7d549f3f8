"""The bad-input corpus (tests/data/bad/cases.yaml): every class gives its one clear error
line, `PATH:LINE: field: reason`, and exit code, never a traceback, and nothing is lost
silently: the validator, the training scan and the scorer agree. Command-line classes
(cli_*) run a command on bad arguments and check its error, that no traceback shows and
that no input was touched. docs/bad-input.md describes the corpus and the fuzzing."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import yaml

from ecomtrain.config import DataConfig
from ecomtrain.data.__main__ import main as data_main
from ecomtrain.data.records import Bad, problem
from ecomtrain.data.scan import parse_file
from ecomtrain.evaluate.__main__ import main as evaluate_main
from ecomtrain.evaluate.datafiles import EvalError, load_data
from ecomtrain.export import main as export_main
from ecomtrain.sweep import main as sweep_main

BAD = Path(__file__).resolve().parent / "data" / "bad"
CASES = yaml.safe_load((BAD / "cases.yaml").read_text())
CORPUS = sorted(f for f in CASES if not f.startswith(("responses_", "config_", "cli_")))
RESPONSES = sorted(f for f in CASES if f.startswith("responses_"))
CONFIGS = sorted(f for f in CASES if f.startswith("config_"))
CLI = sorted(f for f in CASES if f.startswith("cli_"))
MAINS = {
    "ecomtrain.evaluate": evaluate_main,
    "ecomtrain.data": data_main,
    "ecomtrain.export": export_main,
    "ecomtrain.sweep": sweep_main,
}
# Bad for training only. The scorer goes by a record's own labels: it scores any task_name
# as the name of a task, and takes a record's task_type and capability over those of a
# family of the same name.
SCORABLE = {
    "unknown_task_name.jsonl",
    "capability_contradicts_family.jsonl",
    "task_type_contradicts_family.jsonl",
}


def expected(name: str) -> str:
    text = CASES[name]["expect"].replace("{path}", str(BAD / name))
    return text.replace("{data}", str(BAD / "score_data.jsonl"))


def test_the_corpus_covers_forty_classes():
    assert len(CASES) >= 40
    assert {p.name for p in BAD.iterdir()} >= set(CASES) - set(CLI)


@pytest.mark.parametrize("name", CORPUS)
def test_corpus_file(name, capsys):
    path, line = str(BAD / name), expected(name)
    assert data_main(["validate", path]) == CASES[name]["exit"] == 1
    assert capsys.readouterr().out.splitlines() == [line]  # exactly one bad record, this one
    entries = list(parse_file(path, None, DataConfig(), None))  # the training scan
    bad = [e for e in entries if isinstance(e, Bad)]
    assert [str(b) for b in bad] == [line]
    rows = [e for e in entries if not isinstance(e, Bad)]
    assert all(r["split"] in ("train", "eval") for r in rows)  # the good ones are all kept
    if name in SCORABLE:
        assert len(load_data(path)[0]) == 2
        return
    with pytest.raises((EvalError, ValueError)) as scored:  # the scorer's data loading
        load_data(path)
    assert str(scored.value) in (line, line.split(" (element ")[0])


@pytest.mark.parametrize("name", RESPONSES)
def test_responses_file(name, tmp_path, capsys):
    args = ["score", "--data", str(BAD / "score_data.jsonl"), "--responses", str(BAD / name)]
    code = evaluate_main([*args, "--out", str(tmp_path / "s.json")])
    assert code == CASES[name]["exit"] == 2
    assert f"error: {expected(name)}" in capsys.readouterr().err.splitlines()
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("name", CONFIGS)
def test_config_file_stops_before_any_cluster(name, capsys):
    assert sweep_main(["--config", str(BAD / name)]) == CASES[name]["exit"] == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {expected(name)}"]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """A PEFT adapter of the tiny model (good/), and copies broken as a user may ship them:
    empty weights, weights cut short, a config whose rank is not the weights'."""
    from ecomtrain.base_model import resolve_model
    from ecomtrain.config import LoraConfig, ModelConfig
    from ecomtrain.model import add_lora, load_model

    root = tmp_path_factory.mktemp("adapters")
    lora = LoraConfig(rank=4, target_modules=["q_proj", "v_proj"])
    add_lora(load_model(resolve_model(ModelConfig())), lora).save_pretrained(root / "good")
    for name in ("empty", "truncated", "other-r"):
        shutil.copytree(root / "good", root / name)
    (root / "empty" / "adapter_model.safetensors").write_bytes(b"")
    weights = root / "truncated" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    config = json.loads((root / "other-r" / "adapter_config.json").read_text())
    (root / "other-r" / "adapter_config.json").write_text(json.dumps(config | {"r": 8}))
    return root


@pytest.mark.parametrize("name", CLI)
def test_command_line_case(name, tmp_path, capsys, request):
    """A command on bad arguments: its exit code and error, no traceback, inputs intact."""
    case = CASES[name]
    (tmp_path / "file").write_text("a file, not a folder\n")
    shutil.copy(BAD / "score_data.jsonl", tmp_path / "data.jsonl")
    answers = ["1", "0", "acme"]
    (tmp_path / "responses.jsonl").write_text(
        "".join(json.dumps({"index": i, "response": a}) + "\n" for i, a in enumerate(answers))
    )
    subs = {"{tmp}": str(tmp_path), "{bad}": str(BAD)}
    if any("{adapters}" in a for a in case["args"]):
        subs["{adapters}"] = str(request.getfixturevalue("adapters"))

    def sub(text: str) -> str:
        for key, value in subs.items():
            text = text.replace(key, value)
        return text

    inputs = [p for p in tmp_path.iterdir() if p.is_file()]
    before = {p: p.read_bytes() for p in inputs}
    module, *argv = (sub(a) for a in case["args"])
    try:
        code = MAINS[module](argv)
    except SystemExit as e:  # an argparse error
        code = e.code
    err = capsys.readouterr().err
    assert code == case["exit"], err
    assert sub(case["expect"]) in err and "Traceback" not in err, err
    assert {p: p.read_bytes() for p in inputs} == before


def test_a_directory_is_no_corpus_file(capsys):
    assert data_main(["validate", str(BAD)]) == 2
    assert f"error: {BAD}: is a directory, not a corpus file" in capsys.readouterr().err


def test_shuffled_responses_with_an_index_score_right(tmp_path):
    """Responses matched by index: a shuffled file scores as the ordered one."""
    records, _ = load_data(str(BAD / "score_data.jsonl"))
    answers = ["1", "0", "acme"]
    ordered, shuffled = tmp_path / "o.jsonl", tmp_path / "s.jsonl"
    rows = [{"index": i, "response": a} for i, a in enumerate(answers)]
    ordered.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shuffled.write_text("".join(json.dumps(r) + "\n" for r in reversed(rows)))
    out = [tmp_path / "a.json", tmp_path / "b.json"]
    for responses, scores in zip((ordered, shuffled), out, strict=True):
        args = ["score", "--data", str(BAD / "score_data.jsonl"), "--responses", str(responses)]
        assert evaluate_main([*args, "--out", str(scores)]) == 0
    a, b = (json.loads(p.read_text()) for p in out)
    assert a == b and a["overall"] == 1.0 and len(records) == 3


def test_zero_based_retrieval_lists_are_read_as_listed():
    """Some public sets number candidates from 0: the validator takes the base from the input."""
    record = {
        "input_field": "Which 2 next?\n0. a\n1. b\n2. c\nOutput:",
        "output_field": [0, 2],
        "task_type": "retrieval",
        "metric": "hit rate@3",
        "task_name": "next_query_in_session",
    }
    assert problem(record) is None


def test_a_pipe_is_read_whole_with_true_line_numbers(tmp_path):
    """Input from a pipe is read once: nothing of its start is lost, lines stay true."""
    import subprocess
    import sys

    text = (BAD / "mc_answer_out_of_range.jsonl").read_text() * 300  # well over 4096 bytes
    proc = subprocess.run(
        [sys.executable, "-m", "ecomtrain.data", "validate", "/dev/stdin"],
        input=text,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith("600 records, 300 bad, in 1 files")
    assert proc.stdout.splitlines()[0].startswith("/dev/stdin:2: output_field: 5 is not one")


def test_stats_on_a_corpus_without_a_valid_record_is_a_clear_error(capsys):
    assert data_main(["stats", str(BAD / "empty.jsonl")]) == 2
    assert "error: no valid record in 1 file(s) (1 bad)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=[", "override 'train.lr=[':1: invalid YAML"),
        ("train.lr=!!python/name:os.system", "could not determine a constructor"),
        ("sweep.name=a/b", "sweep.name: 'a/b' becomes a folder name"),
        ("data.corpus=[missing.jsonl]", "data.corpus[0]: file not found: missing.jsonl"),
        ("data.corpus=[tests]", "data.corpus[0]: tests is a directory, not a file"),
    ],
)
def test_overrides_are_checked_before_any_cluster(override, message, capsys):
    assert sweep_main([override]) == 2
    assert message in capsys.readouterr().err


def test_a_resumed_sweep_reads_its_config_safely(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("train: !!python/object/apply:os.system [echo x]\n")
    assert sweep_main(["--resume", str(tmp_path)]) == 2
    assert "config.yaml:1: invalid YAML: could not determine a constructor" in (
        capsys.readouterr().err
    )


def test_workers_that_take_every_cpu_fail_fast():
    """2 workers x 1 CPU on a 2-CPU cluster leave the data tasks no room, and 2 workers that
    each need a resource the cluster has once never start: errors naming the key, not a
    hang."""
    import ray

    from ecomtrain.config import load_config
    from ecomtrain.train.driver import check_room

    ray.init(
        address="local",
        num_cpus=2,
        resources={"trainer": 1},
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        with pytest.raises(ValueError, match="lower train.cpus_per_worker"):
            check_room(load_config(None, ["train.cpus_per_worker=1.0"]))
        check_room(load_config(None, ["train.cpus_per_worker=0.5"]))
        # a custom resource too few nodes offer
        with pytest.raises(ValueError, match=r"2 workers x 1 'trainer' but the cluster has 1"):
            check_room(
                load_config(
                    None, ["train.cpus_per_worker=0.5", "train.worker_resources={trainer: 1}"]
                )
            )
    finally:
        ray.shutdown()


def test_spec_paths_expand_no_secret(tmp_path, monkeypatch, refdata):
    from ecomtrain.config import ConfigError
    from ecomtrain.generate.spec import load_spec

    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    monkeypatch.setenv("ECOMTRAIN_REFDATA", str(refdata))
    spec = (Path(__file__).parent.parent / "configs" / "generate" / "query_ner.yaml").read_text()
    spec = spec.replace("${ECOMTRAIN_REFDATA}/kddcup24_development.json", "${OPENAI_API_KEY}")
    (tmp_path / "spec.yaml").write_text(spec)
    with pytest.raises(ConfigError) as error:
        load_spec(tmp_path / "spec.yaml")
    assert "$OPENAI_API_KEY is not expanded" in str(error.value)
    assert "sk-very-secret" not in str(error.value)


def test_generation_backend_answers_that_never_change_are_final():
    """A completion whose content is not text is a final reject (a rerun gets the same), and
    a negative or absurd Retry-After never makes a negative sleep."""
    from types import SimpleNamespace

    from ecomtrain.generate.backends import _parse_response, _retry_after

    body = {"choices": [{"message": {"content": {"text": "x"}}, "finish_reason": "stop"}]}
    done = _parse_response(SimpleNamespace(json=lambda: body), "k", [])
    assert done.error == "bad_content" and done.final
    for header, wait in (("-5", 0.0), ("1e9", 60.0), ("nan", None), ("soon", None)):
        assert _retry_after(SimpleNamespace(headers={"Retry-After": header})) == wait


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--timeout=0", "--timeout must be > 0"),
        ("--max-retries=-1", "--max-retries must be >= 0"),
        ("--backoff=-1", "--backoff must be >= 0"),
    ],
)
def test_generation_flags_are_checked(flag, message, capsys):
    from ecomtrain.generate.__main__ import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--spec", "s.yaml", "--out", "o", flag])
    assert message in capsys.readouterr().err


MC_LINE = (
    '{"input_field": "Which color?\\n0. red\\n1. blue\\nAnswer:", "output_field": 1, '
    '"task_type": "multiple-choice", "metric": "accuracy", "task_name": "attribute_inference_mcq"}'
)


def test_an_edited_corpus_is_scanned_again_whatever_its_size_and_time(tmp_path):
    """The scan's cache is keyed on the files' contents: an edit that keeps the size and
    the modification time (a restored timestamp, a coarse clock) is scanned again, so a
    record made bad is counted and not dropped in silence by the pipeline."""
    import os

    from ecomtrain.data.scan import scan_corpus

    corpus = tmp_path / "c.jsonl"
    corpus.write_text(
        MC_LINE + "\n" + MC_LINE.replace('"output_field": 1', '"output_field": 0') + "\n"
    )
    cfg = DataConfig(corpus=[str(corpus)])
    assert scan_corpus([str(corpus)], cfg, use_ray=False)["bad"] == 0
    stat = corpus.stat()
    corpus.write_text(corpus.read_text().replace('"output_field": 0', '"output_field": 7'))
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (corpus.stat().st_size, corpus.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    scan = scan_corpus([str(corpus)], cfg, use_ray=False)
    assert scan["bad"] == 1 and scan["files"][0]["rejects"][0]["line"] == 2


def test_exact_duplicates_are_counted_and_held_out_once(tmp_path, capsys, caplog, monkeypatch):
    """A record repeated exactly: `validate` and the run's data line count it, and the
    held-out sample scores it once."""
    from ecomtrain.config import Config
    from ecomtrain.data.pipeline import check_scan
    from ecomtrain.data.scan import scan_corpus
    from ecomtrain.evaluate.held_out import held_out_sample

    corpus = tmp_path / "dup.jsonl"
    other = MC_LINE.replace("Which color?", "Which colour?")
    corpus.write_text("\n".join([MC_LINE, other, MC_LINE]) + "\n")
    assert data_main(["validate", str(corpus)]) == 0
    said = f"exact duplicates: 1 (trained on again, scored once if held out; first: {corpus}:3"
    assert said in capsys.readouterr().err
    cfg = DataConfig(corpus=[str(corpus)], eval_fraction=0.999, rejects=str(tmp_path / "r.jsonl"))
    monkeypatch.setattr(logging.getLogger("ecomtrain"), "propagate", True)  # to caplog
    with caplog.at_level("WARNING"):
        line = check_scan(scan_corpus([str(corpus)], cfg, use_ray=False), cfg)
    assert "exact duplicates 1;" in line and "1 exact duplicate record(s)" in caplog.text
    rows = [r for r in parse_file(str(corpus), None, cfg, None) if r["split"] == "eval"]
    assert len(rows) == 3
    sample, message = held_out_sample(rows, Config())
    assert sorted(r["source"] for r in sample) == [f"{corpus}:1", f"{corpus}:2"]
    assert f"1 exact duplicate(s) left out (first: {corpus}:3 repeats {corpus}:1)" in message


def test_a_wandb_key_without_a_reachable_server_writes_offline_at_once(monkeypatch, caplog):
    """WANDB_API_KEY set, no W&B server within reach: "auto" writes offline and says why,
    within the probe's seconds (W&B's own start waited about 90 s, then failed); with a
    server that answers, online. The key is never shown."""
    import http.server
    import socket
    import threading
    import time

    from ecomtrain.tracking import PROBE_S, resolve_mode

    monkeypatch.setattr(logging.getLogger("ecomtrain"), "propagate", True)  # to caplog
    key = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("WANDB_API_KEY", key)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    t0 = time.monotonic()
    with caplog.at_level("WARNING"):
        assert resolve_mode("auto") == "offline"
    assert time.monotonic() - t0 < PROBE_S + 1
    assert "cannot be reached" in caplog.text and key not in caplog.text
    assert resolve_mode("disabled") == "disabled"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}")
        assert resolve_mode("auto") == "online"  # any answer (here a 501) will do
    finally:
        server.shutdown()
