"""Generation through the HTTP backend against a real loopback server: every spec, injected
faults with exact accounting, a killed run resumed, and the tiny model's own output."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from openai_server import ChatServer, prompt_parts, request_id, scripted, tiny_model_responder

from ecomtrain.base_model import resolve_model
from ecomtrain.config import ModelConfig
from ecomtrain.data.corpus import load_corpus
from ecomtrain.generate.__main__ import main, parse_args
from ecomtrain.generate.run import run
from ecomtrain.generate.spec import load_seeds, load_spec, plan

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "configs" / "generate").glob("*.yaml"))


@pytest.fixture(autouse=True)
def refdata_env(refdata, monkeypatch):
    monkeypatch.setenv("ECOMTRAIN_REFDATA", str(refdata))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def generate(spec, out, url, *extra) -> dict:
    argv = ["--spec", str(spec), "--out", str(out), "--base-url", url, "--model", "m"]
    return run(parse_args(argv + [*extra]))


def plan_of(spec_path, target: int):
    spec = load_spec(spec_path)
    spec.target = target
    return plan(spec, load_seeds(spec))


def outputs(out: Path) -> tuple[list[dict], list[dict]]:
    def read(name):
        path = out / name
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    return read("records.jsonl"), read("rejects.jsonl")


def final_keys(out: Path) -> Counter:
    records, rejects = outputs(out)
    keys = [r["provenance"]["key"] for r in records] + [r["key"] for r in rejects if r["final"]]
    return Counter(keys)


def test_specs_cover_every_capability():
    from ecomtrain.tasks import CAPABILITIES, FAMILIES

    covered = {FAMILIES[load_spec(p).family].capability for p in SPECS}
    assert covered == set(CAPABILITIES) and len(SPECS) >= 4


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_every_spec_generates_valid_records(spec, tmp_path):
    with ChatServer(scripted) as server:
        stats = generate(spec, tmp_path, server.url, "--target", "16", "--concurrency", "4")
    assert stats["run"]["written"] == 16 and server.requests == 16
    records = load_corpus([str(tmp_path / "records.jsonl")])  # the output is a usable corpus
    family = load_spec(spec).family
    assert {r["task_name"] for r in records} == {family}
    assert sum(stats["difficulty"].values()) == 16
    if records[0]["task_type"] == "multiple-choice" and load_spec(spec).balance_answers:
        positions = Counter(r["output_field"] for r in records)
        assert max(positions.values()) - min(positions.values()) <= 1 and len(positions) == 4


def ner_from_seed(body: dict) -> str:
    """A realistic short-content answer: the example's template around a query made of the
    seed item's words; the same seed item gives the same record."""
    examples, item = prompt_parts(body)
    seed = json.loads(item)
    template = examples[0]["input_field"].split("'")
    query = " ".join(seed.values())
    text = f"{template[0]}'product type'{template[2].split('Query:')[0]}Query: {query}\nOutput: "
    return json.dumps({"input_field": text, "output_field": [seed["product type"]]})


def test_short_content_records_are_kept_and_repeats_are_duplicates(tmp_path):
    spec = ROOT / "configs" / "generate" / "query_ner.yaml"
    seeds = load_seeds(load_spec(spec))
    with ChatServer(ner_from_seed) as server:
        stats = generate(spec, tmp_path, server.url, "--target", str(2 * len(seeds)))
    r = stats["run"]
    # One record per seed item despite the shared 50-word template; the second pass over
    # the seed pool repeats each question exactly.
    assert r["written"] == len(seeds) == r["duplicate"] == r["reject_reasons"]["duplicate_exact"]
    records, _ = outputs(tmp_path)
    assert sorted(r["output_field"][0] for r in records) == sorted(
        json.loads(s)["product type"] for s in seeds
    )


def test_eval_items_are_rejected_as_contaminated(tmp_path, refdata):
    dev = [json.loads(x) for x in (refdata / "kddcup24_development.json").read_text().splitlines()]
    numeric = [r for r in dev if r["task_name"] == "task8"]  # the dev set's numeric reasoning

    def copy_dev(body: dict) -> str:
        r = numeric[int(request_id(body)[:8], 16) % len(numeric)]
        return json.dumps({"input_field": r["input_field"], "output_field": r["output_field"]})

    spec = ROOT / "configs" / "generate" / "numeric_reasoning.yaml"
    with ChatServer(copy_dev) as server:
        stats = generate(spec, tmp_path, server.url, "--target", "8")
    assert stats["run"]["reject_reasons"] == {"contaminated": 8}
    _, rejects = outputs(tmp_path)
    assert all("kddcup24_development.json:" in r["detail"] for r in rejects)


