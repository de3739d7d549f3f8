"""Routed LoRA shapes (ecomtrain.experts): parameter matching, routing, packed routes, save,
load and export. Ray-free; training, resuming and evaluating them under DeepSpeed is in
tests/test_train_fault.py."""

import json

import pytest
import torch

from ecomtrain import experts
from ecomtrain.base_model import resolve_model
from ecomtrain.config import ConfigError, LoraConfig, ModelConfig, load_config
from ecomtrain.export import export
from ecomtrain.model import (
    add_lora,
    base_model_of,
    find_adapter,
    load_adapter,
    load_model,
    load_tokenizer,
    save_adapter,
    training_model,
)
from ecomtrain.tasks import CAPABILITIES
from ecomtrain.train.inputs import model_inputs

ROUTES = {"names": [CAPABILITIES[0], CAPABILITIES[3]]}


@pytest.fixture(scope="module")
def tiny():
    return resolve_model(ModelConfig())


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def routed(tiny, shape: str, seed: int = 0, **lora):
    """A routed model with random (non-zero) up-projections and router."""
    torch.manual_seed(seed)
    cfg = LoraConfig(shape=shape, target_modules=["all-linear"], **lora)
    model = training_model(load_model(tiny), cfg, False, ROUTES)
    with torch.no_grad():
        for m in experts.experts_of(model):
            m.lora_B.normal_(0, 0.2)
            if m.router is not None:
                m.router.normal_(0, 1.0)
    return model.eval()


def modules(model) -> int:
    return len(experts.experts_of(model))


@pytest.mark.parametrize("rank, n", [(8, 4), (16, 4), (4, 3), (10, 4)])
def test_matched_moe_has_the_parameters_of_one_lora_and_a_router(tiny, rank, n):
    """Exactly one LoRA of the rank plus the router's `rank` weights per module, whether or
    not the experts divide the rank."""
    single = trainable(add_lora(load_model(tiny), LoraConfig(rank=rank)))
    cfg = LoraConfig(rank=rank, shape="moe", experts=n, match_params=True)
    moe = training_model(load_model(tiny), cfg, False)
    assert trainable(moe) == single + rank * modules(moe)
    unmatched = LoraConfig(rank=rank, shape="moe", experts=n)
    assert trainable(training_model(load_model(tiny), unmatched, False)) > n * single


# (rank, experts): per-capability at ladder-3 rank 4 (it lost a quarter of its parameters
# to rank // experts), every capability at ranks that divide and that do not
@pytest.mark.parametrize("rank, n", [(4, 3), (8, 2), (8, 3), (16, 4), (4, 4)])
def test_matched_routed_experts_have_exactly_the_parameters_of_one_lora(tiny, rank, n):
    single = trainable(
        add_lora(load_model(tiny), LoraConfig(rank=rank, target_modules=["all-linear"]))
    )
    routes = {"names": list(CAPABILITIES[:n])}
    lora = LoraConfig(rank=rank, shape="per-capability", target_modules=["all-linear"])
    assert trainable(training_model(load_model(tiny), lora, False, routes)) == n * single
    matched = LoraConfig(
        rank=rank, shape="per-capability", match_params=True, target_modules=["all-linear"]
    )
    model = training_model(load_model(tiny), matched, False, routes)
    assert trainable(model) == single
    ranks = experts.config_of(model)["r"]
    assert sum(ranks) == rank if isinstance(ranks, list) else ranks * n == rank


