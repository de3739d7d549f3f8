"""The task mixture, and the whole Ray Data pipeline on a local cluster."""

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import ray

from ecomtrain.config import Config, DataConfig, ModelConfig
from ecomtrain.data.demo import demo_records
from ecomtrain.data.mixture import copies, multiplicities, resample, stats, targets
from ecomtrain.data.pipeline import mixture_stats, task_split, train_dataset
from ecomtrain.data.records import CorpusError
from ecomtrain.data.scan import is_eval
from ecomtrain.tiny_model import resolve_model

COUNTS = {"query_ner": 900, "review_rating": 100, "title_translation": 0}


def test_temperature_one_is_proportional_and_larger_flattens():
    t1 = targets(COUNTS, DataConfig())
    assert t1 == pytest.approx({"query_ner": 900, "review_rating": 100, "title_translation": 0})
    t2 = targets(COUNTS, DataConfig(temperature=2.0))
    assert t2["query_ner"] / t2["review_rating"] == pytest.approx(3.0)  # sqrt(900 / 100)
    assert sum(t2.values()) == pytest.approx(1000)
    flat = targets(COUNTS, DataConfig(temperature=1e6))
    assert flat["query_ner"] == pytest.approx(flat["review_rating"], rel=1e-3)


def test_caps_and_weights():
    capped = targets(COUNTS, DataConfig(max_per_task=200))
    assert capped == pytest.approx({"query_ner": 200, "review_rating": 100, "title_translation": 0})
    w = targets(COUNTS, DataConfig(capability_weights={"user-behavior-alignment": 9.0}))
    assert w["query_ner"] == pytest.approx(w["review_rating"])  # 900 * 1 vs 100 * 9
    off = targets(COUNTS, DataConfig(task_weights={"query_ner": 0.0}))
    assert off["query_ner"] == 0 and off["review_rating"] == pytest.approx(1000)
    with pytest.raises(ValueError, match="data.task_weights: unknown task family 'nope'"):
        targets(COUNTS, DataConfig(task_weights={"nope": 1.0}))
    with pytest.raises(ValueError, match="data.capability_weights: unknown capability"):
        targets(COUNTS, DataConfig(capability_weights={"shoes": 1.0}))
    with pytest.raises(ValueError, match="data.temperature"):
        targets(COUNTS, DataConfig(temperature=0))
    with pytest.raises(ValueError, match="mixture is empty"):
        targets({"query_ner": 0}, DataConfig())


def test_resampling_is_deterministic_and_hits_the_target():
    assert copies("a.jsonl:3", 2.4, 0) == copies("a.jsonl:3", 2.4, 0)
    draws = [copies(f"a.jsonl:{i}", 2.4, 0) for i in range(20000)]
    assert set(draws) == {2, 3} and np.mean(draws) == pytest.approx(2.4, abs=0.02)
    other = [copies(f"a.jsonl:{i}", 0.5, 1) for i in range(2000)]
    assert other != [copies(f"a.jsonl:{i}", 0.5, 2) for i in range(2000)]
    batch = {"source": np.array(["x:1", "x:2"]), "task_family": np.array(["a", "b"])}
    out = resample(batch, {"a": 3.0, "b": 0.0}, seed=0)
    assert list(out["source"]) == ["x:1"] * 3


def test_mixture_stats_are_flat_and_json_able():
    s = stats(COUNTS, DataConfig(temperature=2.0))
    json.dumps(s)
    assert (s["n_tasks"], s["n_capabilities"], s["capability_coverage"]) == (2, 2, 0.5)
    p = [0.75, 0.25]
    assert s["task_entropy"] == pytest.approx(-sum(x * math.log(x) for x in p))
    assert s["records/query_ner"] == 750 and "records/title_translation" not in s
    assert all(not isinstance(v, (dict, list)) for v in s.values())


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def small_cfg(tmp_path, records: list[dict], **data) -> Config:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n")
    cfg = Config()
    cfg.data = DataConfig(corpus=[str(corpus)], max_seq_len=128, pack_window=64, **data)
    cfg.data.rejects = str(tmp_path / "rejects.jsonl")
    cfg.eval.prompt_prefix = False
    cfg.train.num_workers, cfg.train.micro_batch_size = 2, 2
    return cfg


