"""A DeepSpeed checkpoint resumes only into the adapter it was saved from (ZeRO-2 and
ZeRO-3, gloo, one process): the frozen base is not in it, so DeepSpeed's own loading must
be told not to be strict, and ecomtrain checks the rest itself. Before it did, a q_proj
adapter's checkpoint loaded silently into an o_proj adapter (same shapes), which then
trained on from the q_proj weights."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_train_objective import micro_batches, trainable

from ecomtrain.base_model import resolve_model
from ecomtrain.config import LoraConfig, ModelConfig, TrainConfig
from ecomtrain.model import load_model, training_model
from ecomtrain.train.engine import initialize, load_state, save_state, zero3_loading
from ecomtrain.train.inputs import training_attention
from ecomtrain.train.loop import Micro, optimizer_step


def _worker(rank: int, path: str, port: int, folder: str, stage: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0")
    os.environ.update(LOCAL_RANK="0", WORLD_SIZE="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=0, world_size=1)
    cfg = TrainConfig(zero_stage=stage, micro_batch_size=1, grad_accum=1)

    def engine(targets: list[str]):
        keep = zero3_loading(cfg)  # noqa: F841  (as the loop loads)
        torch.manual_seed(0)
        base = load_model(path, training_attention("sdpa"))
        model = training_model(base, LoraConfig(rank=4, target_modules=targets), False)
        return initialize(model, cfg)[0]

    saved = engine(["q_proj"])
    optimizer_step(saved, [Micro(micro_batches(path)[0])], 1)
    save_state(saved, folder, {"step": 1})
    result = {"saved": trainable(saved)}
    same = engine(["q_proj"])
    result["client"] = load_state(same, folder)
    result["resumed"] = trainable(same)
    try:
        load_state(engine(["o_proj"]), folder)
        result["other"] = "loaded"
    except ValueError as e:
        result["other"] = str(e)
    torch.save(result, out)
    dist.destroy_process_group()


@pytest.mark.parametrize("stage", [2, 3])
def test_a_checkpoint_resumes_its_own_adapter_and_refuses_another(tmp_path, stage):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out, folder = tmp_path / "result.pt", tmp_path / "checkpoint"
    args = (resolve_model(ModelConfig()), port, str(folder), stage, str(out))
    mp.spawn(_worker, args=args, nprocs=1)
    result = torch.load(out, weights_only=True)
    assert result["client"]["step"] == 1
    assert torch.equal(result["resumed"], result["saved"]) and result["saved"].abs().sum() > 0
    assert result["other"].startswith(f"{folder}: the checkpoint does not fit this model's")
    assert "missing (base_model.model.model.layers.0.self_attn.o_proj.lora_A" in result["other"]
    assert "unexpected (base_model.model.model.layers.0.self_attn.q_proj.lora_A" in result["other"]