def test_a_rank_too_small_to_split_is_refused_before_training():
    """Per-task with the shopping world's 12 families at rank 8 had rank-1 experts, 50 %
    more parameters than one rank-8 LoRA: refused, naming the way out (moe: when the
    config loads; the routed shapes, whose experts follow the trial's tasks, before any
    worker starts)."""
    from ecomtrain.data.pipeline import route_table
    from ecomtrain.data.scan import corpus_scan

    assert experts.expert_ranks(4, 3, True) == [2, 1, 1]
    assert experts.expert_ranks(8, 12, False) == [8] * 12
    with pytest.raises(ValueError, match=r"rank 8 cannot be split among 12 experts.*>= 12"):
        experts.expert_ranks(8, 12, True)
    tasks = ["query_ner", "review_rating", "numeric_reasoning"]
    scan = corpus_scan(load_config().data, use_ray=False)
    cfg = load_config(None, ["lora.shape=per-task", "lora.match_params=true", "lora.rank=2"])
    with pytest.raises(ValueError, match="rank 2 cannot be split among 3 experts"):
        route_table(cfg, tasks, scan)
    with pytest.raises(ConfigError, match=r"lora\.rank: 2 cannot be split among lora.experts=4"):
        load_config(None, ["lora.shape=moe", "lora.match_params=true", "lora.rank=2"])


def test_per_capability_experts_are_one_lora_each(tiny):
    single = trainable(add_lora(load_model(tiny), LoraConfig(rank=8)))
    cfg = LoraConfig(rank=8, shape="per-capability")
    assert trainable(training_model(load_model(tiny), cfg, False, ROUTES)) == 2 * single
    matched = LoraConfig(rank=8, shape="per-capability", match_params=True)
    assert trainable(training_model(load_model(tiny), matched, False, ROUTES)) == single


def test_a_routed_token_trains_its_own_expert_only(tiny):
    model = training_model(
        load_model(tiny), LoraConfig(rank=4, shape="per-capability"), False, ROUTES
    )
    model.train()
    ids = torch.tensor([[5, 6, 7, 8]])
    experts.set_routes(model, torch.tensor([[1, 1, 1, 1]]))
    with torch.no_grad():  # B is zero at start: give A a gradient
        for m in experts.experts_of(model):
            m.lora_B.normal_(0, 0.1)
    loss = model(input_ids=ids).logits.square().mean()
    loss.backward()
    for m in experts.experts_of(model):
        assert m.lora_A.grad[:4].abs().sum() == 0  # expert 0 saw no token
        assert m.lora_A.grad[4:].abs().sum() > 0
        assert m.lora_B.grad[:, :4].abs().sum() == 0


def test_an_unrouted_record_gets_the_mean_of_the_experts():
    torch.manual_seed(0)
    layer = experts.ExpertsLinear(torch.nn.Linear(6, 5), [2, 1, 2], 1.0, False, 0.0, False)
    torch.nn.init.normal_(layer.lora_B)
    x = torch.randn(1, 4, 6)
    outputs = []
    for e in range(3):
        layer.routes = torch.full((1, 1), e)
        outputs.append(layer(x))
    layer.routes = torch.full((1, 1), experts.UNROUTED)
    assert torch.allclose(layer(x), torch.stack(outputs).mean(0), atol=1e-6)
    layer.routes = None
    with pytest.raises(RuntimeError, match="no routes set"):
        layer(x)


def test_packed_routes_follow_each_records_tokens():
    # two rows: records of 3 and 2 tokens, then one of 4 (0 = padding)
    seg = torch.tensor([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 0, 0]])
    batch = {"input_ids": torch.arange(12).reshape(2, 6), "labels": torch.ones(2, 6).long()}
    out = model_inputs(batch | {"segment_ids": seg}, record_routes=torch.tensor([0, 1, -1]))
    assert out["routes"].tolist() == [[0, 0, 0, 1, 1, -1, -1, -1, -1]]
    assert "routes" not in model_inputs(batch | {"segment_ids": seg})


@pytest.mark.parametrize("shape", ["per-capability", "moe"])
def test_saved_adapter_loads_to_the_same_model(tiny, tmp_path, shape):
    model = routed(tiny, shape)
    save_adapter(model, tmp_path / "a")
    assert find_adapter(tmp_path / "a") == tmp_path / "a"
    assert base_model_of(tmp_path / "a") == tiny
    loaded = load_adapter(load_model(tiny), tmp_path / "a")
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    rows = [{"capability": CAPABILITIES[3], "task_family": "x"}]
    for m in (model, loaded):
        experts.route_rows(m, rows)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, loaded(input_ids=ids).logits)
        base = load_model(tiny)(input_ids=ids).logits
        assert not torch.allclose(base, loaded(input_ids=ids).logits)


