"""Over-long records, packing, the block-diagonal mask, and packed == unpacked loss."""

import json

import numpy as np
import pytest
import torch

from ecomtrain.config import ModelConfig
from ecomtrain.data import IGNORE, encode, model_inputs, tokenize_and_pack
from ecomtrain.datacli import main
from ecomtrain.demo import demo_records
from ecomtrain.model import load_model, load_tokenizer, resolve_model
from ecomtrain.packing import fit, pack


@pytest.fixture(scope="module")
def tiny():
    path = resolve_model(ModelConfig())
    return path, load_tokenizer(path)


def test_fit_keeps_the_answer_and_both_ends_of_the_prompt():
    ids = list(range(10))
    labels = [IGNORE] * 7 + [7, 8, 9]
    assert fit(ids, labels, 10) == (ids, labels, "ok")
    out_ids, out_labels, status = fit(ids, labels, 6)
    assert status == "truncated" and out_ids == [0, 5, 6, 7, 8, 9]  # middle of the prompt cut
    assert out_labels == [IGNORE, IGNORE, IGNORE, 7, 8, 9]
    assert fit(ids, labels, 4)[0] == [6, 7, 8, 9]  # one prompt token left before the answer
    assert fit(ids, labels, 3) == ([], [], "dropped")  # the answer alone does not fit


def test_first_fit_decreasing_fills_rows():
    rows = pack([5, 3, 7, 2, 8, 1], 10)
    assert sorted(i for r in rows for i in r) == list(range(6))
    assert all(sum([5, 3, 7, 2, 8, 1][i] for i in r) <= 10 for r in rows)
    assert len(rows) == 3  # 26 tokens in 3 rows of 10


def packed_batch(path: str, records: list[dict], max_len: int) -> dict:
    batch = {
        "input": [r["input_field"] for r in records],
        "answer": [str(r["output_field"]) for r in records],
        "source": [f"demo:{i}" for i in range(len(records))],
    }
    return tokenize_and_pack(batch, path, max_len, prefix=False)


def test_packed_rows_have_segments_and_counts(tiny):
    path, _ = tiny
    records = demo_records(per_task=3)[:20]
    out = packed_batch(path, records, 128)
    assert out["input_ids"].shape[1] == 128 and out["segment_ids"].shape == out["labels"].shape
    assert out["samples"].sum() == 20 and out["dropped"].sum() == 0
    assert len(out["samples"]) < 20  # several records share a row
    for seg, labels in zip(out["segment_ids"], out["labels"], strict=True):
        starts = np.flatnonzero(np.diff(seg, prepend=-1) != 0)
        assert (labels[starts] == IGNORE).all()  # no label predicted across a boundary
    long = [{"input_field": "word " * 300, "output_field": "yes"}] + records[:2]
    out = packed_batch(path, long, 64)
    assert out["truncated"].sum() == 1 and out["samples"].sum() == 3
    out = packed_batch(path, [{"input_field": "q", "output_field": "answer " * 80}], 64)
    assert out["dropped"].sum() == 0 and len(out["samples"]) == 0  # dropped: no rows at all


def test_model_inputs_mask_is_block_diagonal_causal():
    seg = torch.tensor([[1, 1, 2, 2, 2, 0]])
    batch = {"input_ids": torch.arange(6)[None], "labels": torch.zeros(1, 6), "segment_ids": seg}
    out = model_inputs(batch)
    assert out["input_ids"].shape == (1, 5)  # trimmed to the last real token
    assert out["position_ids"].tolist() == [[0, 1, 0, 1, 2]]
    allowed = (out["attention_mask"][0, 0] == 0).int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 1, 1, 1],
    ]
    assert out["attention_mask"].min() == torch.finfo(torch.float32).min
    flat = model_inputs(batch, attn_implementation="flash_attention_2")
    assert set(flat) == {"input_ids", "labels", "position_ids"}
    assert flat["position_ids"].tolist() == [[0, 1, 0, 1, 2]]


def token_loss_sum(model, **kwargs) -> tuple[float, int]:
    """Sum of next-token losses over labelled positions, and their count."""
    labels = kwargs.pop("labels")
    logits = model(**kwargs).logits.float()
    shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )
    return float(loss), int((shift_labels != IGNORE).sum())


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_unpacked_loss(tiny, attn):
    path, tok = tiny
    model = load_model(path, attn_implementation=attn).eval()
    records = demo_records(per_task=2)[:12]
    total, count = 0.0, 0
    with torch.no_grad():
        for r in records:  # one record per forward pass: the reference
            ids, labels = encode(tok, r["input_field"], str(r["output_field"]), prefix=False)
            s, n = token_loss_sum(
                model, input_ids=torch.tensor([ids]), labels=torch.tensor([labels])
            )
            total, count = total + s, count + n
        packed = {k: torch.from_numpy(v) for k, v in packed_batch(path, records, 256).items()}
        assert len(packed["samples"]) < len(records)
        inputs = model_inputs(packed)
        p_total, p_count = token_loss_sum(model, **dict(inputs))
        hf_loss = float(model(**inputs).loss)  # HF: mean over all labelled tokens of the batch
        leaky = {k: v for k, v in inputs.items() if k != "attention_mask"}
        leak_total, _ = token_loss_sum(model, **leaky)
    assert p_count == count
    assert p_total / p_count == pytest.approx(total / count, abs=1e-5)
    assert hf_loss == pytest.approx(total / count, abs=1e-5)
    assert abs(leak_total / p_count - total / count) > 1e-3  # without the mask, samples leak


def test_stats_cli_reports_packing(tiny, tmp_path, capsys):
    corpus = tmp_path / "demo.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in demo_records(per_task=20)) + "\n")
    assert main(["stats", str(corpus), "--max-seq-len", "256", "--no-prefix"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["records"] == 200 and out["bad"] == 0 and len(out["tasks"]) == 10
    assert len(out["capabilities"]) == 4 and out["mixture"]["n_capabilities"] == 4
    assert 0.9 < out["packing_efficiency"] <= 1.0 and out["dropped"] == 0


def test_stats_on_ec_guide_packs_at_least_98_percent(refdata, capsys):
    files = sorted(str(p) for p in refdata.glob("ecguide_*.json"))
    assert len(files) == 5
    assert main(["stats", *files]) == 0  # the default max_seq_len
    out = json.loads(capsys.readouterr().out)
    assert out["records"] == 22110 and out["bad"] == 0
    assert out["packing_efficiency"] >= 0.98, out
