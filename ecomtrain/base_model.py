"""The offline tiny model, and where a configured model name points.

`resolve_model("tiny-llama")` builds a 2-layer Llama with a byte-level BPE tokenizer
and a ChatML chat template, trained on the built-in corpora (demo and shopping world), and
caches it on disk. From
then on it is an ordinary local directory: the same `from_pretrained` path a hub id
or a user's checkpoint takes. It reads no record a sweep can hold out (`pretraining_records`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ecomtrain import console
from ecomtrain.config import ModelConfig
from ecomtrain.data.corpus import BUILTIN_EVAL_FRACTION_MAX
from ecomtrain.data.demo import demo_records
from ecomtrain.data.records import fingerprint, render_answer
from ecomtrain.data.scan import is_eval
from ecomtrain.data.world import world_records
from ecomtrain.files import atomic_dir, cache_dir

log = logging.getLogger(__name__)

TINY_MODELS = {"tiny-llama": "tiny-llama-v2"}  # bump the version when the architecture changes
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def resolve_model(cfg: ModelConfig) -> str:
    """A path or hub id for `from_pretrained`; tiny models are built on first use."""
    if cfg.name_or_path not in TINY_MODELS:
        return cfg.name_or_path
    root = Path(cfg.cache_dir) if cfg.cache_dir else cache_dir() / "models"
    target = root / f"{TINY_MODELS[cfg.name_or_path]}-{fingerprint(pretraining_records())}"
    return str(atomic_dir(target, build_tiny_llama))


def pretraining_records() -> list[dict]:
    """The records the tiny model reads: those of the built-in demo corpus and shopping world
    (default size and seed; not the world's effect families, which choose their own split)
    that no split can hold out: none with a split of its own, none whose input hashes into
    the held-out share of any data.eval_fraction up to BUILTIN_EVAL_FRACTION_MAX. Equal inputs
    land on the same side in any size or seed of these corpora, so a sweep on any of them
    scores no question the base has read."""
    return [
        r
        for r in demo_records() + world_records()
        if "split" not in r and not is_eval(r["input_field"], BUILTIN_EVAL_FRACTION_MAX)
    ]


def build_tiny_llama(out: Path, vocab_size: int = 2048, seed: int = 0) -> None:
    """Train a byte-level BPE tokenizer on the records of `pretraining_records` and save a
    tiny Llama that has read their questions (see `pretrain`)."""
    log.info("tiny-llama: building the offline model in %s (first use only)", out)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    records = pretraining_records()
    texts = [t for r in records for t in (r["input_field"], render_answer(r))]
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        chat_template=CHATML,
    )
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    loss = pretrain(model, fast, [r["input_field"] for r in records], seed)
    model.save_pretrained(out)
    if not (out / "config.json").is_file():  # transformers saves on distributed rank 0 only
        raise RuntimeError(
            f"tiny-llama: saving to {out} wrote no model (a torch.distributed rank other than "
            "0 saves nothing); build it before the process group starts"
        )
    meta = {"built_by": "ecomtrain", "seed": seed, "pretrain_loss": round(loss, 4)}
    (out / "ecomtrain.json").write_text(json.dumps(meta))


def pretrain(model, tokenizer, texts: list[str], seed: int, steps: int = 300) -> float:
    """Language-model the built-in *questions* (never the answers) so the base knows the words.

    A random base gives LoRA nothing to adapt; a base that has read training inputs but never
    the answers, nor any held-out record, leaves the tasks themselves to the fine-tuning being
    compared.
    """
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in console.bar(range(steps), desc="tiny-llama: pretraining on the questions"):
        idx = torch.randint(len(texts), (16,), generator=gen).tolist()
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(**enc, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    return float(loss.detach())
