"""LoRA experts: one adapter per capability (or task), or a token-routed mixture of LoRAs.

`lora.shape` lays the adapter's capacity out in one of three ways beside a single LoRA:

- `per-capability` / `per-task`: one LoRA expert per capability (task family) the trial
  trains on. Every token of a record goes through its own label's expert, in training and
  evaluation alike: a multi-task LoRA with task routing. A record whose label has no expert
  (a task from a capability the trial never saw) gets the experts' mean.
- `moe`: `lora.experts` LoRA experts mixed per token by a learned softmax router. Expert e's
  router logit is a learned read-out of its own down-projection, u_e . (A_e x), so the router
  costs `rank` weights per module. Dense routing: every expert sees every token.

With `lora.match_params` the experts split `rank` between them (`expert_ranks`: ranks that
differ by at most 1 and sum to `rank`, the first experts in route order the larger), so the
adapter has exactly the A and B matrices of one LoRA of rank `rank` (moe: plus its router);
a rank smaller than the number of experts cannot be split and is refused.

A wrapped linear layer computes base(x) + B diag(s g) A x, where A stacks the experts'
down-projections (r_e rows for expert e), B their up-projections, g repeats each expert's
gate over its rows and s its scaling: gates one-hot (or the mean) from the routes set on the
model before its forward pass (`set_routes`, `route_rows`), or the router's softmax. The
routes stay set until the next call, so activations recomputed in the backward pass
(gradient checkpointing) see the same. Expert e alone is a plain LoRA of rank r_e (scaling
alpha / r_e, or alpha / sqrt(r_e) with rsLoRA), initialised as PEFT does (A Kaiming-uniform,
B zero). Only this module's parameters train; DeepSpeed checkpoints them like any other.

On disk an adapter of these shapes is `routed_adapter.json` (shape, experts, rank `r`: one
number when the experts' ranks are equal, else one per expert; alpha, modules, routes, base
model) beside `routed_adapter.safetensors`; `peft_adapter` writes one
expert of a routed adapter as a standard PEFT LoRA (the per-capability export).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ecomtrain.config import peft_targets

ROUTED_CONFIG = "routed_adapter.json"  # what makes a folder a routed adapter
ROUTED_WEIGHTS = "routed_adapter.safetensors"
ROUTED_SHAPES = ("per-capability", "per-task", "moe")
ROUTE_KEYS = {"per-capability": "capability", "per-task": "task"}  # what a record is routed by
UNROUTED = -1  # a record whose label has no expert: the experts' mean


class ExpertsLinear(nn.Module):
    """A frozen linear layer plus one LoRA per expert (`ranks`: each one's rank; scaling
    alpha / rank, or alpha / sqrt(rank) with rsLoRA), mixed per token."""

    def __init__(
        self,
        base: nn.Linear,
        ranks: list[int],
        alpha: float,
        rslora: bool,
        dropout: float,
        router: bool,
    ):
        super().__init__()
        self.base, self.experts, self.ranks = base, len(ranks), list(ranks)
        self.alpha, self.rslora = alpha, rslora
        rows, dtype = sum(ranks), base.weight.dtype
        # each row's expert and its rank: integers, so no cast of the model's dtype rounds them
        owner = torch.repeat_interleave(torch.arange(len(ranks)), torch.tensor(ranks))
        self.register_buffer("owner", owner, persistent=False)
        self.register_buffer("row_rank", torch.tensor(ranks)[owner], persistent=False)
        self.lora_A = nn.Parameter(torch.empty(rows, base.in_features, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rows, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as PEFT initialises lora_A
        self.router = nn.Parameter(torch.zeros(rows, dtype=dtype)) if router else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.routes: torch.Tensor | None = None  # [batch, tokens or 1] expert of each token

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        h = F.linear(self.dropout(x).to(self.lora_A.dtype), self.lora_A)  # [..., rows]
        rank = self.row_rank.float()
        scale = self.alpha / (rank.sqrt() if self.rslora else rank)
        weight = self.gates(h).index_select(-1, self.owner) * scale  # each row's gate x scaling
        return out + F.linear(h * weight.to(h.dtype), self.lora_B).to(out.dtype)

    def gates(self, h: torch.Tensor) -> torch.Tensor:
        """[..., experts] weight of each expert for each token."""
        if self.router is not None:
            rows = (h * self.router).float()
            logits = rows.new_zeros(*rows.shape[:-1], self.experts).index_add(-1, self.owner, rows)
            return torch.softmax(logits, dim=-1)
        if self.routes is None:
            raise RuntimeError("routed LoRA: no routes set (ecomtrain.experts.set_routes)")
        routes = self.routes.to(h.device)
        one_hot = F.one_hot(routes.clamp(min=0), self.experts).float()
        mean = torch.full_like(one_hot, 1.0 / self.experts)
        return torch.where((routes == UNROUTED).unsqueeze(-1), mean, one_hot)


def expert_ranks(rank: int, experts: int, match_params: bool) -> list[int]:
    """Each expert's rank: `rank`, or under `match_params` its share of it (the shares differ
    by at most 1 and sum to `rank`); a rank that leaves an expert none is refused."""
    if not match_params:
        return [rank] * experts
    if rank < experts:
        raise ValueError(
            f"lora.match_params: rank {rank} cannot be split among {experts} experts (each "
            f"needs a rank of 1 or more): use ranks >= {experts}, fewer experts (tasks or "
            "capabilities), or lora.match_params: false"
        )
    share, extra = divmod(rank, experts)
    return [share + 1] * extra + [share] * (experts - extra)


def ranks_of(config: dict) -> list[int]:
    """Each expert's rank in a routed adapter's config (`r`: one for all, or one each)."""
    r = config["r"]
    return list(r) if isinstance(r, list) else [r] * config["experts"]


def spec(lora, routes: dict | None = None) -> dict:
    """What a routed adapter is (saved as its config): from `lora` (config.LoraConfig) and,
    for the label-routed shapes, `routes` ({"names": [expert labels]})."""
    if lora.shape not in ROUTED_SHAPES:
        raise ValueError(f"lora.shape {lora.shape!r} is not one of {ROUTED_SHAPES}")
    names = list((routes or {}).get("names", []))
    if lora.shape in ROUTE_KEYS and not names:
        raise ValueError(f"lora.shape {lora.shape}: the trial has no labels to route by")
    experts = len(names) if lora.shape in ROUTE_KEYS else lora.experts
    ranks = expert_ranks(lora.rank, experts, lora.match_params)
    return {
        "format": "ecomtrain-routed-lora",
        "shape": lora.shape,
        "experts": experts,
        "r": ranks[0] if len(set(ranks)) == 1 else ranks,
        "lora_alpha": lora.alpha,
        "use_rslora": lora.use_rslora,
        "lora_dropout": lora.dropout,
        "target_modules": list(lora.target_modules),
        "route_by": ROUTE_KEYS.get(lora.shape, "token"),
        "routes": names,
    }


def add_experts(model: nn.Module, config: dict) -> nn.Module:
    """`model` (in place) with its target linear layers wrapped in `ExpertsLinear`; every
    other parameter frozen. `config` as made by `spec`."""
    for p in model.parameters():
        p.requires_grad_(False)
    ranks = ranks_of(config)
    targets = config["target_modules"]
    head = model.get_output_embeddings()
    wrapped = 0
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear) or module is head:
            continue
        if targets != ["all-linear"] and not any(
            name == t or name.endswith("." + t) for t in targets
        ):  # PEFT's rule for a list of module names
            continue
        path, _, leaf = name.rpartition(".")
        parent = model.get_submodule(path)
        experts = ExpertsLinear(
            module,
            ranks,
            config["lora_alpha"],
            config["use_rslora"],
            config["lora_dropout"],
            router=config["shape"] == "moe",
        )
        setattr(parent, leaf, experts)
        wrapped += 1
    if not wrapped:
        raise ValueError(f"lora.target_modules {targets}: no linear layer of the model matches")
    model.ecomtrain_experts = config
    return model


def experts_of(model: nn.Module) -> list[ExpertsLinear]:
    return [m for m in model.modules() if isinstance(m, ExpertsLinear)]


def config_of(model: nn.Module) -> dict | None:
    """The routed adapter's config, if `model` carries one (a PEFT model or a base: None)."""
    return getattr(model, "ecomtrain_experts", None)


