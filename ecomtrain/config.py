"""Typed configuration: dataclasses loaded from YAML, with `a.b=c` overrides.

Every key is declared once, with its rules beside it: its type (a `Literal` where it takes
one of a few values), its range (`rule(...)` in the field's metadata), and its doc (the
string under the field), which `ecomtrain config --explain KEY` prints. A section checks its
own fields when it is made (`Section.__post_init__`) and when a whole config is checked
(`check_values`, which adds the rules that span sections). Unknown keys, wrong types and
values out of range are errors that name the key path and the file they came from.
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import functools
import inspect
import math
import re
import sys
import textwrap
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from ecomtrain.tasks import CAPABILITIES, FAMILIES, LABELS, METRICS_BY_TYPE

# data.corpus names that are not files ("demo:N", "world:N@SEED" too): data.sources.BUILTIN
BUILTIN_CORPORA = ("demo", "world", "world-synthetic", "world-effects", "ood")
PROVENANCES = ("curated", "synthetic")  # where a record comes from (data.provenance)
PromptFormat = Literal["chat", "raw"]
PROMPT_FORMATS = typing.get_args(PromptFormat)  # model.prompt_format
SourceFormat = Literal["jsonl", "json", "csv", "parquet"]
SOURCE_FORMATS = typing.get_args(SourceFormat)  # data.sources[].format
Provenance = Literal["curated", "synthetic", "both"]
# What a sweep can rank trials on (sweep.metric).
METRICS = ["score", "extra/score"] + [
    f"{prefix}track/{c}" for prefix in ("", "extra/") for c in CAPABILITIES
]
MAX_RANK = 8192  # no model's width is larger, so no LoRA rank can be
MAX_STEPS = 10**9

# The shipped configs: package data of an installed wheel (ecomtrain/configs), else the
# repository's configs/ beside the package (a source checkout or an editable install).
_HERE = Path(__file__).resolve().parent
CONFIGS = _HERE / "configs" if (_HERE / "configs").is_dir() else _HERE.parent / "configs"
DEFAULT_CONFIG = CONFIGS / "demo.yaml"
CONFIG_FILE = "config.yaml"  # a sweep's resolved config in its output (what --resume reads)
# the help of a command's `a.b=c` arguments
OVERRIDES_HELP = (
    "a.b=c config overrides (values read as YAML); `ecomtrain config --explain [KEY]` says "
    "what each key means: its type, default, range and doc"
)


class ConfigError(ValueError):
    """A config value that cannot be used; the message names file and key path."""


# --- the rules beside the fields ---------------------------------------------------------------


def rule(
    default=dataclasses.MISSING,
    *,
    factory=dataclasses.MISSING,
    ge=None,
    gt=None,
    le=None,
    lt=None,
    choices: tuple | list | None = None,
    nonempty: bool = False,
):
    """A field with its range: bounds on the value (on every item of a list, every value of
    a mapping), the values it may take, or that a list may not be empty. Every float must be
    finite as well, with or without a rule."""
    bounds = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "nonempty": nonempty}
    meta = {"rule": {k: v for k, v in bounds.items() if v is not None and v is not False}}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


_BOUNDS = {
    "ge": (lambda v, b: v >= b, ">="),
    "gt": (lambda v, b: v > b, ">"),
    "le": (lambda v, b: v <= b, "<="),
    "lt": (lambda v, b: v < b, "<"),
}


def _problem(value, bounds: dict) -> str | None:
    """What is wrong with one value (a scalar, a list's item, a mapping's value), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} must be a finite number"
    if "choices" in bounds and value not in bounds["choices"]:
        return f"{value!r} is not one of {tuple(bounds['choices'])}"
    broken = [
        name
        for name, (ok, _) in _BOUNDS.items()
        if name in bounds and isinstance(value, (int, float)) and not ok(value, bounds[name])
    ]
    return f"{value!r} must be {_range(bounds)}" if broken else None


def _range(bounds: dict) -> str:
    """A rule's bounds in words: ">= 1", or "in [0, 1)" when it has both ends."""
    low = next((k for k in ("ge", "gt") if k in bounds), None)
    high = next((k for k in ("le", "lt") if k in bounds), None)
    if low and high:
        left, right = "[("[low == "gt"], "])"[high == "lt"]
        return f"in {left}{bounds[low]}, {bounds[high]}{right}"
    one = low or high
    return f"{_BOUNDS[one][1]} {bounds[one]}"


