"""Typed configuration: dataclasses loaded from YAML, with `a.b=c` overrides.

Every field is documented where it is declared. Unknown keys and wrong types are
errors that name the key path and the file they came from.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ecomtrain.tasks import CAPABILITIES, FAMILIES, LABELS, METRICS_BY_TYPE

# data.corpus names that are not files ("demo:N" too): data.sources.BUILTIN
BUILTIN_CORPORA = ("demo", "world", "world-synthetic", "ood")
LORA_SHAPES = ("single", "per-capability", "per-task", "moe")  # lora.shape
PROMPT_FORMATS = ("chat", "raw")  # model.prompt_format
PROVENANCES = ("curated", "synthetic")  # where a record comes from (data.provenance)
SOURCE_FORMATS = ("jsonl", "json", "csv", "parquet")  # data.sources[].format
# What a sweep can rank trials on (sweep.metric).
METRICS = ["score", "extra/score"] + [
    f"{prefix}track/{c}" for prefix in ("", "extra/") for c in CAPABILITIES
]

# The shipped configs: package data of an installed wheel (ecomtrain/configs), else the
# repository's configs/ beside the package (a source checkout or an editable install).
_HERE = Path(__file__).resolve().parent
CONFIGS = _HERE / "configs" if (_HERE / "configs").is_dir() else _HERE.parent / "configs"
DEFAULT_CONFIG = CONFIGS / "demo.yaml"
CONFIG_FILE = "config.yaml"  # a sweep's resolved config in its output (what --resume reads)


class ConfigError(ValueError):
    """A config value that cannot be used; the message names file and key path."""


@dataclass
class ModelConfig:
    # "tiny-llama" builds (once, cached) an offline 2-layer Llama with its own tokenizer;
    # anything else is a hub id or a local directory passed to `from_pretrained`.
    name_or_path: str = "tiny-llama"
    # Where built tiny models are cached; empty means ~/.cache/ecomtrain (or $ECOMTRAIN_CACHE).
    cache_dir: str = ""
    # Attention kernel: "sdpa" (CPU/GPU; packed training batches records of similar length)
    # or "flash_attention_2" (GPU, needs flash-attn; varlen over the packed row).
    attn_implementation: str = "sdpa"
    # "chat": prompts through the tokenizer's chat template (instruct models); "raw": the
    # ShopBench prefix and question as plain text, the answer and EOS after it (base models;
    # the Shopping MMLU scripts' own protocol).
    prompt_format: str = "chat"
    # "nf4": the base loaded in 4 bits (bitsandbytes NormalFloat4, double-quantised; matmuls
    # in train.precision) with the LoRA on top, as in QLoRA; "none": the base in
    # train.precision. A trial's own evaluation answers with the 4-bit model; `evaluate`
    # and `export` load the base unquantised.
    quantization: str = "none"


@dataclass
class LoraConfig:
    rank: int = 8  # LoRA rank r: the adapter's capacity
    alpha: float = 16.0  # scaling numerator: the update is scaled by alpha / rank
    dropout: float = 0.0  # dropout on the LoRA input
    # Module names to adapt; ["all-linear"] adapts every linear layer but the output head.
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    use_rslora: bool = False  # rank-stabilised scaling alpha / sqrt(rank) instead of alpha / rank
    use_dora: bool = False  # weight-decomposed LoRA (DoRA): magnitude + direction
    # How the capacity is laid out (ecomtrain.experts): "single", one LoRA; "per-capability"
    # or "per-task", one LoRA per capability (or task family) the trial trains, each record
    # routed to its own by its label; "moe", `experts` LoRA experts mixed per token by a
    # learned router.
    shape: str = "single"
    experts: int = 4  # moe: the number of LoRA experts
    # Split `rank` among the experts (rank // experts each, at least 1), so a routed shape
    # has the trainable parameters of one LoRA of rank `rank` (moe: plus a router of
    # `rank` weights per module, under 1 % at real widths); false: every expert has `rank`.
    match_params: bool = False


def peft_targets(modules: list[str]) -> str | list[str]:
    """`lora.target_modules` as PEFT takes them: ["all-linear"] is its string "all-linear"."""
    return "all-linear" if modules == ["all-linear"] else modules


@dataclass
class SourceConfig:
    """A data set of another shape, mapped to ShopBench records (`data.sources`)."""

    path: str = ""  # a file (JSON Lines, JSON array, CSV, Parquet) or "hf:owner/name[:split]"
    format: str = ""  # "jsonl", "json", "csv" or "parquet"; empty: from the file's extension
    # The question: a column, or a template over the columns ("Query: {query}\nTitle: {title}")
    input: str = ""
    output: str = ""  # the answer's column (not for multiple choice with `answer`)
    # Multiple choice: the column with the list of choices, or "a|b|c" for the same choices
    # in every row (rendered numbered from 0)
    options: str = ""
    answer: str = ""  # multiple choice: the right choice's column (its index, or its text)
    task: str = ""  # the task: a built-in family, or a name of your own
    task_type: str = ""  # a task of your own: its task type (a built-in family has its own)
    metric: str = ""  # empty: the family's, else the task type's first
    capability: str = ""  # a task of your own: its capability
    limit: int = 0  # at most this many records from the source (0: all)


@dataclass
class DataConfig:
    # Corpus files (ShopBench JSON Lines, JSON arrays such as EC-Guide's, generated files);
    # "demo" is the built-in corpus; "hf:owner/name[:split]" loads a hub dataset once.
    corpus: list[str] = field(default_factory=lambda: ["demo"])
    # Task families (built-in, or tasks of the user's own the corpus holds) or capabilities
    # to train on; empty means every task in the corpus.
    tasks: list[str] = field(default_factory=list)
    # File name or glob -> task family (built-in, or a name of the user's own) for records
    # without task_name; unmatched records are assigned by the families' recognisers
    # (ecomtrain/tasks.py), else make a task of their own named after their file.
    file_tasks: dict[str, str] = field(default_factory=dict)
    # Data sets of other shapes (instruction sets, session logs, query-product relevance),
    # each mapped to ShopBench records by column names or a template (SourceConfig).
    sources: list[SourceConfig] = field(default_factory=list)
    # File name or glob -> capability of the records of tasks of the user's own (a task_name
    # that is no built-in family, or a file's records no recogniser claims) that carry no
    # capability or track; without one their capability is "unknown".
    file_capabilities: dict[str, str] = field(default_factory=dict)
    eval_fraction: float = 0.15  # share of each task held out (by a hash of the normalised input)
    # Held-out records scored per task (the first in the order of a hash of their input);
    # 0: all of them. With eval.target_se set, an upper bound on what it asks for.
    max_eval_per_task: int = 8
    max_chars: int = 20000  # longest input_field or answer a record may have, in characters
    # Share of bad records a run tolerates: they are written to `rejects` and counted;
    # above it the run stops with the report. 0: any bad record stops the run.
    max_bad_fraction: float = 0.0
    rejects: str = "rejects.jsonl"  # JSON Lines of bad records (relative: to the working dir)
    # Eval files (e.g. the KDD dev set) or Shopping MMLU folders no training record may
    # overlap: equal normalised input, or a shared word n-gram that is not prompt template.
    # Overlapping ones are dropped.
    decontaminate: list[str] = field(default_factory=list)
    ngram: int = 13  # n of the word n-grams compared by decontamination
    # Mixture: p(task) ~ capability weight * task weight * min(n, max_per_task) ** (1/temperature),
    # n = the task's training records; an epoch holds sum(min(n, max_per_task)) records.
    temperature: float = 1.0  # 1: proportional to size; larger flattens towards uniform
    max_per_task: int = 0  # cap on a task's size in the mixture; 0: no cap
    capability_weights: dict[str, float] = field(default_factory=dict)  # capability -> weight
    task_weights: dict[str, float] = field(default_factory=dict)  # family -> weight (default 1)
    # Share of every epoch drawn from the out-of-domain tasks (capability "ood": the built-in
    # "ood" corpus, or files and records labelled so); the epoch's size stays that of the
    # e-commerce tasks alone. 0: out-of-domain tasks are not trained on. Never evaluated.
    ood_fraction: float = 0.0
    # A task kept below its size (max_per_task, weights): "rotate" keeps another part of it
    # each epoch, so every record comes round; "fixed" the same part every epoch, so its
    # unique records are its share of an epoch (an equal record budget per task).
    downsample: str = "rotate"
    # Training records kept by provenance: "curated", "synthetic" (written by
    # ecomtrain.generate, or labelled so) or "both"; with data.max_per_task it compares the
    # two at an equal record budget per task (with data.downsample: fixed, in unique
    # records). Held-out records are kept whatever it says (see eval.provenance).
    provenance: str = "both"
    # File name or glob -> provenance ("curated" or "synthetic") of its records that carry
    # none (e.g. a GPT-written instruction set: synthetic); unmatched ones are curated.
    file_provenance: dict[str, str] = field(default_factory=dict)
    # Tokens per packed training sequence; an over-long record loses the start of its prompt,
    # one whose answer alone does not fit is dropped (counted and logged).
    max_seq_len: int = 2048
    pack_window: int = 1024  # records packed together (first-fit decreasing by length)
    seed: int = 0  # seed of the data order and of the mixture's sampling


@dataclass
class TrainConfig:
    # Ray Train workers per trial. `[min, max]` makes the trial elastic: it starts with as
    # many as the cluster offers (at least min), goes on with fewer when a node is lost
    # instead of waiting, and grows back when capacity returns (cluster/README.md, "Elastic
    # workers"); it is read into `min_workers` and `num_workers` (the max).
    num_workers: int = 2
    min_workers: int = 0  # elastic: the fewest workers a trial runs with; 0: fixed at num_workers
    # elastic: how often (seconds) Ray Train looks for room to grow a running trial back
    resize_check_s: float = 60.0
    use_gpu: bool = False  # one GPU per worker, NCCL; else CPU workers with gloo
    cpus_per_worker: float = 1.0
    # Custom Ray resources each worker also takes (e.g. {trainer: 1} with one `trainer` per
    # node: one worker per node, on the nodes that offer it)
    worker_resources: dict[str, float] = field(default_factory=dict)
    # How a trial's workers spread over nodes: PACK (fewest nodes), SPREAD, STRICT_SPREAD
    # (one per node) or STRICT_PACK (one node)
    placement_strategy: str = "PACK"
    zero_stage: int = 2  # DeepSpeed ZeRO stage (0, 1, 2 or 3)
    micro_batch_size: int = 8  # sequences per worker per step
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 30  # optimizer steps per trial
    lr: float = 1e-3  # peak learning rate (AdamW)
    warmup_steps: int = 3  # linear warmup, then cosine decay to 10 % of lr
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    log_every: int = 5  # report training metrics every N steps (at most every Ray Train poll)
    eval_every: int = 0  # evaluate and checkpoint every N steps; 0: only at the end
    seed: int = 0  # seed of LoRA initialisation
    precision: str = "fp32"  # "bf16", "fp16" or "fp32" (bf16/fp16 need a GPU)
    offload_optimizer: bool = False  # ZeRO: keep optimizer states in host memory
    offload_params: bool = False  # ZeRO-3: keep parameters in host memory
    gradient_checkpointing: bool = False  # recompute activations in backward to save memory
    # torch.compile the model for its training steps (DeepSpeed's engine.compile; the first
    # steps take the compile time); evaluation runs it eagerly (new shapes at every call)
    compile: bool = False
    keep_checkpoints: int = 2  # checkpoints (taken at each evaluation) kept per run, best by score
    max_failures: int = 0  # worker failures to recover from, resuming from the last checkpoint

    @property
    def elastic(self) -> bool:
        """Whether the number of workers may change during a trial (num_workers: [min, max])."""
        return 0 < self.min_workers < self.num_workers


@dataclass
class EvalConfig:
    # Task families or capabilities every trial is scored on (held-out split); empty: all.
    tasks: list[str] = field(default_factory=list)
    # Held-out records scored, by provenance: "curated" scores against curated answers only
    # (a data.provenance comparison should), "synthetic", or "both".
    provenance: str = "both"
    max_new_tokens: int = 24  # generation budget for non-multiple-choice tasks
    # Size the held-out sample so the score's standard error is at most this for any
    # per-record scores in [0, 1], where the data allow (0: data.max_eval_per_task records
    # per task). The log and the report print the bound reached and the measured error.
    target_se: float = 0.0
    # Part of each task's held-out sample, chosen by a salted hash of the record
    # (evaluate.held_out.part_of), kept for claims about the selected best: trials are
    # ranked and stopped on the rest (score, track/*), this part only scores confirm/*.
    # 0: no confirmation sample. docs/statistics-method.md says why.
    confirm_fraction: float = 0.25
    # `sweep --plan`: the seed-to-seed SD of a trial's score to plan with (0: training
    # noise not counted), and the smallest cell-vs-cell difference the sweep should detect
    # at 80 % power (0: no target; else the plan says the records or seeds it needs).
    seed_sd: float = 0.0
    target_mde: float = 0.0
    batch_size: int = 16  # prompts per generate() call
    # Prepend the official ShopBench prompt prefix at training and evaluation time.
    prompt_prefix: bool = True
    # Extra eval files or Shopping MMLU folders (e.g. the KDD Cup dev set) every evaluation
    # also scores, whole, by each record's own labels (any task name; its track), reported
    # as extra/score, extra/track/*, extra/task/*.
    extra_files: list[str] = field(default_factory=list)
    # Generation budget on the extra eval files: ShopBench's 100 by default, so their scores
    # compare with the leaderboard's (multiple choice always gets 1 token).
    extra_max_new_tokens: int = 100
    # Sample held-out answers (task, input, gold, answer, score) logged to W&B as a
    # `predictions` table at every evaluation, spread over the tasks; 0: none.
    predictions: int = 16


@dataclass
class SweepConfig:
    name: str = "demo"  # Tune experiment name; also the W&B group
    # Subset id -> task families or capabilities it trains on.
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
    # Capability ladder: subsets "ladder-k" add these capabilities one at a time, in order.
    ladder: list[str] = field(default_factory=list)
    # Subtask inclusion: for each capability named, one subset per family leaving it out
    # of the full task set ("without-<family>").
    leave_one_out: list[str] = field(default_factory=list)
    random_subsets: int = 0  # random subsets of families to add to the space
    random_min_per_capability: int = 1  # each random subset covers every capability this often
    random_max_tasks: int = 0  # at most this many families per random subset (0: no cap)
    ranks: list[int] = field(default_factory=lambda: [4, 16])  # LoRA ranks crossed with subsets
    # Replicates: every point of the space runs once per seed (train.seed and data.seed, so
    # LoRA initialisation and data order); the report's intervals then include seed noise.
    # Empty: one run per point with the configured seeds.
    seeds: list[int] = field(default_factory=list)
    # lora.alpha per trial: "scale" = alpha_per_rank * rank; "fixed" = lora.alpha;
    # "rslora" = lora.alpha with rank-stabilised scaling (alpha / sqrt(rank)).
    alpha_rule: str = "scale"
    alpha_per_rank: float = 2.0
    # Further dimensions by dotted config path, e.g. {"train.lr": [1e-4, 3e-4]}.
    params: dict[str, list] = field(default_factory=dict)
    # "grid" (every point), "random" (num_samples points), or "optuna" (num_samples points
    # chosen by Optuna's TPE from the scores so far; needs `pip install optuna`).
    search: str = "grid"
    num_samples: int = 1  # grid: repeats of the grid; random and optuna: trials
    seed: int = 0  # seed of random subsets
    scheduler: str = "fifo"  # "fifo" runs every trial out; "asha" stops weak ones early
    # The objective trials are ranked on, by Tune's searchers, ASHA, checkpoint retention and
    # the report: "score" (the held-out split), "extra/score" (the extra eval files, e.g. the
    # KDD Cup dev set), or one capability of either: "track/<capability>",
    # "extra/track/<capability>".
    metric: str = "score"
    # What ASHA decides on at each evaluation: "metric" (sweep.metric, higher is better),
    # "eval_loss" (the held-out answer-token loss, lower is better; smooth, but pooled over
    # every task, also those a trial never trained on) or "eval_likelihood" (each record's
    # reference likelihood in the score's task -> track -> overall weighting; higher is
    # better; smooth, but it favours subsets that cover more tasks: README, "bench asha").
    stop_metric: str = "metric"
    # Trial launch order: -1 keeps the space's order; N shuffles it with seed N (under ASHA
    # the trials launched first set the bar, so the order matters).
    launch_seed: int = -1
    grace_period: int = 100  # ASHA: steps before a trial can be stopped (align with eval_every)
    reduction_factor: int = 2  # ASHA: keep the top 1/reduction_factor at each rung
    max_concurrent_trials: int = 1  # trials running at once (0: as many as resources allow)
    # Custom Ray resources each trial's driver (and so its Ray Train controller) also takes,
    # e.g. {driver: 0.01} with `--resources '{"driver": 100}'` on an on-demand head only:
    # losing a spot node then never takes a trial's driver with it
    driver_resources: dict[str, float] = field(default_factory=dict)
    output: str = "runs"  # where the sweep writes everything (overridden by --output)


@dataclass
class WandbConfig:
    project: str = "ecomtrain"
    # "auto": online when WANDB_API_KEY is set, else offline; or "online", "offline", "disabled".
    mode: str = "auto"
    entity: str = ""  # W&B team or user; empty uses the account default


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)


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


# Fields whose value must be one of a fixed set.
CHOICES = {
    ("model", "attn_implementation"): ("sdpa", "flash_attention_2"),
    ("model", "prompt_format"): PROMPT_FORMATS,
    ("model", "quantization"): ("none", "nf4"),
    ("data", "provenance"): (*PROVENANCES, "both"),
    ("lora", "shape"): LORA_SHAPES,
    ("data", "downsample"): ("rotate", "fixed"),
    ("eval", "provenance"): (*PROVENANCES, "both"),
    ("train", "zero_stage"): (0, 1, 2, 3),
    ("train", "placement_strategy"): ("PACK", "SPREAD", "STRICT_SPREAD", "STRICT_PACK"),
    ("train", "precision"): ("bf16", "fp16", "fp32"),
    ("wandb", "mode"): ("auto", "online", "offline", "disabled"),
    ("sweep", "alpha_rule"): ("scale", "fixed", "rslora"),
    ("sweep", "search"): ("grid", "random", "optuna"),
    ("sweep", "scheduler"): ("fifo", "asha"),
    ("sweep", "stop_metric"): ("metric", "eval_loss", "eval_likelihood"),
}


def _at_least(low):
    return lambda v: v >= low, f"must be >= {low}"


# Fields whose value must lie in a range: (test, what it must be).
LIMITS = {
    ("lora", "rank"): _at_least(1),
    ("lora", "dropout"): (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    ("lora", "experts"): _at_least(2),
    ("data", "eval_fraction"): (lambda v: 0 < v < 1, "must be in (0, 1)"),
    ("data", "max_eval_per_task"): _at_least(0),
    ("data", "max_chars"): _at_least(1),
    ("data", "max_bad_fraction"): (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    ("data", "ngram"): _at_least(1),
    ("data", "max_seq_len"): _at_least(8),
    ("data", "pack_window"): _at_least(1),
    ("data", "ood_fraction"): (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    ("train", "num_workers"): _at_least(1),
    ("train", "min_workers"): _at_least(0),
    ("train", "resize_check_s"): (lambda v: v >= 0, "must be >= 0"),
    ("train", "cpus_per_worker"): (lambda v: v > 0, "must be > 0"),
    ("train", "micro_batch_size"): _at_least(1),
    ("train", "grad_accum"): _at_least(1),
    ("train", "max_steps"): _at_least(1),
    ("train", "lr"): (lambda v: v > 0, "must be > 0"),
    ("train", "warmup_steps"): _at_least(0),
    ("train", "log_every"): _at_least(1),
    ("train", "eval_every"): _at_least(0),
    ("train", "keep_checkpoints"): _at_least(1),
    ("train", "max_failures"): _at_least(0),
    ("eval", "max_new_tokens"): _at_least(1),
    ("eval", "batch_size"): _at_least(1),
    ("eval", "target_se"): _at_least(0),
    ("eval", "confirm_fraction"): (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    ("eval", "seed_sd"): _at_least(0),
    ("eval", "target_mde"): _at_least(0),
    ("eval", "extra_max_new_tokens"): _at_least(1),
    ("sweep", "metric"): (
        lambda v: v in METRICS,
        f"is not a metric ({', '.join(METRICS[:2])}, [extra/]track/<capability>)",
    ),
    ("sweep", "ranks"): (lambda v: v and min(v) >= 1, "must be a non-empty list of ranks >= 1"),
    ("sweep", "num_samples"): _at_least(1),
    ("sweep", "grace_period"): _at_least(1),
    ("sweep", "reduction_factor"): _at_least(2),
    ("sweep", "max_concurrent_trials"): _at_least(0),
}
_PATH_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=-]*")  # becomes a folder name
TASK_NAME = _PATH_SAFE  # a task of the user's own: its name is in metric names and W&B keys


def check_values(cfg: Config, source: str) -> Config:
    """Reject values outside a field's choices or range, unknown task names, missing files,
    unsafe names and bad sweep dimensions, naming the key and the file."""
    for (section, key), allowed in CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise ConfigError(f"{source}: {section}.{key}: {value!r} is not one of {allowed}")
    for (section, key), (ok, what) in LIMITS.items():
        value = getattr(getattr(cfg, section), key)
        if not ok(value):
            raise ConfigError(f"{source}: {section}.{key}: {value!r} {what}")
    for where, name in [("sweep.name", cfg.sweep.name)] + [
        (f"sweep.subsets key {k!r}", k) for k in cfg.sweep.subsets
    ]:
        if not _PATH_SAFE.fullmatch(name) or ".." in name:
            raise ConfigError(
                f"{source}: {where}: {name!r} becomes a folder name: use letters, digits and "
                "_ . + = - only, no '..'"
            )
    _check_tasks(cfg, source)
    _check_elastic(cfg.train, source)
    if cfg.sweep.scheduler == "asha" and cfg.sweep.grace_period > cfg.train.max_steps:
        raise ConfigError(
            f"{source}: sweep.grace_period: {cfg.sweep.grace_period} is past "
            f"train.max_steps ({cfg.train.max_steps}): ASHA's first rung would never come"
        )
    if cfg.lora.use_dora and cfg.lora.shape != "single":
        raise ConfigError(
            f"{source}: lora.use_dora: DoRA is for lora.shape single only (its magnitude "
            f"vector belongs to one adapter), not {cfg.lora.shape}"
        )
    for i, s in enumerate(cfg.data.sources):
        _check_source(s, f"{source}: data.sources[{i}]")
    _check_quantization(cfg, source)
    _check_params(cfg, source)
    return cfg


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


def _check_elastic(t: TrainConfig, source: str) -> None:
    """An elastic trial's range of workers, and a ZeRO stage whose checkpoints any number of
    workers can load."""
    if t.min_workers > t.num_workers:
        raise ConfigError(
            f"{source}: train.num_workers: [{t.min_workers}, {t.num_workers}]: the fewest "
            "workers must not exceed the most"
        )
    if t.elastic and t.zero_stage != 0:
        raise ConfigError(
            f"{source}: train.num_workers: [{t.min_workers}, {t.num_workers}] (elastic) needs "
            f"train.zero_stage 0, not {t.zero_stage}: DeepSpeed reloads a ZeRO checkpoint "
            "only at the number of workers that saved it (its optimizer state is cut into one "
            "part per worker). A LoRA adapter's optimizer state is small, so ZeRO-1/2 save "
            "little memory; ZeRO-3 (the frozen base cut up too) cannot be elastic"
        )


def _check_source(s: SourceConfig, where: str) -> None:
    """A mapped source names its file, its task and enough columns to make a record."""
    family = FAMILIES.get(s.task)
    task_type = family.task_type if family else s.task_type
    problems = [
        ("path", not s.path, "the file or hf: data set to read"),
        (
            "format",
            s.format not in ("", *SOURCE_FORMATS),
            "jsonl, json, csv or parquet",
        ),
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
        ("limit", s.limit < 0, ">= 0"),
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
    """`sweep.params`: each key a config path, each value of the right type and range."""
    for key, values in cfg.sweep.params.items():
        if not values:
            raise ConfigError(f"{source}: sweep.params.{key}: needs at least one value")
        if key.partition(".")[0] == "sweep":
            raise ConfigError(f"{source}: sweep.params.{key}: the sweep's own keys are not swept")
        for i, value in enumerate(values):
            raw = to_dict(cfg)
            raw["sweep"]["params"] = {}
            set_path(raw, key, value)
            check_values(build(Config, raw, f"{source}: sweep.params.{key}[{i}]", ""), source)


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
    """Recursively turn a dict into dataclass `cls`, rejecting unknown keys and wrong types."""
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
    return cls(**values)


def check_type(value, hint, source: str, where: str):
    """Check `value` against a simple type hint; ints are accepted where floats are."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
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
    return getattr(hint, "__name__", None) or str(hint)


def to_dict(cfg) -> dict:
    """Plain nested dict of a config (for Ray, W&B and YAML dumps)."""
    return dataclasses.asdict(cfg)


def config_yaml(cfg: Config) -> str:
    """A config as the YAML a sweep saves: every key, in its sections' order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def from_dict(raw: dict) -> Config:
    """Inverse of `to_dict` (used on workers and in Tune trials)."""
    return build(Config, raw, "<config dict>", "")