def faults(rid: str, attempt: int) -> str | None:
    """Per request bucket: the faults of its successive attempts."""
    seq = {
        0: ["429"],
        1: ["500", "500"],
        2: ["timeout"],
        3: ["truncated_body"],
        4: ["truncated_json"],
        5: ["500", "500", "500"],  # outlasts --max-retries 2: failed now, retried on rerun
    }.get(bucket(rid), [])
    return seq[attempt] if attempt < len(seq) else None


def bucket(rid: str) -> int:
    return int(rid[:8], 16) % 10


def faulty_model(body: dict) -> str:
    """Buckets 6-8 answer badly: prose, wrong fields, a verbatim copy of an example."""
    b = bucket(request_id(body))
    if b == 6:
        return "Sure! Here is a question about that product."
    if b == 7:
        return json.dumps({"question": "Which one?", "answer": 1})
    if b == 8:
        example = prompt_parts(body)[0][0]
        return json.dumps(example)
    return scripted(body)


def test_faults_are_retried_rejected_or_written_and_accounted(tmp_path, monkeypatch):
    spec = ROOT / "configs" / "generate" / "numeric_reasoning.yaml"
    items = plan_of(spec, 60)
    n = Counter(
        bucket(request_id({"messages": it.messages, "seed": it.request_seed})) for it in items
    )
    assert all(n[b] > 0 for b in range(10)), n
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    args = ["--target", "60", "--concurrency", "4", "--timeout", "0.5", "--max-retries", "2"]
    with ChatServer(faulty_model, fault=faults, hang=1.0) as server:
        stats = generate(spec, tmp_path, server.url, *args, "--backoff", "0.01")
    r = stats["run"]
    assert r["requested"] == 60 == r["written"] + r["rejected"] + r["duplicate"]
    assert r["written"] == sum(n[b] for b in (0, 1, 2, 3, 9))
    assert r["reject_reasons"] == {
        "truncated": n[4], "request_failed": n[5], "bad_json": n[6], "fields": n[7],
        "duplicate_exact": n[8],
    }  # fmt: skip
    retries = sum(r["retries"].values())
    assert server.requests == 60 + retries
    assert retries == n[0] + 2 * n[1] + n[2] + n[3] + 2 * n[5]
    assert r["retries"]["http_429"] == n[0] and r["retries"]["timeout"] == n[2]
    records, rejects = outputs(tmp_path)
    assert len(records) == r["written"] and len(rejects) == r["rejected"] + r["duplicate"]
    assert server.auth == {"Bearer sk-test-not-a-real-key"}
    for path in tmp_path.iterdir():
        assert "sk-test" not in path.read_text()

    # Rerun (the endpoint has recovered): only the failed requests are sent again.
    with ChatServer(faulty_model) as server:
        stats = generate(spec, tmp_path, server.url, "--target", "60")
    assert stats["run"]["requested"] == n[5] == server.requests == stats["run"]["written"]
    assert stats["run"]["skipped"] == 60 - n[5]
    keys = final_keys(tmp_path)
    assert set(keys) == {it.key for it in items} and max(keys.values()) == 1