def _field_problem(f: dataclasses.Field, value, hint) -> str | None:
    """What is wrong with a field's value under its type's choices and its rule (the key of
    the item at fault first, for a list or a mapping), or None."""
    if typing.get_origin(hint) is Literal and not _in_literal(value, hint):
        return f"{f.name}: {value!r} is not one of {typing.get_args(hint)}"
    bounds = f.metadata.get("rule", {})
    if bounds.get("nonempty") and not value:
        return f"{f.name}: {value!r} must not be empty"
    if isinstance(value, dict):
        items = [(f"{f.name}.{k}", v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(f"{f.name}[{i}]", v) for i, v in enumerate(value)]
    else:
        items = [(f.name, value)]
    for key, item in items:
        if problem := _problem(item, bounds):
            return f"{key}: {problem}"
    return None


def _in_literal(value, hint) -> bool:
    """`value` is one of a Literal's values, and of its type (True is not 1)."""
    return any(value == a and type(value) is type(a) for a in typing.get_args(hint))


@dataclass
class Section:
    """A section of the config: its fields checked when it is made and by `check`."""

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Every field against its type's choices and its rule, then the section's own
        rules across its fields (`check_section`); ConfigError names the field."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            if problem := _field_problem(f, getattr(self, f.name), hints[f.name]):
                raise ConfigError(problem)
        self.check_section()

    def check_section(self) -> None:
        """Rules across this section's fields (none by default)."""


# --- the schema --------------------------------------------------------------------------------


@dataclass
class ModelConfig(Section):
    name_or_path: str = "tiny-llama"
    """"tiny-llama" builds (once, cached) an offline 2-layer Llama with its own tokenizer;
    anything else is a hub id or a local directory passed to `from_pretrained`."""
    cache_dir: str = ""
    """Where built tiny models are cached; empty means ~/.cache/ecomtrain (or
    $ECOMTRAIN_CACHE)."""
    attn_implementation: Literal["sdpa", "flash_attention_2"] = "sdpa"
    """Attention kernel: "sdpa" (CPU/GPU; packed training batches records of similar length)
    or "flash_attention_2" (GPU, needs flash-attn; varlen over the packed row)."""
    prompt_format: PromptFormat = "chat"
    """"chat": prompts through the tokenizer's chat template (instruct models); "raw": the
    ShopBench prefix and question as plain text, the answer and EOS after it (base models;
    the Shopping MMLU scripts' own protocol)."""
    quantization: Literal["none", "nf4"] = "none"
    """"nf4": the base loaded in 4 bits (bitsandbytes NormalFloat4, double-quantised; matmuls
    in train.precision) with the LoRA on top, as in QLoRA; "none": the base in
    train.precision. A trial's own evaluation answers with the 4-bit model; `evaluate` and
    `export` load the base unquantised."""


@dataclass
class LoraConfig(Section):
    rank: int = rule(8, ge=1, le=MAX_RANK)
    """LoRA rank r: the adapter's capacity."""
    alpha: float = rule(16.0, gt=0)
    """Scaling numerator: the update is scaled by alpha / rank."""
    dropout: float = rule(0.0, ge=0, lt=1)
    """Dropout on the LoRA input."""
    target_modules: list[str] = rule(
        factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], nonempty=True
    )
    """Module names to adapt; ["all-linear"] adapts every linear layer but the output head."""
    use_rslora: bool = False
    """Rank-stabilised scaling alpha / sqrt(rank) instead of alpha / rank."""
    use_dora: bool = False
    """Weight-decomposed LoRA (DoRA): magnitude + direction (lora.shape single only)."""
    shape: Literal["single", "per-capability", "per-task", "moe"] = "single"
    """How the capacity is laid out (ecomtrain.experts): "single", one LoRA;
    "per-capability" or "per-task", one LoRA per capability (or task family) the trial
    trains, each record routed to its own by its label; "moe", `experts` LoRA experts mixed
    per token by a learned router."""
    experts: int = rule(4, ge=2)
    """moe: the number of LoRA experts."""
    match_params: bool = False
    """Split `rank` among the experts, so a routed shape has the trainable parameters of one
    LoRA of rank `rank` (moe: plus a router of `rank` weights per module); false: every
    expert has `rank`."""

    def check_section(self) -> None:
        if self.use_dora and self.shape != "single":
            raise ConfigError(
                f"use_dora: DoRA is for lora.shape single only (its magnitude vector belongs "
                f"to one adapter), not {self.shape}"
            )
        if self.shape == "moe" and self.match_params and self.rank < self.experts:
            raise ConfigError(
                f"rank: {self.rank} cannot be split among lora.experts={self.experts} experts "
                "(lora.match_params: each needs a rank of 1 or more): use a rank >= the "
                "experts, fewer experts, or lora.match_params: false"
            )


def peft_targets(modules: list[str]) -> str | list[str]:
    """`lora.target_modules` as PEFT takes them: ["all-linear"] is its string "all-linear"."""
    return "all-linear" if modules == ["all-linear"] else modules


@dataclass
class SourceConfig(Section):
    """A data set of another shape, mapped to ShopBench records (`data.sources`)."""

    path: str = ""
    """A file (JSON Lines, JSON array, CSV, Parquet) or "hf:owner/name[:split]"."""
    format: Literal["", "jsonl", "json", "csv", "parquet"] = ""
    """The file's format; empty: from its extension."""
    input: str = ""
    """The question: a column, or a template over the columns ("Query: {query}\\nTitle:
    {title}")."""
    output: str = ""
    """The answer's column (not for multiple choice with `answer`)."""
    options: str = ""
    """Multiple choice: the column with the list of choices, or "a|b|c" for the same choices
    in every row (rendered numbered from 0)."""
    answer: str = ""
    """Multiple choice: the right choice's column (its index, or its text)."""
    task: str = ""
    """The task: a built-in family, or a name of your own."""
    task_type: str = ""
    """A task of your own: its task type (a built-in family has its own)."""
    metric: str = ""
    """Empty: the family's, else the task type's first."""
    capability: str = ""
    """A task of your own: its capability."""
    limit: int = rule(0, ge=0)
    """At most this many records from the source (0: all)."""


