"""A record's own split: `split: train | eval` chooses its side of the held-out split in the
scan, the validator and the held-out sample every trial is scored on; a record without it is
split by a hash of its input (data.eval_fraction)."""

import json

import pytest
from records import mc

from ecomtrain.config import Config, DataConfig
from ecomtrain.data.__main__ import main as data_main
from ecomtrain.data.scan import eval_index, is_eval, parse_file, scan_corpus
from ecomtrain.evaluate.held_out import held_out_rows, held_out_sample

FRACTION = 0.15


def question(i: int) -> str:
    return f"Which colour is item {i}?\n0. red\n1. blue\nAnswer:"


def texts(held: bool, n: int) -> list[str]:
    """n questions the hash puts on the held-out side (or not) at FRACTION."""
    found = (question(i) for i in range(10_000) if is_eval(question(i), FRACTION) == held)
    return [next(found) for _ in range(n)]


def record(text: str, **extra) -> dict:
    return mc(text, task_name="attribute_inference_mcq", **extra)


@pytest.fixture
def corpus(tmp_path):
    """Records whose own split goes against the hash, records without one, and what each
    must become: (path, [split of each record])."""
    hashed_eval, hashed_train = texts(True, 2), texts(False, 3)
    cases = [
        (record(hashed_eval[0], split="train"), "train"),
        (record(hashed_train[0], split="eval"), "eval"),
        (record(hashed_eval[1]), "eval"),
        (record(hashed_train[1]), "train"),
        (record(hashed_train[2], split="train"), "train"),
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r, _ in cases))
    return path, [split for _, split in cases]


def test_the_scan_honours_each_records_split(corpus):
    path, want = corpus
    cfg = DataConfig(eval_fraction=FRACTION)
    rows = list(parse_file(str(path), None, cfg, None))
    assert [r["split"] for r in rows] == want
    counts = scan_corpus([str(path)], cfg, use_ray=False)["tasks"]["attribute_inference_mcq"]
    assert (counts["train"], counts["eval"]) == (3, 2)
    full = Config()
    full.data.eval_fraction, full.data.max_eval_per_task = FRACTION, 0
    sample, _ = held_out_sample([r for r in rows if r["split"] == "eval"], full)
    assert sorted(r["source"] for r in sample) == [f"{path}:2", f"{path}:3"]


def test_a_record_in_training_by_its_own_split_is_still_decontaminated(corpus, tmp_path):
    """`split: train` puts a record in training, where overlap with a data.decontaminate file
    drops it; `split: eval` keeps it held out (held-out records are never dropped)."""
    path, _ = corpus
    lines = path.read_text().splitlines()
    benchmark = tmp_path / "benchmark.jsonl"
    benchmark.write_text("\n".join(lines[:2]) + "\n")  # the first two: own train, own eval
    cfg = DataConfig(eval_fraction=FRACTION, decontaminate=[str(benchmark)], ngram=8)
    rows = list(parse_file(str(path), None, cfg, eval_index(cfg)))
    assert [r["split"] for r in rows[:2]] == ["exact", "eval"]


def test_a_bad_split_names_file_line_and_field(tmp_path, capsys):
    path = tmp_path / "mine.jsonl"
    bad = [record(question(1), split="test"), record(question(2), split=1), record(question(3))]
    path.write_text("".join(json.dumps(r) + "\n" for r in bad))
    assert data_main(["validate", str(path)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{path}:1: split: expected 'train' or 'eval' (or no split field), got 'test'",
        f"{path}:2: split: expected 'train' or 'eval' (or no split field), got 1",
    ]


@pytest.mark.slow
def test_the_held_out_sample_is_the_eval_records_and_the_hashed_ones(corpus, local_ray):
    """Through Ray Data, as a sweep draws it: the records held out by their own split and
    those without one that the hash holds out."""
    path, want = corpus
    cfg = Config()
    cfg.data.corpus, cfg.data.eval_fraction, cfg.data.max_eval_per_task = [str(path)], FRACTION, 0
    rows, _ = held_out_rows(cfg)
    held = [i + 1 for i, split in enumerate(want) if split == "eval"]
    assert sorted(r["source"] for r in rows) == [f"{path}:{line}" for line in held]
