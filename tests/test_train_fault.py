"""Ray Train runs on a local cluster: exact resume after a killed worker (with dropout, and
with a worker killed while writing a checkpoint), the NaN guard, ZeRO-3, nothing left in
the temporary folder. Each test fine-tunes the tiny model with 2 gloo workers for a few
steps; faults are injected from tests/faults.py."""

import json
import os
from pathlib import Path

import pytest
import ray
from faults import PLAN

from ecomtrain.config import load_config
from ecomtrain.train.driver import extra_eval_rows, fit, trial_meta

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent

TASKS = ["attribute_inference_mcq", "review_rating"]
FAST = [
    "train.log_every=1",
    "train.eval_every=3",
    "train.max_steps=8",
    "data.max_eval_per_task=1",
    f"eval.tasks=[{', '.join(TASKS)}]",
    "eval.max_new_tokens=4",
]


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    """The fault plan file, and the workers' own temporary folder (TMPDIR)."""
    return tmp_path_factory.mktemp("faults") / "plan.json", tmp_path_factory.mktemp("tmp")


@pytest.fixture(scope="module")
def local_ray(workdirs):
    plan, tmp = workdirs
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": path, PLAN: str(plan), "TMPDIR": str(tmp)}
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": env, "worker_process_setup_hook": "faults.install"},
    )
    yield
    ray.shutdown()


def inject(workdirs, tmp_path, **fault) -> None:
    """Plan one fault for the next run (see tests/faults.py)."""
    workdirs[0].write_text(json.dumps(fault | {"marker": str(tmp_path / "fault-done")}))


def run(tmp_path: Path, name: str, *overrides: str):
    cfg = load_config(None, [*FAST, *overrides])
    return fit(cfg, trial_meta(name, "pair", TASKS, cfg), str(tmp_path))


def state(result) -> dict:
    return json.loads((Path(result.checkpoint.path) / "ecomtrain_state.json").read_text())


def history(result) -> list:
    return state(result)["history"]


DROPOUT = "lora.dropout=0.1"  # resuming must restore every rank's random generators too


@pytest.mark.parametrize(
    "fault, starts",
    [
        ({"rank": 1, "after_step": 5}, [0, 3]),  # resumes from the step-3 checkpoint
        ({"rank": 1, "in_checkpoint": 6}, [0, 3]),  # the step-6 one was never complete
    ],
    ids=["after-step", "in-checkpoint"],
)
def test_killed_worker_resumes_exactly(local_ray, workdirs, tmp_path, fault, starts):
    clean = history(run(tmp_path, "clean", DROPOUT))
    inject(workdirs, tmp_path, **fault)
    # max_failures 2: under heavy load Ray can also fail a health check while recovering
    resumed = run(tmp_path, "killed", DROPOUT, "train.max_failures=2")
    workdirs[0].unlink()
    assert (tmp_path / "fault-done").exists()  # the fault did happen
    steps = [s for s, _ in history(resumed)]
    assert steps == list(range(1, 9))  # every step once: none repeated, none skipped
    assert state(resumed)["starts"][:2] == starts  # resumed from the last complete checkpoint
    for (s, a), (_, b) in zip(clean, history(resumed), strict=True):
        assert abs(a - b) < 1e-5, f"step {s}: {a} vs {b}"
    gap = max(abs(a - b) for (_, a), (_, b) in zip(clean, history(resumed), strict=True))
    print(f"resume: attempts began at steps {state(resumed)['starts']}, max |loss diff| {gap:.1e}")
    assert resumed.metrics["step"] == 8 and "score" in resumed.metrics


def test_a_run_leaves_nothing_in_the_temporary_folder(local_ray, workdirs, tmp_path):
    """(A worker killed by SIGKILL, as in the tests above, cannot clean up after itself.)"""
    before = set(workdirs[1].iterdir())
    run(tmp_path, "tidy", "train.max_steps=6")  # two checkpoints, on both ranks
    left = sorted(p.name for p in set(workdirs[1].iterdir()) - before)
    assert not left, f"left in the workers' TMPDIR: {left}"


def test_non_finite_loss_stops_the_run(local_ray, tmp_path):
    import torch

    from ecomtrain.config import ModelConfig
    from ecomtrain.model import load_model, load_tokenizer
    from ecomtrain.tiny_model import resolve_model

    tiny = resolve_model(ModelConfig())
    broken = load_model(tiny)  # a corrupt checkpoint: one NaN in the final norm
    with torch.no_grad():
        broken.model.norm.weight[0] = float("nan")
    broken.save_pretrained(tmp_path / "nan-model")
    load_tokenizer(tiny).save_pretrained(tmp_path / "nan-model")
    with pytest.raises(Exception, match=r"trial nan: non-finite loss at step 1"):
        run(tmp_path, "nan", f"model.name_or_path={tmp_path / 'nan-model'}")


def test_zero3_trains_and_saves_a_full_adapter(local_ray, tmp_path):
    from peft import PeftModel

    from ecomtrain.model import load_model

    result = run(tmp_path, "zero3", "train.zero_stage=3", "train.max_steps=4")
    assert result.metrics["step"] == 4 and 0.0 <= result.metrics["score"] <= 1.0
    adapter = Path(result.checkpoint.path)
    meta = json.loads((adapter / "ecomtrain_trial.json").read_text())
    base = load_model(
        json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    )
    model = PeftModel.from_pretrained(base, adapter)
    lora = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora and all(p.numel() > 0 for p in lora)  # gathered, not ZeRO-3 placeholders
    assert any(p.abs().sum() > 0 for p in lora)  # trained (lora_B starts at zero)
    assert meta["name"] == "zero3"


def test_extra_eval_file_is_scored_with_every_evaluation(local_ray, tmp_path):
    from ecomtrain.data.demo import demo_records

    extra = tmp_path / "extra.jsonl"
    records = [r for r in demo_records(per_task=3) if r["task_name"] in TASKS]
    extra.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = run(tmp_path, "extra", "train.max_steps=3", f"eval.extra_files=[{extra}]")
    m = result.metrics
    assert 0.0 <= m["extra/score"] <= 1.0 and m["extra/eval_records"] == len(records)
    assert {f"extra/task/{t}" for t in TASKS} <= set(m)


def test_bad_extra_eval_file_is_named(tmp_path):
    from ecomtrain.data.records import CorpusError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input_field": "q", "output_field": 1, "task_type": "ranking"}\n')
    cfg = load_config(None, [f"eval.extra_files=[{bad}]"])
    with pytest.raises(CorpusError, match=r"bad.jsonl:1: "):
        extra_eval_rows(cfg)