def test_fatal_status_stops_the_run_without_leaking_the_key(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    spec = SPECS[0]
    with ChatServer(scripted, fault=lambda rid, attempt: "401") as server:
        argv = ["--spec", str(spec), "--out", str(tmp_path), "--base-url", server.url]
        assert main(argv + ["--model", "m", "--target", "4"]) == 2
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "sk-test-secret" not in err


KEY = "sk-test-" + "0123456789abcdefghijklmnopqrstuvwxyz"[:28]  # 36 characters


def leaked(text: str, key: str = KEY, piece: int = 6) -> list[str]:
    """Pieces of `key` (of `piece` characters or more) that `text` shows."""
    return [key[i : i + piece] for i in range(len(key) - piece + 1) if key[i : i + piece] in text]


def test_an_echoed_key_is_redacted_at_every_offset(monkeypatch):
    """A 400 or 401 whose body echoes the Authorization header, at every offset around the
    cut of the error text: no piece of the key in the error raised (the console) or in the
    reject's detail (rejects.jsonl). The text was cut before it was redacted, so a key
    straddling the cut kept up to 34 of its 36 characters."""
    import requests

    from ecomtrain.generate.backends import ERROR_CHARS, BackendError, HttpOptions, _post

    assert len(KEY) == 36
    headers = {"Authorization": f"Bearer {KEY}"}
    opts = HttpOptions(base_url="", model="m", max_retries=0)
    for status in ("400", "401"):
        with ChatServer(scripted, fault=lambda rid, attempt, s=status: s) as server:
            session, url = requests.Session(), server.url + "/chat/completions"
            for offset in range(ERROR_CHARS + 1):
                server.echo_offset = offset
                body = {"messages": [{"role": "user", "content": str(offset)}], "seed": 0}
                if status == "401":
                    with pytest.raises(BackendError) as error:
                        _post(session, url, headers, body, opts, "k")
                    text = str(error.value)
                else:
                    text = _post(session, url, headers, body, opts, "k").detail
                assert not leaked(text), (status, offset, text[-80:])
                assert ("***" in text) == (offset + 33 <= ERROR_CHARS), (offset, text[-60:])


def test_a_rejected_request_keeps_no_piece_of_the_key(tmp_path, monkeypatch, capsys):
    """The whole path: a 400 echoing the key across the cut (34 of its 36 characters before it), to rejects.jsonl and the
    console, and a 401 to the error that stops the run."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    spec = SPECS[0]
    with ChatServer(scripted, fault=lambda rid, attempt: "400", echo_offset=236) as server:
        stats = generate(spec, tmp_path, server.url, "--target", "3", "--max-retries", "0")
    assert stats["run"]["rejected"] == 3
    for path in tmp_path.iterdir():
        assert not leaked(path.read_text()), path
    with ChatServer(scripted, fault=lambda rid, attempt: "401", echo_offset=236) as server:
        argv = ["--spec", str(spec), "--out", str(tmp_path / "b"), "--base-url", server.url]
        assert main(argv + ["--model", "m", "--target", "4"]) == 2
    out = capsys.readouterr()
    assert "HTTP 401" in out.err and not leaked(out.out + out.err)


def test_killed_run_resumes_without_duplicates_or_losses(tmp_path):
    spec = ROOT / "configs" / "generate" / "title_translation.yaml"
    items = plan_of(spec, 40)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with ChatServer(scripted, delay=0.05) as server:
        argv = [sys.executable, "-m", "ecomtrain.generate", "--spec", str(spec), "--out"]
        argv += [str(tmp_path), "--base-url", server.url, "--model", "m", "--target", "40"]
        proc = subprocess.Popen(argv + ["--concurrency", "2"], env=env, stdout=subprocess.DEVNULL)
        records = tmp_path / "records.jsonl"
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            if records.exists() and records.read_text().count("\n") >= 8:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done_before = sum(final_keys(tmp_path).values())
        assert 8 <= done_before < 40
        with records.open("a") as f:  # a write torn by the crash
            f.write('{"input_field": "half a rec')
        before = server.requests
        stats = generate(spec, tmp_path, server.url, "--target", "40")
    assert stats["run"]["skipped"] == done_before
    assert server.requests - before == 40 - done_before == stats["run"]["requested"]
    keys = final_keys(tmp_path)
    assert set(keys) == {it.key for it in items} and max(keys.values()) == 1
    ledger = Counter(
        json.loads(x)["key"] for x in (tmp_path / "ledger.jsonl").read_text().split("\n") if x
    )
    assert ledger == keys


def test_tiny_model_output_is_rejected_and_counted(tmp_path):
    spec = ROOT / "configs" / "generate" / "query_ner.yaml"
    respond = tiny_model_responder(resolve_model(ModelConfig()))
    with ChatServer(respond) as server:
        args = ["--target", "6", "--max-tokens", "24", "--temperature", "0", "--concurrency", "2"]
        stats = generate(spec, tmp_path, server.url, *args)
    r = stats["run"]
    assert r["requested"] == 6 == r["written"] + r["rejected"] + r["duplicate"]
    _, rejects = outputs(tmp_path)
    assert len(rejects) == r["rejected"] + r["duplicate"]
    assert all(x["reason"] and x["detail"] for x in rejects)
    assert sum(r["reject_reasons"].values()) == r["rejected"] + r["duplicate"]
