"""Random-initialised Llama-architecture models of real shapes, and the share of their
FLOPs in the vocabulary projection (throughput, ablation, raytax, mfu)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

from ecomtrain.base_model import resolve_model
from ecomtrain.config import Config
from ecomtrain.files import atomic_dir, cache_dir
from ecomtrain.model import load_tokenizer

SHAPES = {  # random-initialised Llama-architecture models of real shapes (mfu, throughput)
    "1b": {  # Llama-3.2-1B
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
    },
    "smol135m": {  # SmolLM2-135M
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
    },
    "qwen0.5b": {  # Qwen2.5-0.5B
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
    },
    "7b": {  # Qwen2.5-7B
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
    },
}


def shape_model(cfg: Config, shape: str) -> str:
    """The configured model ("tiny"), or a random-initialised Llama of a real model's shape
    (SHAPES) with the offline tokenizer, saved once: the head/body split of its FLOPs is the
    real model's, so a ratio measured on it holds at that size."""
    tiny = resolve_model(cfg.model)
    if shape == "tiny":
        return tiny

    def build(out: Path) -> None:
        tokenizer = load_tokenizer(tiny)
        tokenizer.save_pretrained(out)
        torch.manual_seed(0)
        config = LlamaConfig(
            **SHAPES[shape],
            max_position_embeddings=max(cfg.data.max_seq_len, 1024),
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=None,
        )
        LlamaForCausalLM(config).save_pretrained(out)

    return str(atomic_dir(cache_dir() / "models" / f"shape-{shape}", build))


def head_share(model_path: str) -> float:
    """The vocabulary projection's share of a token's forward matmul FLOPs, attention aside
    (what computing logits at answer tokens only saves, at most)."""
    config = AutoConfig.from_pretrained(model_path)
    head = config.hidden_size * config.vocab_size
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = h * config.num_key_value_heads // config.num_attention_heads
    body = layers * (2 * h * h + 2 * h * kv + 3 * h * i)
    return head / (head + body)
