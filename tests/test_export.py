"""Export: the merged model's logits equal base + adapter."""

import pytest
import torch

from ecomtrain.base_model import resolve_model
from ecomtrain.config import LoraConfig, ModelConfig
from ecomtrain.export import main, merge
from ecomtrain.model import add_lora, load_model, load_tokenizer


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    path = resolve_model(ModelConfig())
    model = add_lora(load_model(path), LoraConfig(rank=4, target_modules=["all-linear"]))
    with torch.no_grad():  # a non-trivial update: lora_B starts at zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    load_tokenizer(path).save_pretrained(out)
    return out, model


def test_merged_logits_equal_base_plus_adapter(adapter, tmp_path):
    adapter_dir, peft_model = adapter
    merged_dir = merge(adapter_dir, tmp_path / "merged")
    assert (merged_dir / "model.safetensors").is_file()
    merged = load_model(str(merged_dir))  # a plain HF model: no PEFT needed
    ids = load_tokenizer(str(merged_dir))("Which color is the laptop?", return_tensors="pt")
    peft_model.eval()
    with torch.no_grad():
        want = peft_model(**ids).logits
        got = merged(**ids).logits
        base = load_model(str(resolve_model(ModelConfig())))(**ids).logits
    assert (got - want).abs().max() < 1e-3
    assert (want - base).abs().max() > 1e-3  # the adapter changed something


def test_adapter_loads_with_peft(adapter):
    from peft import PeftModel

    adapter_dir, _ = adapter
    model = PeftModel.from_pretrained(load_model(str(resolve_model(ModelConfig()))), adapter_dir)
    assert any("lora_A" in n for n, _ in model.named_parameters())


def test_cli_errors_on_a_non_adapter(tmp_path, capsys):
    assert main(["--adapter", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "no adapter_config.json or routed_adapter.json in or below it; not an adapter" in err


def test_adapter_only_export_ships_weights_and_a_model_card(adapter, tmp_path):
    """A checkpoint's adapter without its DeepSpeed state, with a card, loadable by PEFT."""
    import json
    import shutil

    from peft import PeftModel

    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(adapter[0], checkpoint)
    (checkpoint / "deepspeed").mkdir()
    (checkpoint / "deepspeed" / "optim_states.pt").write_bytes(b"x")
    (checkpoint / "rng_rank0.pt").write_bytes(b"x")
    trial = {"name": "ladder-2-r4", "tasks": ["query_ner", "review_rating"]}
    (checkpoint / "ecomtrain_trial.json").write_text(json.dumps(trial))
    scores = [{"id": f"f:{i}", "task": "query_ner", "track": "t", "score": i % 2} for i in range(4)]
    (checkpoint / "scores.jsonl").write_text("".join(json.dumps(s) + "\n" for s in scores))
    out = tmp_path / "shipped"
    assert main(["--adapter", str(checkpoint), "--out", str(out), "--adapter-only"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= names
    assert not names & {"deepspeed", "rng_rank0.pt", "scores.jsonl"}
    card = (out / "README.md").read_text()
    assert card.startswith("---\nbase_model: ") and "library_name: peft" in card
    assert "ladder-2-r4" in card and "query_ner, review_rating" in card
    assert "| query_ner | 4 | 0.5000 |" in card
    model = PeftModel.from_pretrained(load_model(str(resolve_model(ModelConfig()))), out)
    assert any("lora_A" in n for n, _ in model.named_parameters())


def test_the_best_adapter_from_a_bucket_leaves_the_deepspeed_state_there(adapter, tmp_path):
    """A sweep to a bucket builds `best-adapter/` from the best checkpoint's top files only."""
    import shutil

    from ecomtrain.files import download_files
    from ecomtrain.sweep import best_adapter

    checkpoint = tmp_path / "bucket" / "checkpoint_000003"
    shutil.copytree(adapter[0], checkpoint)
    (checkpoint / "deepspeed" / "global_step3").mkdir(parents=True)
    (checkpoint / "deepspeed" / "global_step3" / "optim_states.pt").write_bytes(b"x" * 1000)
    got = download_files(checkpoint.as_uri(), tmp_path / "fetched")
    assert {p.name for p in got.iterdir()} == {p.name for p in adapter[0].iterdir()}
    rows = [
        {"trial": "ladder-1-r4", "score": 0.4, "checkpoint": str(checkpoint), "error": ""},
        {"trial": "ladder-2-r4", "score": 0.6, "checkpoint": checkpoint.as_uri(), "error": ""},
    ]
    out = best_adapter(rows, tmp_path / "report")
    assert out == tmp_path / "report" / "best-adapter"
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= {
        p.name for p in out.iterdir()
    }