def set_routes(model: nn.Module, routes: torch.Tensor | None) -> None:
    """Route the next forward passes: `routes` [batch, tokens] (or [batch, 1], one per
    sequence) holds each token's expert, UNROUTED for the experts' mean."""
    for m in experts_of(model):
        m.routes = routes


def route_label(route_by: str, row: dict) -> str | None:
    """What a record (a held-out row or a record's fields) is routed by: its capability, or
    its task family (else task name)."""
    if route_by == "capability":
        return row.get("capability")
    return row.get("task_family") or row.get("task_name")


def route_index(config: dict, row: dict) -> int:
    """The expert of a record under `config`."""
    label = route_label(config["route_by"], row)
    return config["routes"].index(label) if label in config["routes"] else UNROUTED


def route_rows(model: nn.Module, rows: list[dict]) -> None:
    """Route each sequence of the next batch by its row's label (label-routed shapes only;
    a moe router and a plain LoRA need nothing)."""
    config = config_of(model)
    if config and config["route_by"] != "token":
        set_routes(model, torch.tensor([[route_index(config, r)] for r in rows]))


def adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The adapter's parameters by name: each wrapped layer's lora_A, lora_B and router."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, ExpertsLinear):
            out[f"{name}.lora_A"] = m.lora_A
            out[f"{name}.lora_B"] = m.lora_B
            if m.router is not None:
                out[f"{name}.router"] = m.router
    return out


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors by name, on the CPU (under ZeRO-3, call inside a gather)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in adapter_parameters(model).items()}


