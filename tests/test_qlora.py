"""QLoRA: a 4-bit (nf4) base with a LoRA on top (model.quantization), on CPU through
bitsandbytes' CPU kernels; the GPU check is tests/test_gpu.py's."""

import os
import sys

import pytest
import torch
import torch.distributed as dist

from ecomtrain.base_model import resolve_model
from ecomtrain.config import ConfigError, LoraConfig, ModelConfig, TrainConfig, load_config
from ecomtrain.connect import free_port
from ecomtrain.model import ModelError, load_model, training_model
from ecomtrain.train.engine import initialize
from ecomtrain.train.inputs import model_inputs, packed_loss, training_attention


@pytest.fixture(scope="module")
def tiny() -> str:
    return resolve_model(ModelConfig())


def test_an_nf4_base_trains_its_lora_under_deepspeed(tiny, tmp_path):
    """The base's linear layers load in 4 bits, frozen; the LoRA on top trains through
    DeepSpeed ZeRO-2 steps (one gloo rank, in a process of its own), and its loss falls on
    the batch it learns."""
    import bitsandbytes as bnb

    base = load_model(tiny, precision="fp32", quantization="nf4")
    layer = base.model.layers[0].self_attn.q_proj
    assert isinstance(layer, bnb.nn.Linear4bit) and layer.weight.quant_type == "nf4"
    model = training_model(base, LoraConfig(rank=4, alpha=8.0), gradient_checkpointing=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)

    out = tmp_path / "losses.pt"
    torch.multiprocessing.start_processes(
        _train, args=(tiny, str(out), free_port(29613)), nprocs=1, start_method="spawn"
    )
    losses = torch.load(out)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0], losses


def _train(rank: int, path: str, out: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", LOCAL_RANK="0")
    os.environ["WORLD_SIZE"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=0, world_size=1)
    base = load_model(path, training_attention("sdpa"), "fp32", quantization="nf4")
    model = training_model(base, LoraConfig(rank=4, alpha=8.0), gradient_checkpointing=True)
    engine, _ = initialize(model, TrainConfig(zero_stage=2, micro_batch_size=1, lr=1e-2))
    torch.manual_seed(0)
    ids = torch.randint(3, 200, (1, 48))
    labels = ids.clone()
    labels[0, :16] = -100  # the prompt
    rows = {"input_ids": ids, "labels": labels, "segment_ids": torch.ones_like(ids)}
    inputs = model_inputs(rows)
    losses = []
    for _ in range(6):
        loss = packed_loss(engine, **inputs) / len(inputs["targets"])
        engine.backward(loss)
        engine.step()
        losses.append(float(loss))
    torch.save(losses, out)
    dist.destroy_process_group()


def test_nf4_without_bitsandbytes_is_a_clear_error(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails
    with pytest.raises(ModelError, match=r"needs bitsandbytes: pip install 'ecomtrain\[qlora\]'"):
        load_model(tiny, quantization="nf4")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.zero_stage=3"], "needs train.zero_stage 0, 1 or 2"),
        (["lora.shape=per-capability"], "is for lora.shape single only"),
        (["model.quantization=int3"], r"model.quantization: 'int3' is not one of"),
    ],
)
def test_nf4_configs_it_cannot_train_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["model.quantization=nf4", *overrides])
