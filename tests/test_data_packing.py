"""Over-long records, packing, packed model inputs, and packed == unpacked loss."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ecomtrain.base_model import resolve_model
from ecomtrain.config import ModelConfig
from ecomtrain.data.__main__ import main
from ecomtrain.data.demo import demo_records
from ecomtrain.data.packing import IGNORE, Prompt, encode, layout, pack, tokenize_records, truncate
from ecomtrain.model import load_model, load_tokenizer
from ecomtrain.train.inputs import (
    GROUP_SLACK,
    length_groups,
    model_inputs,
    packed_loss,
    training_attention,
)


@pytest.fixture(scope="module")
def tiny():
    path = resolve_model(ModelConfig())
    return path, load_tokenizer(path)


def test_fit_keeps_the_answer_and_both_ends_of_the_prompt():
    ids = list(range(10))
    labels = [IGNORE] * 7 + [7, 8, 9]
    assert truncate(ids, labels, 10) == (ids, labels, "ok")
    out_ids, out_labels, status = truncate(ids, labels, 6)
    assert status == "truncated" and out_ids == [0, 5, 6, 7, 8, 9]  # middle of the prompt cut
    assert out_labels == [IGNORE, IGNORE, IGNORE, 7, 8, 9]
    assert truncate(ids, labels, 4)[0] == [6, 7, 8, 9]  # one prompt token left before the answer
    assert truncate(ids, labels, 3) == ([], [], "dropped")  # the answer alone does not fit


def test_first_fit_decreasing_fills_rows():
    rows = pack([5, 3, 7, 2, 8, 1], 10)
    assert sorted(i for r in rows for i in r) == list(range(6))
    assert all(sum([5, 3, 7, 2, 8, 1][i] for i in r) <= 10 for r in rows)
    assert len(rows) == 3  # 26 tokens in 3 rows of 10


def packed_batch(path: str, records: list[dict], max_len: int) -> dict:
    """Records tokenised as the pipeline does, laid out in rows; `dropped` counts the records
    whose answer does not fit (tokenize_records leaves them out)."""
    batch = {
        "input": [r["input_field"] for r in records],
        "answer": [str(r["output_field"]) for r in records],
        "task_family": ["x"] * len(records),
        "source": [f"demo:{i}" for i in range(len(records))],
    }
    tok = tokenize_records(batch, path, max_len, Prompt(prefix=False)).to_pydict()
    seqs = [
        (ids, [IGNORE] * n + ids[n:]) for ids, n in zip(tok["ids"], tok["n_prompt"], strict=True)
    ]
    out = layout(seqs, max_len, pad=0)
    return out | {"truncated": np.array(tok["truncated"]), "dropped": len(records) - len(seqs)}


def test_packed_rows_have_segments_and_counts(tiny):
    path, _ = tiny
    records = demo_records(per_task=3)[:20]
    out = packed_batch(path, records, 128)
    assert out["input_ids"].shape[1] == 128 and out["segment_ids"].shape == out["labels"].shape
    assert out["samples"].sum() == 20 and out["dropped"] == 0
    assert len(out["samples"]) < 20  # several records share a row
    for seg, labels in zip(out["segment_ids"], out["labels"], strict=True):
        starts = np.flatnonzero(np.diff(seg, prepend=-1) != 0)
        assert (labels[starts] == IGNORE).all()  # no label predicted across a boundary
    long = [{"input_field": "word " * 300, "output_field": "yes"}] + records[:2]
    out = packed_batch(path, long, 64)
    assert out["truncated"].sum() == 1 and out["samples"].sum() == 3
    out = packed_batch(path, [{"input_field": "q", "output_field": "answer " * 80}], 64)
    assert out["dropped"] == 1 and len(out["samples"]) == 0  # counted, though no row is left


def test_model_inputs_flatten_real_tokens_and_keep_records_apart():
    seg = torch.tensor([[1, 1, 2, 2, 2, 0], [1, 1, 1, 0, 0, 0]])
    labels = torch.tensor([[IGNORE, 5, IGNORE, 7, 8, IGNORE], [IGNORE, IGNORE, 9, IGNORE] + [0, 0]])
    batch = {"input_ids": torch.arange(12).reshape(2, 6), "labels": labels, "segment_ids": seg}
    out = model_inputs(batch)
    assert out["input_ids"].tolist() == [[0, 1, 2, 3, 4, 6, 7, 8]]  # padding dropped
    assert out["position_ids"].tolist() == [[0, 1, 0, 1, 2, 0, 1, 2]]
    # next-token targets only where a label is predicted, never across records
    assert out["logits_to_keep"].tolist() == [0, 2, 3, 6]
    assert out["targets"].tolist() == [5, 7, 8, 9]
    gathers, scatter = out["packed_groups"]
    flat = torch.cat([g.reshape(-1) for g in gathers])
    assert flat[scatter].tolist() == list(range(8))  # every token comes back to its place
    assert sorted(int(g[i, 0]) for g in gathers for i in range(len(g))) == [0, 2, 5]
    flash = model_inputs(batch, attn_implementation="flash_attention_2")
    assert flash["cu_seq_lens_q"].tolist() == [0, 2, 5, 8] and flash["max_length_q"] == 3
    assert "packed_groups" not in flash and "attention_mask" not in flash


def test_length_groups_bound_padding():
    lengths = torch.tensor([100, 10, 90, 12, 40, 64])
    begins = torch.cumsum(lengths, 0) - lengths
    positions = torch.cat([torch.arange(int(n)) for n in lengths])
    gathers, scatter = length_groups(begins, lengths, positions)
    for g in gathers:
        shortest = min(int(lengths[(begins == row[0]).nonzero()[0, 0]]) for row in g)
        assert g.shape[1] <= GROUP_SLACK * shortest
    assert torch.cat([g.reshape(-1) for g in gathers])[scatter].tolist() == list(range(316))


def reference_loss(model, tok, records) -> float:
    """Mean next-token loss over labelled tokens, one record per forward pass."""
    total, count = 0.0, 0
    for r in records:
        ids, labels = encode(tok, r["input_field"], str(r["output_field"]), Prompt(prefix=False))
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
        target = torch.tensor(labels[1:])
        total += float(F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="sum"))
        count += int((target != IGNORE).sum())
    return total / count


def test_packed_loss_equals_unpacked_loss(tiny):
    path, tok = tiny
    model = load_model(path, attn_implementation=training_attention("sdpa")).eval()
    records = demo_records(per_task=2)[:12]
    records += [{"input_field": "word " * 150, "output_field": "yes"}]  # a long one: 2 groups
    with torch.no_grad():
        expected = reference_loss(model, tok, records)
        rows = packed_batch(path, records, 512)
        packed = {k: torch.from_numpy(rows[k]) for k in ("input_ids", "labels", "segment_ids")}
        packed["samples"] = torch.from_numpy(rows["samples"])
        assert len(packed["samples"]) < len(records)
        inputs = model_inputs(packed)
        assert len(inputs["packed_groups"][0]) > 1
        loss = float(packed_loss(model, **inputs)) / len(inputs["targets"])
        n = inputs["input_ids"].shape[1]  # one record spanning the row: tokens see each other
        whole = (torch.arange(n)[None],), torch.arange(n)
        leaky = float(packed_loss(model, **inputs | {"packed_groups": whole}))
        leaky /= len(inputs["targets"])
    assert loss == pytest.approx(expected, abs=1e-5)
    assert abs(leaky - expected) > 1e-3


def test_packed_sdpa_model_generates_like_sdpa(tiny):
    path, tok = tiny
    plain, packed = (load_model(path, attn).eval() for attn in ("sdpa", training_attention("sdpa")))
    enc = tok(["a short one", "a somewhat longer question here"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.allclose(plain(**enc).logits, packed(**enc).logits, atol=1e-6)


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
