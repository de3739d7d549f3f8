"""The tiny model, tokenisation with prompt masking, and the DeepSpeed config."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from ecomtrain.base_model import resolve_model
from ecomtrain.config import Config, LoraConfig, ModelConfig, TrainConfig
from ecomtrain.data.mixture import source_keys
from ecomtrain.data.packing import (
    IGNORE,
    PROMPT_PREFIX,
    Prompt,
    encode,
    prompt_text,
    tokenize_records,
)
from ecomtrain.data.scan import is_eval
from ecomtrain.data.share import Share
from ecomtrain.model import ModelError, add_lora, load_model, load_tokenizer
from ecomtrain.train.engine import deepspeed_config, schedule


@pytest.fixture(scope="module")
def tiny():
    path = resolve_model(ModelConfig())
    return path, load_tokenizer(path)


def test_tiny_model_is_cached_and_loads_like_any_local_model(tiny):
    path, tok = tiny
    assert resolve_model(ModelConfig()) == path  # second call: the cache
    model = load_model(path)
    assert model.config.model_type == "llama"
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    assert resolve_model(ModelConfig(name_or_path="/some/dir")) == "/some/dir"


def test_labels_cover_only_the_answer(tiny):
    _, tok = tiny
    ids, labels = encode(tok, "Which color is it?\n0. red\n1. blue\nAnswer:", "1", Prompt())
    assert len(ids) == len(labels)
    prompt = prompt_text(tok, "Which color is it?\n0. red\n1. blue\nAnswer:", Prompt())
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    answer = tok.decode([t for t in labels if t != IGNORE])
    assert answer.startswith("1<|im_end|>")
    assert tok.decode(ids).startswith(prompt)


def test_raw_prompts_are_plain_text_for_base_models(tiny):
    """model.prompt_format=raw: BOS, the ShopBench prefix and the question as plain text,
    the answer and EOS after it; no chat template needed (a base model has none)."""
    path, tok = tiny
    question = "Which color is it?\n0. red\n1. blue\nAnswer: "
    raw = Prompt(raw=True)
    assert prompt_text(tok, question, raw) == (tok.bos_token or "") + PROMPT_PREFIX + question
    ids, labels = encode(tok, question, "1", raw)
    n_prompt = labels.count(IGNORE)
    assert tok.decode(ids[:n_prompt]) == prompt_text(tok, question, raw)
    assert tok.decode(ids[n_prompt:]) == "1" + tok.eos_token
    base = load_tokenizer(path)
    base.chat_template = None
    assert encode(base, question, "1", raw) == (ids, labels)
    with pytest.raises(ModelError, match="no chat template.*prompt_format=raw"):
        prompt_text(base, question, Prompt())


def test_tokenize_records_flags_truncation(tiny):
    path, _ = tiny
    batch = {
        "input": ["short question?", "word " * 400],
        "answer": ["0", "yes"],
        "task_family": ["review_rating", "review_rating"],
        "source": ["a:1", "a:2"],
    }
    out = tokenize_records(batch, path, max_len=64, prompt=Prompt(prefix=False)).to_pydict()
    assert [len(x) for x in out["ids"]][1] == 64  # the long one is cut to fit
    assert out["truncated"] == [False, True]
    assert out["key"] == source_keys(["a:1", "a:2"]).tolist()  # the mixture's keys
    assert all(0 < n < len(x) for n, x in zip(out["n_prompt"], out["ids"], strict=True))


def test_a_share_reads_the_token_column_as_it_was_written(tiny):
    """A rank takes the ids from the Arrow list column's flat values: the same share as from
    per-record lists, also from a table of several chunks cut mid-way (as Ray Data's
    batches are), and the same share when it is joined from parts of it, an empty one too."""
    path, _ = tiny
    batch = {
        "input": [f"question {i}?" * (i + 1) for i in range(6)],
        "answer": [str(i) for i in range(6)],
        "task_family": ["review_rating", "query_ner"] * 3,
        "source": [f"a:{i}" for i in range(6)],
    }
    table = tokenize_records(batch, path, max_len=64, prompt=Prompt(prefix=False))
    table = pa.concat_tables([table.slice(0, 2), table.slice(2)])
    for t in (table, table.slice(1, 4)):
        rows = t.to_pydict()
        want = Share.of(rows["ids"], rows["n_prompt"], rows["task_family"], rows["key"])
        got = Share.of_table(t, [])
        assert len(got) == len(t)
        assert_same_share(got, want)
    tasks: list[str] = []
    parts = [Share.of_table(table.slice(a, b - a), tasks) for a, b in [(0, 1), (1, 1), (1, 6)]]
    joined = Share.concat(parts)
    rows = table.to_pydict()
    want = Share.of(rows["ids"], rows["n_prompt"], rows["task_family"], rows["key"])
    assert parts == []  # each part freed once it is copied
    assert_same_share(joined, want)


def assert_same_share(got: Share, want: Share) -> None:
    assert got.tasks == want.tasks
    for name in ("tokens", "offsets", "n_prompt", "task", "key"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
        assert getattr(got, name).dtype == getattr(want, name).dtype


def test_eval_split_is_stable_and_ignores_case_and_spacing():
    picks = [is_eval(f"record {i}", 0.2) for i in range(2000)]
    assert 0.17 < sum(picks) / len(picks) < 0.23
    assert picks == [is_eval(f"record {i}", 0.2) for i in range(2000)]
    assert [is_eval(f"Record  {i}!", 0.2) for i in range(2000)] == picks


def test_lora_trains_only_the_adapter(tiny):
    path, _ = tiny
    model = add_lora(load_model(path), LoraConfig(rank=4, target_modules=["q_proj", "v_proj"]))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_deepspeed_config_and_schedule():
    cfg = TrainConfig(micro_batch_size=4, grad_accum=2, zero_stage=3, max_steps=10, warmup_steps=2)
    ds = deepspeed_config(cfg)
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_accumulation_steps"] == 2
    assert ds["zero_optimization"]["stage"] == 3
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    lr = schedule(optimizer, TrainConfig(warmup_steps=2, max_steps=10))
    lrs = []
    for _ in range(11):
        lrs.append(lr.get_last_lr()[0])
        optimizer.step()
        lr.step()
    assert lrs[:3] == [0.0, 0.5, 1.0]  # linear warmup (transformers' convention)
    assert lrs[-1] == pytest.approx(0.1) and all(
        a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False)
    )
    assert torch.isfinite(torch.tensor(lrs)).all()
    assert Config().train.zero_stage == 2