@dataclass
class DataConfig(Section):
    corpus: list[str] = field(default_factory=lambda: ["demo"])
    """Corpus files (ShopBench JSON Lines, JSON arrays such as EC-Guide's, generated files);
    "demo" is the built-in corpus (also "world", "world-synthetic", "ood");
    "hf:owner/name[:split]" loads a hub dataset once."""
    tasks: list[str] = field(default_factory=list)
    """Task families (built-in, or tasks of the user's own the corpus holds) or capabilities
    to train on; empty means every task in the corpus."""
    file_tasks: dict[str, str] = field(default_factory=dict)
    """File name or glob -> task family (built-in, or a name of the user's own) for records
    without task_name; unmatched records are assigned by the families' recognisers
    (ecomtrain/tasks.py), else make a task of their own named after their file."""
    sources: list[SourceConfig] = field(default_factory=list)
    """Data sets of other shapes (instruction sets, session logs, query-product relevance),
    each mapped to ShopBench records by column names or a template (see its keys)."""
    file_capabilities: dict[str, str] = field(default_factory=dict)
    """File name or glob -> capability of the records of tasks of the user's own (a task_name
    that is no built-in family, or a file's records no recogniser claims) that carry no
    capability or track; without one their capability is "unknown"."""
    eval_fraction: float = rule(0.15, ge=0, lt=1)
    """Share of each task held out (by a hash of the normalised input); 0: none by the hash
    (only records that choose their side, `split: eval`, are held out)."""
    max_eval_per_task: int = rule(8, ge=0)
    """Held-out records scored per task (the first in the order of a hash of their input);
    0: all of them. With eval.target_se set, an upper bound on what it asks for."""
    max_chars: int = rule(20000, ge=1)
    """Longest input_field or answer a record may have, in characters."""
    max_bad_fraction: float = rule(0.0, ge=0, le=1)
    """Share of bad records a run tolerates: they are written to `rejects` and counted;
    above it the run stops with the report. 0: any bad record stops the run."""
    rejects: str = "rejects.jsonl"
    """JSON Lines of bad records (relative: to the working directory)."""
    decontaminate: list[str] = field(default_factory=list)
    """Eval files (e.g. the KDD dev set) or Shopping MMLU folders no training record may
    overlap: equal normalised input, or a shared word n-gram that is not prompt template.
    Overlapping ones are dropped."""
    ngram: int = rule(13, ge=1)
    """n of the word n-grams compared by decontamination."""
    temperature: float = rule(1.0, gt=0)
    """Mixture: p(task) ~ capability weight * task weight * min(n, max_per_task) **
    (1 / temperature), n the task's training records. 1: proportional to size; larger
    flattens towards uniform."""
    max_per_task: int = rule(0, ge=0)
    """Cap on a task's size in the mixture (an epoch holds sum(min(n, max_per_task))
    records); 0: no cap."""
    capability_weights: dict[str, float] = rule(factory=dict, ge=0)
    """Capability -> its weight in the mixture (default 1)."""
    task_weights: dict[str, float] = rule(factory=dict, ge=0)
    """Task family -> its weight in the mixture (default 1)."""
    weighting: Literal["size", "shares"] = "size"
    """How the mixture reads the weights. "size": p(task) ~ capability weight * task weight *
    size ** (1 / temperature), size = min(n, max_per_task). "shares": the weights are shares
    of every epoch's e-commerce records, size aside: with task_weights, a task's share ~ its
    task weight (every task trained named; with capability_weights too, a capability's
    share ~ its weight, split among its tasks by their task weights); with
    capability_weights alone, a capability's share ~ its weight (every capability trained
    named), split among its tasks by size ** (1 / temperature). A swept mixture
    (sweep.mixtures) sets it."""
    ood_fraction: float = rule(0.0, ge=0, lt=1)
    """Share of every epoch drawn from the out-of-domain tasks (capability "ood": the
    built-in "ood" corpus, or files and records labelled so); the epoch's size stays that of
    the e-commerce tasks alone. 0: out-of-domain tasks are not trained on. Never evaluated."""
    downsample: Literal["rotate", "fixed"] = "rotate"
    """A task kept below its size (max_per_task, weights): "rotate" keeps another part of it
    each epoch, so every record comes round; "fixed" the same part every epoch, so its
    unique records are its share of an epoch (an equal record budget per task)."""
    provenance: Provenance = "both"
    """Training records kept by provenance: "curated", "synthetic" (written by
    ecomtrain.generate, or labelled so) or "both"; with data.max_per_task it compares the
    two at an equal record budget per task (with data.downsample: fixed, in unique
    records). Held-out records are kept whatever it says (see eval.provenance)."""
    file_provenance: dict[str, str] = field(default_factory=dict)
    """File name or glob -> provenance ("curated" or "synthetic") of its records that carry
    none (e.g. a GPT-written instruction set: synthetic); unmatched ones are curated."""
    max_seq_len: int = rule(2048, ge=8)
    """Tokens per packed training sequence; an over-long record loses the start of its
    prompt, one whose answer alone does not fit is dropped (counted and logged)."""
    pack_window: int = rule(1024, ge=1)
    """Records packed together (first-fit decreasing by length)."""
    seed: int = rule(0, ge=0)
    """Seed of the data order and of the mixture's sampling."""