@pytest.mark.parametrize("routes", [ROUTES, {"names": list(CAPABILITIES[:3])}])
def test_per_capability_export_is_one_merged_model_per_expert(tiny, tmp_path, routes):
    """Each expert exported alone (ranks 4 and 4, or uneven 3, 3 and 2 of a matched rank 8)
    is the routed model on its own records."""
    torch.manual_seed(0)
    lora = LoraConfig(shape="per-capability", target_modules=["all-linear"], match_params=True)
    model = training_model(load_model(tiny), lora, False, routes).eval()
    with torch.no_grad():
        for m in experts.experts_of(model):
            m.lora_B.normal_(0, 0.2)
    save_adapter(model, tmp_path / "a")
    load_tokenizer(tiny).save_pretrained(tmp_path / "a")
    lines = export(tmp_path / "a", tmp_path / "out", None, only_adapter=False)
    assert len(lines) == len(routes["names"])
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    for e, name in enumerate(routes["names"]):
        merged = load_model(str(tmp_path / "out" / name))
        experts.set_routes(model, torch.tensor([[e]]))
        with torch.no_grad():
            gap = (merged(input_ids=ids).logits - model(input_ids=ids).logits).abs().max()
        assert gap < 1e-5, (name, float(gap))
    export(tmp_path / "a", tmp_path / "peft", None, only_adapter=True)
    card = (tmp_path / "peft" / routes["names"][1] / "README.md").read_text()
    assert "library_name: peft" in card


def test_moe_exports_its_adapter(tiny, tmp_path):
    save_adapter(routed(tiny, "moe"), tmp_path / "a")
    lines = export(tmp_path / "a", tmp_path / "out", None, only_adapter=False)
    assert "cannot be merged" in lines[0]
    config = json.loads((tmp_path / "out" / experts.ROUTED_CONFIG).read_text())
    assert config["shape"] == "moe" and (tmp_path / "out" / experts.ROUTED_WEIGHTS).is_file()
    assert "learned router" in (tmp_path / "out" / "README.md").read_text()


def test_a_moe_adapter_saved_with_its_router_per_expert_still_loads(tiny, tmp_path):
    """Adapters saved before uneven ranks kept the router as [experts, rank]."""
    from safetensors.torch import load_file, save_file

    model = routed(tiny, "moe")
    save_adapter(model, tmp_path / "a")
    weights = tmp_path / "a" / experts.ROUTED_WEIGHTS
    old = {
        k: v.reshape(4, -1) if k.endswith(".router") else v for k, v in load_file(weights).items()
    }
    save_file(old, weights)
    loaded = load_adapter(load_model(tiny), tmp_path / "a")
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, loaded(input_ids=ids).logits)