def rows_of(ds) -> list[dict]:
    return [
        {k: v.tolist() if hasattr(v, "tolist") else v for k, v in r.items()} for r in ds.iter_rows()
    ]


def test_pipeline_packs_the_mixture_deterministically(ray_local, tmp_path):
    cfg = small_cfg(tmp_path, demo_records(per_task=12))
    model = resolve_model(ModelConfig())
    tasks = ["query_ner", "review_rating", "title_translation"]
    train, held_out = train_dataset(cfg, model, tasks)
    rows = rows_of(train)
    assert rows == rows_of(train_dataset(cfg, model, tasks)[0])  # the stream is reproducible
    assert all(len(r["input_ids"]) == 128 == len(r["segment_ids"]) for r in rows)
    expected = mixture_stats(cfg, tasks)
    assert sum(r["samples"] for r in rows) == expected["records"]
    assert sum(r["samples"] for r in rows) > len(rows)  # records share rows
    eval_rows = held_out.take_all()
    need = {"input", "answer", "output_json", "task_name", "task_family", "capability"}
    assert eval_rows and need | {"task_type", "metric"} <= set(eval_rows[0])
    held_tasks = {r["task_family"] for r in eval_rows}  # every task, not just the trial's
    assert len(held_tasks) >= 6 and held_tasks <= {r["task_name"] for r in demo_records()}
    train_inputs = {r["input"] for r in task_split(cfg, tasks)[0].take_all()}
    assert not train_inputs & {r["input"] for r in eval_rows}


def test_pipeline_follows_temperature_and_caps(ray_local, tmp_path):
    records = [r for r in demo_records(per_task=40) if r["task_name"] != "query_ner"]
    records += [r for r in demo_records(per_task=6) if r["task_name"] == "query_ner"]
    cfg = small_cfg(tmp_path, records, temperature=3.0, max_per_task=30)
    train, _ = task_split(cfg, ["query_ner", "review_rating", "numeric_reasoning"])
    counts = Counter(r["task_family"] for r in train.take_all())
    mult = multiplicities(dict(counts), cfg.data)
    mixed = train.map_batches(resample, fn_kwargs={"mult": mult, "seed": 0}).take_all()
    got = Counter(r["task_family"] for r in mixed)
    want = targets(dict(counts), cfg.data)
    assert got["query_ner"] > counts["query_ner"]  # the small task is upsampled
    for t, n in want.items():
        assert abs(got[t] - n) <= 3 * math.sqrt(n) + 1, (t, got[t], n)


def test_pipeline_rejects_and_decontaminates(ray_local, tmp_path):
    records = demo_records(per_task=6)
    bad = dict(records[0], output_field="not an index")
    eval_file = tmp_path / "dev.jsonl"
    eval_file.write_text("".join(json.dumps(r) + "\n" for r in records[:5]))
    cfg = small_cfg(tmp_path, [*records, bad], decontaminate=[str(eval_file)])
    model = resolve_model(ModelConfig())
    with pytest.raises(CorpusError, match=r"corpus.jsonl:61: output_field: multiple-choice"):
        train_dataset(cfg, model, [])
    cfg.data.max_bad_fraction = 0.05
    train, _ = train_dataset(cfg, model, [])
    (reject,) = [json.loads(x) for x in Path(cfg.data.rejects).read_text().splitlines()]
    assert reject["line"] == 61 and reject["record"]["output_field"] == "not an index"
    stats = mixture_stats(cfg, [])
    assert stats["bad_records"] == 1
    not_held = sum(not is_eval(r["input_field"], cfg.data.eval_fraction) for r in records[:5])
    assert stats["decontaminated/exact"] == not_held > 0  # held-out ones never train anyway
    packed = sum(r["samples"] for r in rows_of(train))
    assert packed == stats["records"]


def test_a_mixture_shorter_than_one_step_is_repeated_not_a_hang(ray_local, tmp_path):
    cfg = small_cfg(tmp_path, demo_records(per_task=3))
    cfg.train.num_workers, cfg.train.micro_batch_size = 2, 8
    train, _ = train_dataset(cfg, resolve_model(ModelConfig()), ["query_ner"])
    rows = rows_of(train)
    assert len(rows) >= 16 and len({json.dumps(r["input_ids"]) for r in rows}) < len(rows)
