"""Batch inference with Ray Data: a pool of model actors answers ShopBench prompts.

Each actor loads the model once (plus a PEFT adapter, merged) and answers batches
greedily: vLLM with its LoRA support when vLLM is installed and the actor has a GPU,
Hugging Face `generate` otherwise. Rows carry their index, so the answers come back in
input order whatever order the actors finish in.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import ray

from ecomtrain.data.packing import Prompt, prompt_text
from ecomtrain.evaluate.answer import new_tokens_for, respond
from ecomtrain.model import adapter_config, is_routed, load_adapter, load_model, load_tokenizer
from ecomtrain.tasks import family_named, track_of

log = logging.getLogger(__name__)


class InferenceError(ValueError):
    """Generation settings or an adapter that cannot be used; the message says why."""


@dataclass
class Settings:
    model: str  # base model: local directory or hub id (already resolved)
    adapter: str = ""  # PEFT adapter directory; empty: the base model alone
    max_new_tokens: int = 100  # budget for non-multiple-choice tasks (multiple choice: 1)
    prompt: Prompt = Prompt()  # the ShopBench prefix; chat template or raw text
    actors: int = 2  # model replicas in the Ray Data actor pool
    num_cpus: float = 1.0  # CPUs reserved per actor (also its torch threads)
    num_gpus: float = 0.0  # GPUs per actor; > 0 runs on CUDA
    batch_size: int = 8  # prompts per actor call and per generate() call
    backend: str = "auto"  # "auto" (vLLM on a GPU when installed, else hf), "hf" or "vllm"
    progress: bool = True  # Ray Data progress bars on the driver


def _vllm_wanted(backend: str, adapter: str) -> bool:
    """Whether this actor should use vLLM (decided inside the actor, where its GPU is visible).
    A routed adapter (ecomtrain.experts) is no PEFT LoRA: vLLM cannot serve it."""
    import torch

    available = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()
    routed = bool(adapter) and is_routed(adapter)
    if backend == "vllm" and routed:
        raise InferenceError(
            f"{adapter}: a routed adapter (lora.shape) runs on backend 'hf' only; export a "
            "per-capability one as PEFT adapters (ecomtrain.export --adapter-only) for vLLM"
        )
    if backend == "vllm" and not available:
        raise InferenceError("backend 'vllm' needs `pip install vllm` and a GPU on each actor")
    return backend == "vllm" or (backend == "auto" and available and not routed)


class Responder:
    """Ray Data callable class: loads the model once per actor and answers batches of rows."""

    def __init__(self, settings: Settings):
        self.s = settings
        self.tokenizer = load_tokenizer(settings.model)
        self.llm = self.model = self.lora = None
        if _vllm_wanted(settings.backend, settings.adapter):
            self.llm, self.lora = _load_vllm(settings)
        else:
            self.model = _load_hf(settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [  # capability and task family route a routed adapter's records
            {"input": str(q), "task_type": str(t), "capability": str(c), "task_family": str(f)}
            for q, t, c, f in zip(
                batch["input"],
                batch["task_type"],
                batch["capability"],
                batch["task_family"],
                strict=True,
            )
        ]
        if self.llm is not None:
            texts = self._vllm_respond(rows)
        else:
            s = self.s
            texts = respond(
                self.model, self.tokenizer, rows, s.max_new_tokens, s.batch_size, s.prompt
            )
        return {"idx": batch["idx"], "response": np.array(texts, dtype=object)}

    def _vllm_respond(self, rows: list[dict]) -> list[str]:
        from vllm import SamplingParams

        budget = self.s.max_new_tokens
        prompts = [  # token ids, so vLLM adds no second BOS to the chat-formatted text
            {"prompt_token_ids": self.tokenizer(p, add_special_tokens=False)["input_ids"]}
            for p in (prompt_text(self.tokenizer, r["input"], self.s.prompt) for r in rows)
        ]
        params = [
            SamplingParams(temperature=0.0, max_tokens=new_tokens_for(r["task_type"], budget))
            for r in rows
        ]
        outs = self.llm.generate(prompts, params, lora_request=self.lora, use_tqdm=False)
        return [o.outputs[0].text for o in outs]


def _load_hf(s: Settings):
    """The base model (bf16 on CUDA, fp32 on CPU) with the adapter merged into it."""
    import torch

    cuda = s.num_gpus > 0 and torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(max(1, math.floor(s.num_cpus)))
    model = load_model(s.model, precision="bf16" if cuda else "fp32")
    if s.adapter:
        model = load_adapter(model, s.adapter)
    return model.to("cuda" if cuda else "cpu").eval()


def _load_vllm(s: Settings):
    """A vLLM engine and the LoRA request for the adapter (None without one). GPU only."""
    from vllm import LLM
    from vllm.lora.request import LoRARequest

    if not s.adapter:
        return LLM(model=s.model, seed=0), None
    rank = int(adapter_config(s.adapter).get("r", 8))
    max_rank = max(8, 2 ** math.ceil(math.log2(rank)))  # vLLM accepts powers of two from 8
    llm = LLM(model=s.model, enable_lora=True, max_lora_rank=max_rank, seed=0)
    return llm, LoRARequest("adapter", 1, s.adapter)


def gpus_per_actor(num_gpus: float | None) -> float:
    """`num_gpus`, or by default one GPU per actor when the cluster has GPUs, else none."""
    if num_gpus is not None:
        return num_gpus
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def check_resources(s: Settings) -> None:
    """Fail early when the actor pool cannot fit the cluster (Ray Data would wait forever)."""
    total = ray.cluster_resources()
    for name, each in (("CPU", s.num_cpus), ("GPU", s.num_gpus)):
        need, have = s.actors * each, total.get(name, 0.0)
        if need > have:
            raise InferenceError(
                f"{s.actors} actors x {each} {name} = {need} {name}s, but the Ray cluster has "
                f"{have:g}; lower --actors or --num-{name.lower()}s"
            )


def labels(record: dict) -> dict:
    """A record's capability and task family (what a routed adapter routes it by)."""
    name = str(record.get("task_name") or "")
    family = family_named(name)
    return {"capability": track_of(record), "task_family": family.name if family else name}


