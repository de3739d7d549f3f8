"""Generation through the local backend: the tiny model in a Ray Data actor pool.

The tiny model cannot write JSON records, so its completions end in rejects; these tests
check the plumbing: every work item comes back, is counted once, and reruns resume."""

import json
from pathlib import Path

import pytest
from wandb_files import runs as wandb_runs

from ecomtrain.generate.__main__ import main, parse_args
from ecomtrain.generate.run import run

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "configs" / "generate").glob("*.yaml"))
REASONS = {"bad_json", "truncated", "empty", "fields", "invalid", "prompt_too_long", "options"}


@pytest.fixture(autouse=True)
def refdata_env(refdata, monkeypatch):
    monkeypatch.setenv("ECOMTRAIN_REFDATA", str(refdata))


def generate_local(spec, out, target: int, *extra) -> dict:
    argv = ["--spec", str(spec), "--out", str(out), "--backend", "local", "--concurrency", "1"]
    return run(parse_args(argv + ["--target", str(target), "--max-tokens", "16", *extra]))


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_every_spec_runs_on_the_local_backend(spec, tmp_path, module_ray, capsys):
    argv = ["--spec", str(spec), "--out", str(tmp_path), "--backend", "local", "--target", "3"]
    argv += ["--concurrency", "1", "--max-tokens", "16", "--temperature", "0"]
    assert main([*argv, "--wandb-mode", "offline"]) == 0
    stats = json.loads((tmp_path / "stats.json").read_text())
    r = stats["run"]
    # the run is also a W&B run (offline here) holding its arguments and figures
    (wandb,) = wandb_runs(tmp_path / "wandb")
    assert wandb["job_type"] == "generate" and wandb["tags"] == [spec.name]
    assert wandb["config"]["spec"] == str(spec) and wandb["config"]["backend"] == "local"
    assert wandb["summary"]["run/requested"] == 3
    assert r["requested"] == 3 == r["written"] + r["rejected"] + r["duplicate"]
    rejects = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == r["rejected"] + r["duplicate"]
    assert set(r["reject_reasons"]) <= REASONS | {"duplicate_exact", "duplicate_near"}
    assert r["written"] == 0  # a random 2-layer model writes no valid JSON record


@pytest.mark.slow
def test_local_sampling_is_seeded_and_reruns_resume(tmp_path, module_ray):
    spec = ROOT / "configs" / "generate" / "category_attribute_mcq.yaml"
    first = generate_local(spec, tmp_path / "a", 4, "--temperature", "0.9")
    again = generate_local(spec, tmp_path / "b", 4, "--temperature", "0.9")
    assert first["run"]["requested"] == again["run"]["requested"] == 4

    def completions(out):
        lines = (out / "rejects.jsonl").read_text().splitlines()
        return {r["key"]: r["completion"] for r in map(json.loads, lines)}

    assert completions(tmp_path / "a") == completions(tmp_path / "b")
    assert len(set(completions(tmp_path / "a").values())) > 1
    more = generate_local(spec, tmp_path / "a", 6, "--temperature", "0.9")
    assert more["run"]["skipped"] == 4 and more["run"]["requested"] == 2
    assert len(completions(tmp_path / "a")) == 6