def test_a_mismatched_routed_adapter_is_named(tiny, tmp_path):
    save_adapter(routed(tiny, "moe"), tmp_path / "a")
    config = json.loads((tmp_path / "a" / experts.ROUTED_CONFIG).read_text())
    (tmp_path / "a" / experts.ROUTED_CONFIG).write_text(json.dumps(config | {"r": 3}))
    with pytest.raises(ValueError, match=r"routed_adapter.safetensors: .*lora_A: shape"):
        load_adapter(load_model(tiny), tmp_path / "a")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["lora.shape=mixture"], r"lora.shape: 'mixture' is not one of"),
        (["lora.shape=moe", "lora.experts=1"], r"lora.experts: 1 must be >= 2"),
        (["lora.shape=per-task", "lora.use_dora=true"], r"lora.use_dora: DoRA is for"),
        (["sweep.params={lora.shape: [single, moe]}", "lora.use_dora=true"], r"use_dora"),
    ],
)
def test_bad_shape_settings_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_the_evaluation_pool_answers_each_record_with_its_capabilitys_expert(tiny, tmp_path):
    """`evaluate run --adapter` on a per-capability adapter: each record answered as the
    merged model of its own capability answers it (records of two capabilities)."""
    import numpy as np

    from ecomtrain.data.demo import demo_records
    from ecomtrain.data.packing import Prompt
    from ecomtrain.evaluate.answer import respond
    from ecomtrain.evaluate.pool import Responder, Settings, labels

    save_adapter(routed(tiny, "per-capability"), tmp_path / "a")
    export(tmp_path / "a", tmp_path / "merged", None, only_adapter=False)
    records = [r for r in demo_records(per_task=4) if labels(r)["capability"] in ROUTES["names"]]
    records = records[::3][:8]
    assert {labels(r)["capability"] for r in records} == set(ROUTES["names"])
    batch = {
        "idx": np.arange(len(records)),
        "input": np.array([r["input_field"] for r in records]),
        "task_type": np.array([r["task_type"] for r in records]),
    } | {k: np.array([labels(r)[k] for r in records]) for k in ("capability", "task_family")}
    settings = Settings(model=tiny, adapter=str(tmp_path / "a"), max_new_tokens=6, backend="hf")
    got = list(Responder(settings)(batch)["response"])
    tok = load_tokenizer(tiny)
    expected = []
    for r in records:
        merged = load_model(str(tmp_path / "merged" / labels(r)["capability"]))
        row = {"input": r["input_field"], "task_type": r["task_type"]}
        expected += respond(merged, tok, [row], 6, 1, Prompt())
    assert got == expected
    base = Responder(Settings(model=tiny, max_new_tokens=6, backend="hf"))(batch)
    assert list(base["response"]) != got  # the experts change the answers


def test_the_route_table_has_an_expert_per_trained_capability():
    from ecomtrain.data.pipeline import route_table
    from ecomtrain.data.scan import corpus_scan

    tasks = ["query_ner", "review_rating"]
    scan = corpus_scan(load_config().data, use_ray=False)
    table = route_table(load_config(None, ["lora.shape=per-capability"]), tasks, scan)
    assert table["names"] == [CAPABILITIES[0], CAPABILITIES[2]]
    assert table["of_family"]["query_ner"] == table["of_family"]["attribute_inference_mcq"] == 0
    assert table["of_family"]["review_rating"] == 1
    assert "numeric_reasoning" not in table["of_family"]  # its capability has no expert
    per_task = route_table(load_config(None, ["lora.shape=per-task"]), tasks, scan)
    assert per_task["names"] == tasks and "attribute_inference_mcq" not in per_task["of_family"]
    assert route_table(load_config(None, ["lora.shape=moe"]), tasks, scan) is None


@pytest.mark.parametrize("shape", ["single", "per-capability", "per-task", "moe"])
def test_every_shape_reports_its_trainable_parameters_to_trials_csv(tiny, tmp_path, shape):
    """What a trial reports (train/loop.py counts with model.trainable_count) is one rank-4
    LoRA's parameters for every matched shape (moe: plus its router), and reaches trials.csv."""
    from types import SimpleNamespace

    from ecomtrain.model import trainable_count
    from ecomtrain.report.trials import load_trials, trial_rows, write_csv

    lora = LoraConfig(rank=4, shape=shape, match_params=True)
    routes = {"names": list(CAPABILITIES[:3])} if shape.startswith("per-") else None
    model = training_model(load_model(tiny), lora, False, routes)
    count = trainable_count(model)
    single = trainable(add_lora(load_model(tiny), LoraConfig(rank=4)))
    assert count == single + (4 * modules(model) if shape == "moe" else 0)
    result = SimpleNamespace(
        config={"subset": {"id": "s", "tasks": ["query_ner"]}, "rank": 4, "lora.shape": shape},
        metrics={"score": 0.5, "trainable_params": count},
        path=f"/x/s-r4-{shape}",
        error=None,
    )
    write_csv(trial_rows([result]), tmp_path / "trials.csv")
    (row,) = load_trials(tmp_path / "trials.csv")
    assert row["trainable_params"] == count and row["lora.shape"] == shape