def generate_responses(records: list[dict], s: Settings) -> list[str]:
    """One greedy response per record (`input_field`, `task_type`), in record order."""
    if s.actors < 1 or s.batch_size < 1 or s.max_new_tokens < 1:
        raise InferenceError("actors, batch size and max new tokens must be >= 1")
    check_resources(s)
    items = [
        {"idx": i, "input": r["input_field"], "task_type": r["task_type"], **labels(r)}
        for i, r in enumerate(records)
    ]
    # Similar budgets and lengths share a batch: less padding; the index restores the order.
    items.sort(key=lambda x: (new_tokens_for(x["task_type"], 2), -len(x["input"])))
    ray.data.DataContext.get_current().enable_progress_bars = s.progress
    ds = ray.data.from_items(items).map_batches(
        Responder,
        fn_constructor_kwargs={"settings": s},
        compute=ray.data.ActorPoolStrategy(size=s.actors),
        batch_size=s.batch_size,
        num_cpus=s.num_cpus,
        num_gpus=s.num_gpus or None,
        udf_modifying_row_count=False,
    )
    out: list[str | None] = [None] * len(records)
    for row in ds.iter_rows():
        out[int(row["idx"])] = str(row["response"])
    missing = [i for i, r in enumerate(out) if r is None]
    if missing:
        raise RuntimeError(f"no response came back for records {missing[:10]}")
    return out


def timed_generate(records: list[dict], s: Settings) -> tuple[list[str], dict]:
    """Responses plus what the run cost: seconds and samples per second (actor start included)."""
    t0 = time.time()
    responses = generate_responses(records, s)
    seconds = time.time() - t0
    stats = {"records": len(records), "seconds": round(seconds, 3)}
    stats["samples_per_s"] = round(len(records) / seconds, 3) if seconds else None
    log.info(
        f"generated {len(records)} responses in {seconds:.1f} s "
        f"({stats['samples_per_s']} samples/s, {s.actors} actors)"
    )
    return responses, stats
