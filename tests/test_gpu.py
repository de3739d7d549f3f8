"""Checks that need a CUDA GPU (skipped without one): packed training kernels, the MFU bench,
QLoRA.

Run them with `pytest -m gpu` on a GPU machine; they need torch, transformers, peft and
deepspeed, not Ray.
"""

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from ecomtrain.bench.mfu import mfu, synthetic_rows
from ecomtrain.config import load_config
from ecomtrain.data.packing import IGNORE
from ecomtrain.train.inputs import model_inputs, packed_loss, to_device, training_attention

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def small_llama(attn: str, dtype=torch.float32):
    config = LlamaConfig(
        vocab_size=1000,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        return LlamaForCausalLM._from_config(config, dtype=dtype, attn_implementation=attn).eval()


def test_packed_loss_equals_unpacked_loss_on_gpu():
    model = small_llama(training_attention("sdpa"))
    batch = synthetic_rows(4, 1024, 1000, seed=0)
    inputs = model_inputs(batch)
    assert len(inputs["packed_groups"][0]) > 1  # several length groups
    total, count = 0.0, 0
    with torch.no_grad():
        packed = float(packed_loss(model, **to_device(inputs, "cuda"))) / len(inputs["targets"])
        for ids, labels, seg in zip(*batch.values(), strict=True):
            for s in seg.unique()[seg.unique() > 0]:
                x, y = ids[seg == s].cuda(), labels[seg == s].cuda()
                logits = model(input_ids=x[None]).logits[0, :-1].float()
                total += float(F.cross_entropy(logits, y[1:], ignore_index=IGNORE, reduction="sum"))
                count += int((y[1:] != IGNORE).sum())
    assert packed == pytest.approx(total / count, abs=1e-4)


def test_flash_attention_varlen_equals_packed_sdpa():
    pytest.importorskip("flash_attn")
    batch = synthetic_rows(2, 1024, 1000, seed=1)
    losses = []
    for attn in ("sdpa", "flash_attention_2"):
        model = small_llama(training_attention(attn), torch.bfloat16)
        with torch.no_grad():
            inputs = to_device(model_inputs(batch, attn), "cuda")
            losses.append(float(packed_loss(model, **inputs)) / len(inputs["targets"]))
    assert losses[0] == pytest.approx(losses[1], abs=2e-2)


def test_mfu_bench_reports_sane_figures():
    cfg = load_config(
        "configs/qwen2.5-7b-8gpu.yaml",
        ["model.attn_implementation=sdpa", "train.micro_batch_size=2", "lora.rank=16"],
    )
    figures = mfu(cfg, "1b", steps=3, warmup=2)
    assert 0.05 < figures["mfu"] < 1.0 and figures["hfu"] >= figures["mfu"]
    assert figures["peak_memory_gib"] > 2.3  # the bf16 weights alone are 2.3 GiB
    assert torch.isfinite(torch.tensor(figures["loss"]))


def test_qlora_trains_a_lora_on_a_4bit_base_on_gpu(tmp_path):
    """model.quantization=nf4 on a GPU: the base's linear layers in 4 bits on the device,
    bf16 matmuls, and the LoRA's loss falls on the batch it learns."""
    import bitsandbytes as bnb

    from ecomtrain.config import LoraConfig
    from ecomtrain.model import load_model, training_model

    small_llama("sdpa").save_pretrained(tmp_path)
    base = load_model(str(tmp_path), "sdpa", "bf16", quantization="nf4")
    layer = base.model.layers[0].self_attn.q_proj
    assert isinstance(layer, bnb.nn.Linear4bit) and layer.weight.device.type == "cuda"
    model = training_model(base, LoraConfig(rank=8, alpha=16.0), gradient_checkpointing=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(0)
    ids = torch.randint(0, 1000, (2, 128), device="cuda")
    losses = []
    for _ in range(6):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0], losses