def save(model: nn.Module, path: str | Path) -> None:
    """The routed adapter's config and safetensors weights in `path`."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    base = model.config.name_or_path
    config = config_of(model) | {"base_model_name_or_path": base}
    (path / ROUTED_CONFIG).write_text(json.dumps(config, indent=1))
    save_file(weights(model), path / ROUTED_WEIGHTS)


def read_config(adapter: str | Path) -> dict:
    return json.loads((Path(adapter) / ROUTED_CONFIG).read_text(encoding="utf-8"))


def load(model: nn.Module, adapter: str | Path) -> nn.Module:
    """`model` with the routed adapter in `adapter` (every tensor must match)."""
    from safetensors.torch import load_file

    add_experts(model, read_config(adapter))
    stored = load_file(Path(adapter) / ROUTED_WEIGHTS)
    params = adapter_parameters(model)
    if set(stored) != set(params):
        missing = sorted(set(params) - set(stored))[:3]
        extra = sorted(set(stored) - set(params))[:3]
        raise ValueError(
            f"{Path(adapter) / ROUTED_WEIGHTS}: does not fit the model (missing {missing}, "
            f"unexpected {extra})"
        )
    with torch.no_grad():
        for name, tensor in stored.items():
            if name.endswith(".router") and tensor.numel() == params[name].numel():
                tensor = tensor.flatten()  # saved as [experts, rank] before uneven ranks
            if params[name].shape != tensor.shape:
                raise ValueError(
                    f"{Path(adapter) / ROUTED_WEIGHTS}: {name}: shape {tuple(tensor.shape)}, "
                    f"the model's is {tuple(params[name].shape)}"
                )
            params[name].copy_(tensor)
    return model


def peft_adapter(adapter: str | Path, route: str, out: Path) -> Path:
    """One expert of a label-routed adapter as a standard PEFT LoRA in `out` (it equals the
    routed model on every record routed to `route`)."""
    from peft import LoraConfig
    from peft.utils import SAFETENSORS_WEIGHTS_NAME
    from safetensors.torch import load_file, save_file

    config = read_config(adapter)
    if route not in config["routes"]:
        raise ValueError(f"{adapter}: no expert {route!r} (experts: {config['routes']})")
    e, ranks = config["routes"].index(route), ranks_of(config)
    start, r = sum(ranks[:e]), ranks[e]
    tensors = {}
    for name, tensor in load_file(Path(adapter) / ROUTED_WEIGHTS).items():
        module, _, kind = name.rpartition(".")
        peft_name = f"base_model.model.{module}.{kind}.weight"
        if kind == "lora_A":
            tensors[peft_name] = tensor[start : start + r].contiguous()
        elif kind == "lora_B":
            tensors[peft_name] = tensor[:, start : start + r].contiguous()
    out.mkdir(parents=True, exist_ok=True)
    LoraConfig(
        r=r,
        lora_alpha=config["lora_alpha"],
        target_modules=peft_targets(config["target_modules"]),
        use_rslora=config["use_rslora"],
        task_type="CAUSAL_LM",
        base_model_name_or_path=config["base_model_name_or_path"],
    ).save_pretrained(out)
    save_file(tensors, out / SAFETENSORS_WEIGHTS_NAME)
    return out