@dataclass
class TrainConfig(Section):
    num_workers: int = rule(2, ge=1)
    """Ray Train workers per trial. `[min, max]` makes the trial elastic: it starts with as
    many as the cluster offers (at least min), goes on with fewer when a node is lost
    instead of waiting, and grows back when capacity returns (cluster/README.md, "Elastic
    workers"); it is read into `min_workers` and `num_workers` (the max)."""
    min_workers: int = rule(0, ge=0)
    """Elastic: the fewest workers a trial runs with; 0: fixed at num_workers."""
    resize_check_s: float = rule(60.0, ge=0)
    """Elastic: how often (seconds) Ray Train looks for room to grow a running trial back."""
    use_gpu: bool = False
    """One GPU per worker, NCCL; else CPU workers with gloo."""
    cpus_per_worker: float = rule(1.0, gt=0)
    """CPUs each worker takes."""
    worker_resources: dict[str, float] = rule(factory=dict, ge=0)
    """Custom Ray resources each worker also takes (e.g. {trainer: 1} with one `trainer`
    per node: one worker per node, on the nodes that offer it)."""
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_SPREAD", "STRICT_PACK"] = "PACK"
    """How a trial's workers spread over nodes: PACK (fewest nodes), SPREAD, STRICT_SPREAD
    (one per node) or STRICT_PACK (one node)."""
    zero_stage: Literal[0, 1, 2, 3] = 2
    """DeepSpeed ZeRO stage."""
    micro_batch_size: int = rule(8, ge=1)
    """Sequences per worker per step."""
    grad_accum: int = rule(1, ge=1)
    """Micro-batches per optimizer step."""
    max_steps: int = rule(30, ge=1, le=MAX_STEPS)
    """Optimizer steps per trial."""
    lr: float = rule(1e-3, gt=0, le=10)
    """Peak learning rate (AdamW)."""
    warmup_steps: int = rule(3, ge=0)
    """Linear warmup, then cosine decay to 10 % of lr."""
    weight_decay: float = rule(0.0, ge=0)
    """AdamW's decoupled weight decay."""
    grad_clip: float = rule(1.0, ge=0)
    """Max gradient norm; 0 disables clipping."""
    log_every: int = rule(5, ge=1)
    """Report training metrics every N steps (at most every Ray Train poll)."""
    eval_every: int = rule(0, ge=0)
    """Evaluate and checkpoint every N steps; 0: only at the end."""
    seed: int = rule(0, ge=0)
    """Seed of LoRA initialisation (and of dropout)."""
    precision: Literal["bf16", "fp16", "fp32"] = "fp32"
    """Training precision (bf16 and fp16 need a GPU)."""
    offload_optimizer: bool = False
    """ZeRO: keep optimizer states in host memory."""
    offload_params: bool = False
    """ZeRO-3: keep parameters in host memory."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    compile: bool = False
    """torch.compile the model for its training steps (DeepSpeed's engine.compile; the first
    steps take the compile time); evaluation runs it eagerly (new shapes at every call)."""
    keep_checkpoints: int = rule(2, ge=1)
    """Checkpoints (taken at each evaluation) kept per run, best by score."""
    max_failures: int = rule(0, ge=0)
    """Worker failures to recover from, resuming from the last checkpoint."""

    @property
    def elastic(self) -> bool:
        """Whether the number of workers may change during a trial (num_workers: [min, max])."""
        return 0 < self.min_workers < self.num_workers

    def check_section(self) -> None:
        """An elastic trial's range of workers, and a ZeRO stage whose checkpoints any
        number of workers can load."""
        if self.min_workers > self.num_workers:
            raise ConfigError(
                f"num_workers: [{self.min_workers}, {self.num_workers}]: the fewest workers "
                "must not exceed the most"
            )
        if self.elastic and self.zero_stage != 0:
            raise ConfigError(
                f"num_workers: [{self.min_workers}, {self.num_workers}] (elastic) needs "
                f"train.zero_stage 0, not {self.zero_stage}: DeepSpeed reloads a ZeRO "
                "checkpoint only at the number of workers that saved it (its optimizer state "
                "is cut into one part per worker). A LoRA adapter's optimizer state is small, "
                "so ZeRO-1/2 save little memory; ZeRO-3 (the frozen base cut up too) cannot "
                "be elastic"
            )


@dataclass
class EvalConfig(Section):
    tasks: list[str] = field(default_factory=list)
    """Task families or capabilities every trial is scored on (held-out split); empty: all."""
    provenance: Provenance = "both"
    """Held-out records scored, by provenance: "curated" scores against curated answers only
    (a data.provenance comparison should), "synthetic", or "both"."""
    max_new_tokens: int = rule(24, ge=1)
    """Generation budget for non-multiple-choice tasks."""
    target_se: float = rule(0.0, ge=0)
    """Size the held-out sample so the score's standard error is at most this for any
    per-record scores in [0, 1], where the data allow (0: data.max_eval_per_task records
    per task). The log and the report print the bound reached and the measured error."""
    confirm_fraction: float = rule(0.25, ge=0, lt=1)
    """Part of each task's held-out sample, chosen by a salted hash of the record
    (evaluate.held_out.part_of), kept for claims about the selected best: trials are ranked
    and stopped on the rest (score, track/*), this part only scores confirm/*. 0: no
    confirmation sample (docs/statistics-method.md says why it is there)."""
    seed_sd: float = rule(0.0, ge=0)
    """`sweep --plan`: the seed-to-seed SD of a trial's score to plan with (0: training noise
    not counted)."""
    target_mde: float = rule(0.0, ge=0)
    """`sweep --plan`: the smallest cell-vs-cell difference the sweep should detect at 80 %
    power (0: no target; else the plan says the records or seeds it needs)."""
    batch_size: int = rule(16, ge=1)
    """Prompts per generate() call."""
    prompt_prefix: bool = True
    """Prepend the official ShopBench prompt prefix at training and evaluation time."""
    extra_files: list[str] = field(default_factory=list)
    """Extra eval files or Shopping MMLU folders (e.g. the KDD Cup dev set) every evaluation
    also scores, whole, by each record's own labels (any task name; its track), reported as
    extra/score, extra/track/*, extra/task/*."""
    extra_max_new_tokens: int = rule(100, ge=1)
    """Generation budget on the extra eval files: ShopBench's 100 by default, so their
    scores compare with the leaderboard's (multiple choice always gets 1 token)."""
    predictions: int = rule(16, ge=0)
    """Sample held-out answers (task, input, gold, answer, score) logged to W&B as a
    `predictions` table at every evaluation, spread over the tasks; 0: none."""


@dataclass
class MixturesConfig(Section):
    """A sweep's mixtures (`sweep.mixtures`): shares of the tasks (or capabilities) of its one
    subset, each a point of the sweep crossed with the ranks and seeds (tuning/mixtures.py)."""

    draws: int = rule(0, ge=0)
    """Mixtures drawn from a Dirichlet over the subset's tasks (or capabilities: `over`). With
    any mixture, drawn or given, the stratified mixture (shares in proportion to the tasks'
    training records, capped by data.max_per_task) and the uniform one join as baselines. 0
    and no `given`: no mixture dimension (the trials train on data.*'s own mixture)."""
    over: Literal["tasks", "capabilities"] = "tasks"
    """What a mixture gives shares of: each task of the subset, or each capability it covers
    (a capability's tasks then split its share by size ** (1 / data.temperature))."""
    concentration: float = rule(1.0, gt=0)
    """The Dirichlet's concentration c: draws ~ Dirichlet(c * K * prior) over K shares, so
    c = 1 with the uniform prior is flat on the simplex; larger keeps the draws near the
    prior, smaller pushes them towards its corners (a few tasks only)."""
    prior: Literal["uniform", "size"] = "uniform"
    """The Dirichlet's mean: "uniform" (equal shares) or "size" (the stratified mixture)."""
    seed: int = rule(0, ge=0)
    """Seed of the draws: the same seed draws the same mixtures."""
    given: dict[str, dict[str, float]] = field(default_factory=dict)
    """Mixtures of your own: id -> {task (or capability, with over: capabilities): share},
    e.g. {concept-heavy: {query_ner: 3, review_rating: 1}}. Shares are >= 0 and are
    normalised to sum to 1; a task of the subset a mixture does not name gets 0."""
    uniform: bool = True
    """Include the uniform mixture beside the stratified one (a confirmation sweep, which
    compares given mixtures with the stratified one only, leaves it out)."""
    fit: bool = True
    """Fit the mixture law on the finished trials (the report, `sweep --confirm`, search
    "mixture"): the sweep must then hold enough mixtures for it, at least K + 2 for K shares
    (the law has K + 1 parameters per target). false: sweep mixtures without the law."""
    kl: float = rule(0.0, ge=0)
    """The law's proposal maximises the predicted score less kl * KL(mixture || the
    stratified one) (nats): larger keeps the proposal nearer the mixtures the data hold
    most of; 0: the predicted score alone."""
    explore: float = rule(2.0, ge=0)
    """sweep.search "mixture": the next mixture maximises the Gaussian process's mean +
    explore * its standard deviation (an upper confidence bound); 0 exploits only."""

    @property
    def active(self) -> bool:
        """Whether the sweep has a mixture dimension."""
        return bool(self.draws or self.given)

    def check_section(self) -> None:
        """Each given mixture: a folder-safe id that no baseline or draw takes, and shares
        that are finite, >= 0 and not all 0."""
        for name, shares in self.given.items():
            if not _PATH_SAFE.fullmatch(name) or ".." in name:
                raise ConfigError(
                    f"given key {name!r}: becomes part of a folder name: use letters, digits "
                    "and _ . + = - only, no '..'"
                )
            if name in ("stratified", "uniform") or re.fullmatch(r"dirichlet-\d+", name):
                raise ConfigError(f"given key {name!r}: the name of a baseline or a draw")
            if not shares:
                raise ConfigError(f"given.{name}: no shares: name a task and its share")
            for key, value in shares.items():
                if problem := _problem(value, {"ge": 0}):
                    raise ConfigError(f"given.{name}.{key}: {problem}")
            if not any(shares.values()):
                raise ConfigError(f"given.{name}: every share is 0: a mixture needs one above 0")


@dataclass
class SweepConfig(Section):
    name: str = "demo"
    """Tune experiment name; also the W&B group and a folder name."""
    subsets: dict[str, list[str]] = field(
        default_factory=lambda: {
            "concept+behavior": ["understanding-shopping-concepts", "user-behavior-alignment"],
            "all-4": [
                "understanding-shopping-concepts",
                "shopping-knowledge-reasoning",
                "user-behavior-alignment",
                "multi-lingual-abilities",
            ],
        }
    )
    """Subset id -> task families or capabilities it trains on."""
    ladder: list[str] = field(default_factory=list)
    """Capability ladder: subsets "ladder-k" add these capabilities one at a time, in order."""
    leave_one_out: list[str] = field(default_factory=list)
    """Subtask inclusion: for each capability named, one subset per family leaving it out of
    the full task set ("without-<family>")."""
    random_subsets: int = rule(0, ge=0)
    """Random subsets of families to add to the space."""
    random_min_per_capability: int = rule(1, ge=0)
    """Each random subset covers every capability this often."""
    random_max_tasks: int = rule(0, ge=0)
    """At most this many families per random subset (0: no cap)."""
    ranks: list[int] = rule(factory=lambda: [4, 16], ge=1, le=MAX_RANK, nonempty=True)
    """LoRA ranks crossed with the subsets."""
    seeds: list[int] = rule(factory=list, ge=0)
    """Replicates: every point of the space runs once per seed (train.seed and data.seed, so
    LoRA initialisation and data order); the report's intervals then include seed noise.
    Empty: one run per point with the configured seeds."""
    alpha_rule: Literal["scale", "fixed", "rslora"] = "scale"
    """lora.alpha per trial: "scale" = alpha_per_rank * rank; "fixed" = lora.alpha;
    "rslora" = lora.alpha with rank-stabilised scaling (alpha / sqrt(rank))."""
    alpha_per_rank: float = rule(2.0, gt=0)
    """alpha / rank under alpha_rule "scale"."""
    params: dict[str, list] = field(default_factory=dict)
    """Further dimensions by dotted config path, e.g. {"train.lr": [1e-4, 3e-4]}."""
    mixtures: MixturesConfig = field(default_factory=MixturesConfig)
    """The sweep's task mixtures (see its keys)."""
    search: Literal["grid", "random", "optuna", "mixture"] = "grid"
    """"grid" (every point), "random" (num_samples points), "optuna" (num_samples points
    chosen by Optuna's TPE from the scores so far; needs `pip install optuna`), or "mixture"
    (num_samples trials: the baselines, given and drawn mixtures first, then each next
    mixture where the mixture law's Gaussian process expects most: sweep.mixtures)."""
    num_samples: int = rule(1, ge=1)
    """Grid: repeats of the grid; random and optuna: trials."""
    seed: int = rule(0, ge=0)
    """Seed of random subsets (and of Optuna)."""
    scheduler: Literal["fifo", "asha", "asha-by-rank"] = "fifo"
    """"fifo" runs every trial out; "asha" stops weak ones early; "asha-by-rank" does so
    within each LoRA rank, a trial measured against trials of its own rank only (low ranks
    follow high ranks' curves early and fall behind later, so an early rung cannot rank
    them: docs/mixture.md)."""
    metric: str = rule("score", choices=METRICS)
    """The objective trials are ranked on, by Tune's searchers, ASHA, checkpoint retention
    and the report: "score" (the held-out split), "extra/score" (the extra eval files, e.g.
    the KDD Cup dev set), or one capability of either: "track/<capability>",
    "extra/track/<capability>"."""
    stop_metric: Literal["metric", "eval_loss", "eval_likelihood"] = "metric"
    """What ASHA decides on at each evaluation: "metric" (sweep.metric, higher is better),
    "eval_loss" (the held-out answer-token loss, lower is better; smooth, but pooled over
    every task, also those a trial never trained on) or "eval_likelihood" (each record's
    reference likelihood in the score's task -> track -> overall weighting; higher is
    better; smooth, but it favours subsets that cover more tasks: docs/benchmarks.md,
    "asha")."""
    launch_seed: int = rule(-1, ge=-1)
    """Trial launch order: -1 keeps the space's order; N shuffles it with seed N (under ASHA
    the trials launched first set the bar, so the order matters)."""
    grace_period: int = rule(100, ge=1)
    """ASHA: steps before a trial can be stopped (align with train.eval_every)."""
    reduction_factor: int = rule(2, ge=2)
    """ASHA: keep the top 1/reduction_factor at each rung."""
    max_concurrent_trials: int = rule(1, ge=0)
    """Trials running at once (0: as many as resources allow); with `pack`, runs at once,
    each of up to `pack` trials."""
    pack: int = rule(1, ge=1)
    """Trials that train together in one Ray Train run over one copy of the base model per
    worker, each with its own adapter, data, optimizer, schedule, checkpoints, evaluations
    and Tune trial, exactly as it would train alone (docs/pack.md); 1: a run per trial.
    Only trials that share the model section and the train keys but seed, lr, warmup_steps,
    weight_decay, grad_clip, micro_batch_size and grad_accum share a run; others are packed
    apart."""
    pack_wait_s: float = rule(10.0, ge=0)
    """How long a pack that is not full waits for another trial to join before it starts
    with the trials it has (it starts at once when every trial of the sweep has joined)."""
    driver_resources: dict[str, float] = rule(factory=dict, ge=0)
    """Custom Ray resources each trial's driver (and so its Ray Train controller) also takes,
    e.g. {driver: 0.01} with `--resources '{"driver": 100}'` on an on-demand head only:
    losing a spot node then never takes a trial's driver with it."""
    output: str = "runs"
    """Where the sweep writes everything (overridden by --output)."""

    def check_section(self) -> None:
        try:
            self.mixtures.check()
        except ConfigError as e:
            raise ConfigError(f"mixtures.{e}") from None


@dataclass
class WandbConfig(Section):
    project: str = "ecomtrain"
    """The W&B project."""
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    """"auto": online when WANDB_API_KEY is set, else offline; or "online", "offline",
    "disabled"."""
    entity: str = ""
    """W&B team or user; empty uses the account default."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)


# --- what a key means: `ecomtrain config --explain` ---------------------------------------------


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The doc of each field of a dataclass: the string under it in the class body."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def keys(cls: type = Config, prefix: str = "") -> list[tuple[str, type, dataclasses.Field]]:
    """(dotted key, section class, field) of every key of the config (a list of sections,
    as data.sources, is listed by its own keys under `key[]`)."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint, key = hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hint):
            out += keys(hint, f"{key}.")
            continue
        out.append((key, cls, f))
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        if dataclasses.is_dataclass(item):
            out += keys(item, f"{key}[].")
    return out


def explain(key: str = "") -> str:
    """Each key under `key` (all when empty): its type, default, range and doc."""
    found = [k for k in keys() if k[0] == key or k[0].startswith(f"{key}.") or not key]
    if not found:
        raise ConfigError(f"{key}: no such config key (`ecomtrain config --explain` lists them)")
    lines = []
    for name, cls, f in found:
        hint = typing.get_type_hints(cls)[f.name]
        default = f.default_factory() if callable(f.default_factory) else f.default
        rules = f.metadata.get("rule", {})
        bounds = _range(rules) if set(rules) & set(_BOUNDS) else ""
        if rules.get("nonempty"):
            bounds += ", not empty" if bounds else "not empty"
        if "choices" in rules:
            bounds = f"one of {', '.join(rules['choices'])}"
        head = f"{name}: {_name(hint)} = {default!r}" + (f"  ({bounds})" if bounds else "")
        doc = field_docs(cls).get(f.name, "")
        lines += [head, *textwrap.wrap(doc, 92, initial_indent="    ", subsequent_indent="    ")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`ecomtrain config --explain [KEY]`: what the config's keys mean."""
    parser = argparse.ArgumentParser(
        prog="python -m ecomtrain.config",
        description="What a config key means: its type, default, range and doc.",
    )
    parser.add_argument(
        "--explain",
        nargs="?",
        const="",
        metavar="KEY",
        required=True,
        help="a key (train.lr) or a section (train); every key when none",
    )
    args = parser.parse_args(argv)
    try:
        print(explain(args.explain))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


# --- loading -------------------------------------------------------------------------------------


def config_path(path: str | Path) -> Path:
    """`path` as given when it exists; else the shipped config of that name, so that
    `configs/world.yaml` (or `world.yaml`) is found from any working directory."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    shipped = CONFIGS / (Path(*p.parts[1:]) if p.parts[:1] == ("configs",) else p)
    return shipped if shipped.is_file() else p


class _SafeLoader(yaml.SafeLoader):
    """YAML's safe loader (no tags that build objects), refusing aliases too: a few hundred
    bytes of nested aliases can expand to gigabytes."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not accepted in configs", event.start_mark
            )
        return super().compose_node(parent, index)


def read_yaml(text: str, where: str):
    """Parse YAML text safely; errors name `where`."""
    try:
        return yaml.load(text, Loader=_SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        column = f" (column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{where}{at}: invalid YAML: {problem}{column}") from None


def read_config_file(path: Path, kind: str = "config") -> dict:
    """The mapping in a YAML file (a config, a generation spec), with a clear error for every
    way it can fail."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {kind} file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a {kind} file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    return yaml_mapping(text, str(path), empty_ok=True)


def yaml_mapping(text: str, where: str, empty_ok: bool = False) -> dict:
    """The mapping at the top of YAML text (empty text is {} when `empty_ok`)."""
    raw = read_yaml(text, where)
    if raw is None and empty_ok:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (demo.yaml when None), apply `a.b=c` overrides, and check it:
    types, choices, ranges, task names and sweep dimensions (the files:
    `data.sources.check_files`)."""
    path = config_path(path) if path else DEFAULT_CONFIG
    raw = read_config_file(path)
    for item in overrides:
        apply_override(raw, item)
    return checked_config(raw, str(path))


def checked_config(raw: dict, source: str) -> Config:
    """A Config built from a mapping and checked (types, choices, ranges, task names)."""
    return check_values(build(Config, elastic_spelling(raw, source), source, ""), source)


def elastic_spelling(raw: dict, source: str) -> dict:
    """`train.num_workers: [min, max]` read into train.min_workers and train.num_workers."""
    train = raw.get("train")
    workers = train.get("num_workers") if isinstance(train, dict) else None
    if not isinstance(workers, list):
        return raw
    if len(workers) != 2 or not all(_is(w, int) and w >= 1 for w in workers):
        raise ConfigError(
            f"{source}: train.num_workers: expected a number of workers or [min, max] "
            f"(elastic, min >= 1), got {workers!r}"
        )
    if "min_workers" in train:
        raise ConfigError(
            f"{source}: train.num_workers {workers!r} and train.min_workers both set the "
            "fewest workers: keep one"
        )
    return raw | {"train": train | {"min_workers": workers[0], "num_workers": workers[1]}}


def apply_override(raw: dict, item: str) -> None:
    """Set `a.b=c` in a nested dict; the value is parsed as YAML (so 3 is an int)."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected KEY.PATH=VALUE")
    set_path(raw, key, read_yaml(value, f"override {item!r}"))


def set_path(raw: dict, key: str, value) -> None:
    """Set a dotted key path in a nested dict, creating sections on the way."""
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {part} is not a section")
    node[leaf] = value


def build(cls: type, raw: dict, source: str, prefix: str):
    """Recursively turn a dict into dataclass `cls`, rejecting unknown keys, wrong types and
    (for config sections) values outside their rules."""
    if not isinstance(raw, dict):
        where = prefix.rstrip(".") or "top level"
        raise ConfigError(f"{source}: {where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise ConfigError(
                f"{source}: {prefix}{key}: unknown key (known: {', '.join(sorted(names))})"
            )
    values = {}
    for key, value in raw.items():
        hint, where = hints[key], f"{prefix}{key}"
        if dataclasses.is_dataclass(hint):
            values[key] = build(hint, value, source, where + ".")
        else:
            values[key] = check_type(value, hint, source, where)
    try:
        return cls(**values)
    except ConfigError as e:  # a section's own rules (Section.check)
        raise ConfigError(f"{source}: {prefix}{e}") from None


def check_type(value, hint, source: str, where: str):
    """Check `value` against a simple type hint; ints are accepted where floats are."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        if _in_literal(value, hint):
            return value
        raise ConfigError(f"{source}: {where}: {value!r} is not one of {args}")
    if hint is list and isinstance(value, list):  # a list of any scalars
        return value
    if origin is list and isinstance(value, list):
        return [check_type(v, args[0], source, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict and isinstance(value, dict):
        return {
            check_type(k, args[0], source, f"{where} key"): check_type(
                v, args[1], source, f"{where}.{k}"
            )
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(hint):  # an entry of a list of sections (data.sources)
        return build(hint, value, source, f"{where}.")
    if origin is None and _is(value, hint):
        return float(value) if hint is float else value
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(
        f"{source}: {where}: expected {_name(hint)}, got {type(value).__name__} {value!r}"
    )


def _is(value, hint) -> bool:
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _name(hint) -> str:
    if typing.get_origin(hint) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if typing.get_args(hint):  # list[str], dict[str, float], list[SourceConfig]
        return re.sub(r"[\w.]+\.(\w+)", r"\1", str(hint))
    return getattr(hint, "__name__", None) or str(hint)


def to_dict(cfg) -> dict:
    """Plain nested dict of a config (for W&B and YAML dumps)."""
    return dataclasses.asdict(cfg)


def config_yaml(cfg: Config) -> str:
    """A config as the YAML a sweep saves: every key, in its sections' order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def with_values(cfg: Config, values: dict, source: str) -> Config:
    """A copy of `cfg` with dotted-path values set (`{"train.lr": 1e-4}`), each checked
    against its field's type, then the whole config checked again."""
    out = copy.deepcopy(cfg)
    for key, value in values.items():
        *sections, leaf = key.split(".")
        node = out
        for part in sections:
            node = getattr(node, part, None)
            if not dataclasses.is_dataclass(node):
                raise ConfigError(f"{source}: {key}: {part} is not a section")
        hints = typing.get_type_hints(type(node))
        if leaf not in hints:
            known = ", ".join(sorted(f.name for f in dataclasses.fields(node)))
            raise ConfigError(f"{source}: {key}: unknown key (known: {known})")
        hint = hints[leaf]
        if dataclasses.is_dataclass(hint):
            value = build(hint, value, source, f"{key}.")
        else:
            value = check_type(value, hint, source, key)
        setattr(node, leaf, value)
    return check_values(out, source)


# --- the rules across sections -------------------------------------------------------------------

_PATH_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=-]*")  # becomes a folder name
TASK_NAME = _PATH_SAFE  # a task of the user's own: its name is in metric names and W&B keys
# Set per trial by the sweep's own dimensions, so never a sweep.params key: the key -> where
# its values go instead.
SWEPT_BY_THE_SWEEP = {
    "lora.rank": "sweep.ranks",
    "lora.alpha": "sweep.alpha_rule and sweep.alpha_per_rank",
    "data.tasks": "sweep.subsets, sweep.ladder, ...",
    "train.seed": "sweep.seeds (replicates)",
    "data.seed": "sweep.seeds (replicates)",
}


def check_values(cfg: Config, source: str) -> Config:
    """Every section's own rules (the fields may have been set after the section was made),
    then the rules across sections: task names, unsafe names, ASHA's first rung, a 4-bit
    base, mapped sources and the sweep's own dimensions; errors name the key and the file."""
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        try:
            section.check()
            for i, s in enumerate(getattr(section, "sources", [])):
                _check_source(s, f"sources[{i}]")
        except ConfigError as e:
            raise ConfigError(f"{source}: {f.name}.{e}") from None
    for where, name in [("sweep.name", cfg.sweep.name)] + [
        (f"sweep.subsets key {k!r}", k) for k in cfg.sweep.subsets
    ]:
        if not _PATH_SAFE.fullmatch(name) or ".." in name:
            raise ConfigError(
                f"{source}: {where}: {name!r} becomes a folder name: use letters, digits and "
                "_ . + = - only, no '..'"
            )
    _check_tasks(cfg, source)
    if cfg.sweep.scheduler != "fifo" and cfg.sweep.grace_period > cfg.train.max_steps:
        raise ConfigError(
            f"{source}: sweep.grace_period: {cfg.sweep.grace_period} is past "
            f"train.max_steps ({cfg.train.max_steps}): ASHA's first rung would never come"
        )
    _check_quantization(cfg, source)
    _check_params(cfg, source)
    _check_mixtures(cfg, source)
    return cfg


MIXTURE_KEYS = ("data.task_weights", "data.capability_weights", "data.weighting")


def _check_mixtures(cfg: Config, source: str) -> None:
    """A sweep of mixtures sets the mixture keys per trial: none may be set or swept too; a
    mixture search has mixtures to start from."""
    mixtures = cfg.sweep.mixtures
    if cfg.sweep.search == "mixture" and not mixtures.active:
        raise ConfigError(
            f"{source}: sweep.search: mixture searches sweep.mixtures: set sweep.mixtures.draws "
            "(the mixtures it starts from) or sweep.mixtures.given"
        )
    if not mixtures.active:
        return
    if cfg.sweep.search == "optuna":
        raise ConfigError(
            f"{source}: sweep.search: optuna does not search mixtures: use grid, random or "
            "mixture with sweep.mixtures"
        )
    data = cfg.data
    for key, value in [
        ("data.task_weights", data.task_weights),
        ("data.capability_weights", data.capability_weights),
        ("data.weighting", data.weighting != "size"),
    ] + [(key, True) for key in cfg.sweep.params if key in MIXTURE_KEYS]:
        if value:
            raise ConfigError(
                f"{source}: {key}: set per trial by sweep.mixtures, so it would be overwritten; "
                "give the mixture as sweep.mixtures.given instead"
            )
    if mixtures.over == "capabilities":
        for name, shares in mixtures.given.items():
            for key in shares:
                if key not in CAPABILITIES:
                    raise ConfigError(
                        f"{source}: sweep.mixtures.given.{name} key {key!r}: expected one of "
                        f"{', '.join(CAPABILITIES)} (sweep.mixtures.over is capabilities)"
                    )


def _check_quantization(cfg: Config, source: str) -> None:
    """A 4-bit base trains one LoRA under ZeRO-0/1/2 (ZeRO-3 would partition its packed
    4-bit weights; the routed shapes wrap its layers in their own modules)."""
    if cfg.model.quantization == "none":
        return
    if cfg.train.zero_stage == 3:
        raise ConfigError(
            f"{source}: model.quantization: {cfg.model.quantization} needs train.zero_stage "
            "0, 1 or 2 (a 4-bit base is small enough to hold whole on every GPU)"
        )
    if cfg.lora.shape != "single":
        raise ConfigError(
            f"{source}: model.quantization: {cfg.model.quantization} is for lora.shape "
            f"single only, not {cfg.lora.shape}"
        )


def _check_source(s: SourceConfig, where: str) -> None:
    """A mapped source's own fields, and that it names its file, its task and enough columns
    to make a record (`where`: its key under data, which check_values puts before it)."""
    try:
        s.check()
    except ConfigError as e:
        raise ConfigError(f"{where}.{e}") from None
    family = FAMILIES.get(s.task)
    task_type = family.task_type if family else s.task_type
    problems = [
        ("path", not s.path, "the file or hf: data set to read"),
        ("task", not TASK_NAME.fullmatch(s.task), "a built-in family or a name of your own"),
        ("input", not s.input, "a column, or a template over the columns"),
        (
            "task_type",
            task_type not in METRICS_BY_TYPE,
            f"one of {', '.join(METRICS_BY_TYPE)} (a task of your own)",
        ),
        (
            "output",
            not s.output and not (s.options and s.answer),
            "the answer's column, or options and answer",
        ),
        (
            "capability",
            bool(s.capability) and s.capability not in LABELS,
            f"one of {', '.join(LABELS)}",
        ),
    ]
    for key, wrong, what in problems:
        if wrong:
            raise ConfigError(f"{where}.{key}: {getattr(s, key)!r}: expected {what}")
    if s.metric and s.metric not in METRICS_BY_TYPE[task_type]:
        raise ConfigError(f"{where}.metric: {s.metric!r} is not allowed for {task_type}")


def named_tasks(cfg: Config) -> list[tuple[str, str]]:
    """(where, name) of every task or capability the config names for training, evaluation
    and the sweep's subsets: each a capability, a built-in family, or a task of the user's
    own, which the corpus must hold (checked once it is scanned: data.pipeline.check_names)."""
    named = [(f"data.tasks[{i}]", n) for i, n in enumerate(cfg.data.tasks)]
    named += [(f"eval.tasks[{i}]", n) for i, n in enumerate(cfg.eval.tasks)]
    for sid, names in cfg.sweep.subsets.items():
        named += [(f"sweep.subsets.{sid}[{i}]", n) for i, n in enumerate(names)]
    named += [(f"data.task_weights key {n!r}", n) for n in cfg.data.task_weights]
    return named


def _check_tasks(cfg: Config, source: str) -> None:
    """Every name of a task family or capability in the config is one, or could be a task
    of the user's own; the ladder and leave-one-out take built-in ones only."""
    known = f"(capabilities: {', '.join(CAPABILITIES)}; families: ecomtrain/tasks.py)"
    builtin = [(f"sweep.ladder[{i}]", n) for i, n in enumerate(cfg.sweep.ladder)]
    builtin += [(f"sweep.leave_one_out[{i}]", n) for i, n in enumerate(cfg.sweep.leave_one_out)]
    for where, name in builtin:
        if name not in FAMILIES and name not in CAPABILITIES:
            raise ConfigError(
                f"{source}: {where}: unknown task family or capability {name!r} {known}"
            )
    own = named_tasks(cfg)
    own += [(f"data.file_tasks.{glob}", n) for glob, n in cfg.data.file_tasks.items()]
    for where, name in own:
        if not (isinstance(name, str) and TASK_NAME.fullmatch(name)):
            raise ConfigError(
                f"{source}: {where}: {name!r} is no task family or capability {known}, and a "
                "task of your own needs a name of letters, digits and _ . + = - only"
            )
    labels = [("data.capability_weights key", n, CAPABILITIES) for n in cfg.data.capability_weights]
    labels += [
        (f"data.file_capabilities.{g}", c, LABELS) for g, c in cfg.data.file_capabilities.items()
    ]
    labels += [
        (f"data.file_provenance.{g}", p, PROVENANCES) for g, p in cfg.data.file_provenance.items()
    ]
    for where, name, known in labels:
        if name not in known:
            raise ConfigError(f"{source}: {where} {name!r}: expected one of {', '.join(known)}")


def _check_params(cfg: Config, source: str) -> None:
    """`sweep.params`: each key a config path the sweep does not set itself, each value of
    the right type and range."""
    bare = dataclasses.replace(cfg, sweep=dataclasses.replace(cfg.sweep, params={}))
    for key, values in cfg.sweep.params.items():
        where = f"{source}: sweep.params.{key}"
        if not values:
            raise ConfigError(f"{where}: needs at least one value")
        if key.partition(".")[0] == "sweep":
            raise ConfigError(f"{where}: the sweep's own keys are not swept")
        if key in SWEPT_BY_THE_SWEEP:
            raise ConfigError(
                f"{where}: set per trial by the sweep itself, so these values would be "
                f"overwritten; use {SWEPT_BY_THE_SWEEP[key]}"
            )
        for i, value in enumerate(values):
            with_values(bare, {key: value}, f"{where}[{i}]")


if __name__ == "__main__":
    sys.exit(main())
