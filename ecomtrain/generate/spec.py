"""Generation specs (configs/generate/*.yaml): typed loading, seed pools, the work plan.

A spec names a task family, an instruction, a pool of seed items and few-shot examples
whose OUTPUTS are engineered per difficulty level. The prompt never asks for "hard"
questions in words: a hard work item simply shows the model only hard examples, whose
answers and distractors carry the wanted properties, and the model imitates them.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from ecomtrain.config import ConfigError, build, read_config_file
from ecomtrain.data.corpus import read_records
from ecomtrain.data.records import CorpusError, split_options, validate
from ecomtrain.tasks import FAMILIES

SYSTEM = (
    "You write training data for an online shopping assistant. Reply with exactly one JSON "
    'object with the keys "input_field" (the question, formatted like the examples) and '
    '"output_field" (its correct answer, typed like the examples), and nothing else.'
)


@dataclass
class SeedsSpec:
    path: str = ""  # JSON Lines / JSON array file of seed items (records or catalog items)
    text_field: str = ""  # use this field of each file item as the seed text; empty: whole item
    where: dict[str, str] = field(default_factory=dict)  # keep file items whose fields equal these
    limit: int = 0  # keep at most this many file items (after `where`); 0 keeps all
    items: list = field(default_factory=list)  # inline seed items: strings or mappings


@dataclass
class Example:
    difficulty: str = ""  # a key of `mix`: the work items of that level are shown this example
    input_field: str = ""  # the question exactly as a record carries it
    output_field: object = None  # its answer, typed as the family's task_type requires
    why: str = ""  # how this output was engineered; for readers, never sent to the model


@dataclass
class DedupSpec:
    against: list[str] = field(default_factory=list)  # existing data files to stay distinct from
    threshold: float = 0.8  # estimated word-shingle Jaccard at or above which texts are duplicates
    shingle: int = 5  # words per shingle


@dataclass
class DecontamSpec:
    against: list[str] = field(default_factory=list)  # eval files (e.g. the KDD Cup dev set)
    # A shared word n-gram of content (template words set aside: ecomtrain.data.overlap)
    # marks a record contaminated; the same rule and default as data.ngram.
    ngram: int = 13


@dataclass
class Spec:
    family: str = ""  # task family (ecomtrain.tasks.FAMILIES): fixes task_type, metric, capability
    instruction: str = ""  # what the model is asked to write (never "make it hard")
    target: int = 0  # records to request
    mix: dict[str, float] = field(default_factory=dict)  # difficulty -> share of target
    examples: list[dict] = field(default_factory=list)  # Example mappings, >= 1 per difficulty
    seeds: SeedsSpec = field(default_factory=SeedsSpec)
    shots: int = 3  # examples per prompt (all of the item's difficulty, rotated)
    balance_answers: bool = True  # multiple choice: shuffle options so answer positions are even
    temperature: float = 0.7  # sampling temperature; 0 is greedy
    max_tokens: int = 512  # completion budget per request
    seed: int = 0  # seed of the plan (the order seed items are used in)
    model: str = ""  # default model for the openai backend (--model overrides)
    dedup: DedupSpec = field(default_factory=DedupSpec)
    decontaminate: DecontamSpec = field(default_factory=DecontamSpec)
    name: str = ""  # run name in provenance; default: the spec file's stem
    # Filled by load_spec, not YAML keys:
    parsed_examples: list[Example] = field(default_factory=list, repr=False)
    source: str = field(default="", repr=False)


@dataclass(frozen=True)
class WorkItem:
    key: str  # hash of the prompt (and its repeat number): the unit of resumable work
    index: int
    difficulty: str
    seed_text: str
    messages: list
    request_seed: int  # sampling seed, so repeated prompts can differ


def load_spec(path: str | Path) -> Spec:
    """Read and check a spec; errors name the file and the key."""
    path = Path(path)
    raw = read_config_file(path, "spec")
    internal = {"parsed_examples", "source"}
    if isinstance(raw, dict) and internal & set(raw):
        raise ConfigError(f"{path}: {sorted(internal & set(raw))[0]}: unknown key")
    spec = build(Spec, raw, str(path), "")
    spec.source, spec.name = str(path), spec.name or path.stem
    _check(spec, str(path))
    spec.seeds.path = _resolve(spec.seeds.path, path, "seeds.path") if spec.seeds.path else ""
    spec.dedup.against = [
        _resolve(p, path, f"dedup.against[{i}]") for i, p in enumerate(spec.dedup.against)
    ]
    spec.decontaminate.against = [
        _resolve(p, path, f"decontaminate.against[{i}]")
        for i, p in enumerate(spec.decontaminate.against)
    ]
    if spec.seeds.path and spec.seeds.path in spec.decontaminate.against:
        raise ConfigError(f"{path}: seeds.path: is an eval file named in decontaminate.against")
    return spec


def _check(spec: Spec, src: str) -> None:
    """Values that type-check but cannot make a run."""
    if spec.family not in FAMILIES:
        raise ConfigError(f"{src}: family: unknown task family {spec.family!r}")
    if not spec.instruction.strip():
        raise ConfigError(f"{src}: instruction: must be a non-empty string")
    for key in ("target", "shots", "max_tokens"):
        if getattr(spec, key) < 1:
            raise ConfigError(f"{src}: {key}: must be >= 1")
    if not spec.mix or any(v <= 0 for v in spec.mix.values()):
        raise ConfigError(f"{src}: mix: needs difficulty: share pairs with shares > 0")
    _check_examples(spec, src)
    for level in spec.mix:
        if not any(ex.difficulty == level for ex in spec.parsed_examples):
            raise ConfigError(f"{src}: mix.{level}: no example of this difficulty")
    if not spec.seeds.path and not spec.seeds.items:
        raise ConfigError(f"{src}: seeds: give a path or inline items")


def _check_examples(spec: Spec, src: str) -> None:
    """Each example is a valid record of the family (and has options when balancing)."""
    family = FAMILIES[spec.family]
    for i, raw in enumerate(spec.examples):
        ex = build(Example, raw, src, f"examples[{i}].")
        if ex.difficulty not in spec.mix:
            raise ConfigError(f"{src}: examples[{i}].difficulty: {ex.difficulty!r} not in mix")
        record = {"input_field": ex.input_field, "output_field": ex.output_field}
        record |= {"task_type": family.task_type, "metric": family.metric}
        try:
            validate(record, f"{src}: examples[{i}]")
        except CorpusError as e:
            raise ConfigError(str(e)) from None
        mcq = family.task_type == "multiple-choice"
        if spec.balance_answers and mcq and split_options(ex.input_field) is None:
            raise ConfigError(
                f"{src}: examples[{i}].input_field: no numbered option list 0..n-1 "
                "(needed by balance_answers)"
            )
        spec.parsed_examples.append(ex)


SPEC_VARIABLES = ("ECOMTRAIN_REFDATA",)  # the only variables a spec path may name
_VARIABLE = re.compile(r"\$(\{(\w+)\}|(\w+))")


def _resolve(value: str, spec_path: Path, key: str) -> str:
    """Expand $ECOMTRAIN_REFDATA (no other variable: a path must never carry a secret into an
    error message); relative paths are relative to the spec file. The file must exist."""

    def expand(m: re.Match) -> str:
        name = m[2] or m[3]
        if name not in SPEC_VARIABLES:
            raise ConfigError(
                f"{spec_path}: {key}: ${name} is not expanded in spec paths (only "
                f"{', '.join('$' + v for v in SPEC_VARIABLES)})"
            )
        if name not in os.environ:
            raise ConfigError(f"{spec_path}: {key}: ${name} is not set")
        return os.environ[name]

    p = Path(_VARIABLE.sub(expand, value))
    p = p if p.is_absolute() else spec_path.parent / p
    if not p.is_file():
        raise ConfigError(f"{spec_path}: {key}: file not found: {p}")
    return str(p.resolve())


def load_seeds(spec: Spec) -> list[str]:
    """Seed texts: file items (filtered, one field or the whole item) then inline items."""
    out: list[str] = []
    s = spec.seeds
    if s.path:
        for lineno, item in read_records(s.path):
            where = f"{s.path}:{lineno}"
            if s.where or s.text_field:
                if not isinstance(item, dict):
                    raise ConfigError(f"{where}: seed: expected an object (seeds.text_field)")
                if any(str(item.get(k)) != v for k, v in s.where.items()):
                    continue
                if s.text_field and s.text_field not in item:
                    raise ConfigError(f"{where}: {s.text_field}: missing (seeds.text_field)")
            out.append(_text(item[s.text_field] if s.text_field else item))
            if s.limit and len(out) >= s.limit:
                break
    for i, item in enumerate(s.items):
        if not isinstance(item, (str, dict)) or not item:
            raise ConfigError(f"{spec.source}: seeds.items[{i}]: expected a string or mapping")
        out.append(_text(item))
    if not out:
        raise ConfigError(f"{spec.source}: seeds: the pool is empty after filtering")
    return out


def _text(item) -> str:
    return item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)


def render_example(input_field: str, output_field) -> str:
    return json.dumps(
        {"input_field": input_field, "output_field": output_field}, ensure_ascii=False
    )


def messages_for(spec: Spec, difficulty: str, rotation: int, seed_text: str) -> list[dict]:
    """The chat prompt of one work item: instruction, the level's examples, the seed item."""
    pool = [ex for ex in spec.parsed_examples if ex.difficulty == difficulty]
    shots = [pool[(rotation + k) % len(pool)] for k in range(min(spec.shots, len(pool)))]
    shown = "\n".join(render_example(ex.input_field, ex.output_field) for ex in shots)
    user = f"{spec.instruction.strip()}\n\nExamples:\n{shown}\n\nItem:\n{seed_text}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def difficulty_order(spec: Spec) -> list[str]:
    """`target` difficulty labels in the mix's proportions at every prefix (smooth weighted
    round robin), so a rerun with a larger target extends the plan instead of changing it."""
    total = sum(spec.mix.values())
    credit = dict.fromkeys(spec.mix, 0.0)
    labels = []
    for _ in range(spec.target):
        for level, share in spec.mix.items():
            credit[level] += share / total
        pick = max(credit, key=credit.get)
        credit[pick] -= 1.0
        labels.append(pick)
    return labels


def plan(spec: Spec, seeds: list[str]) -> list[WorkItem]:
    """The run's work items: the same for the same spec and seed pool, and a larger target
    only appends items."""
    order = list(range(len(seeds)))
    random.Random(f"{spec.seed}-seeds").shuffle(order)
    rotation: dict[str, int] = {}
    repeats: dict[str, int] = {}
    items = []
    for i, level in enumerate(difficulty_order(spec)):
        seed_text = seeds[order[i % len(order)]]
        messages = messages_for(spec, level, rotation.get(level, 0), seed_text)
        rotation[level] = rotation.get(level, 0) + 1
        blob = json.dumps(messages, sort_keys=True, ensure_ascii=False)
        digest = hashlib.sha256(blob.encode("utf-8")).hexdigest()
        repeat = repeats.get(digest, 0)
        repeats[digest] = repeat + 1
        key = hashlib.sha256(f"{digest}#{repeat}".encode()).hexdigest()[:24]
        items.append(WorkItem(key, i, level, seed_text, messages, int(key[:8], 16)))
    return items
