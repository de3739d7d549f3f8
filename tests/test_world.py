"""The shopping world: valid records, unique inputs, the planted structure as declared; its
effects of known size; other sizes and seeds; a base model that read none of its held-out
records."""

import json
import re
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from ecomtrain import base_model
from ecomtrain.config import CONFIGS, Config, ConfigError, DataConfig, load_config
from ecomtrain.data.corpus import (
    BUILTIN_EVAL_FRACTION_MAX,
    Builtin,
    builtin_corpus,
    check_files,
    resolve_corpus,
)
from ecomtrain.data.mixture import targets
from ecomtrain.data.overlap import exact_key
from ecomtrain.data.records import (
    CorpusError,
    assign_family,
    problem,
    provenance_of,
    render_answer,
)
from ecomtrain.data.scan import parse_file
from ecomtrain.data.world import (
    ACCESSORIES,
    ARMS,
    CATEGORIES,
    CONTROL,
    DEFAULT_PRODUCTS,
    EFFECT_TARGETS,
    GENERATORS,
    MAX_PRODUCTS,
    MIN_PRODUCTS,
    PER_CATEGORY,
    RULE_CATEGORIES,
    STOCK,
    SUMMARY_STYLES,
    SYNTHETIC_NOISE,
    TRANSFER,
    catalogue,
    rule,
    world_effect_records,
    world_records,
    world_synthetic_records,
)
from ecomtrain.tasks import CAPABILITIES, FAMILIES
from tuning.space import grid_points, trial_config

PER_PRODUCT = len(GENERATORS) - 1 + len(SUMMARY_STYLES)  # records of one product


@pytest.fixture(scope="module")
def records():
    return world_records()


def test_twelve_families_over_four_capabilities_all_valid(records):
    assert len(GENERATORS) >= 12
    assert {FAMILIES[f].capability for f in GENERATORS} == set(CAPABILITIES)
    assert all(problem(r) is None for r in records)
    assert all(assign_family(r, "world.jsonl", {}, {})[0] == r["task_name"] for r in records)
    per_family = Counter(r["task_name"] for r in records)
    products = len(catalogue().products)
    assert per_family.pop("product_summarization") == len(SUMMARY_STYLES) * products
    assert set(per_family.values()) == {products}


def test_inputs_are_unique_within_a_family(records):
    """Equal inputs always fall on the same side of the held-out split."""
    keys = Counter((r["task_name"], exact_key(r["input_field"])) for r in records)
    assert max(keys.values()) == 1


def test_the_world_is_deterministic_and_sized():
    assert world_records(100) == world_records(100)
    assert len(world_records(100)) == 100 * PER_PRODUCT
    with pytest.raises(ValueError, match="at least"):
        catalogue(MIN_PRODUCTS - 1)
    with pytest.raises(ValueError, match="at most"):
        catalogue(MAX_PRODUCTS + 1)
    assert len({p.name for p in catalogue(MAX_PRODUCTS).products}) == MAX_PRODUCTS


@pytest.mark.parametrize("seed", range(5))
def test_the_smallest_world_has_every_list_its_families_need(seed):
    """At the minimum size a random draw can leave a category with too few products for a
    session's lists; every category gets enough."""
    per_category = Counter(p.category for p in catalogue(MIN_PRODUCTS, seed).products)
    assert min(per_category[c] for c in CATEGORIES) >= PER_CATEGORY
    assert len(world_records(MIN_PRODUCTS, seed)) == MIN_PRODUCTS * PER_PRODUCT


def test_planted_facts_are_taught_by_one_family_and_asked_by_others(records):
    """Each product's material, category and brand appear in its summary's answer and in no
    question; the families declared to need them ask about the product by name only."""
    cat = catalogue()
    facts = {p.name: (p.material, p.category, p.brand) for p in cat.products}
    for r in records:
        found = {n: re.search(rf"\b{n}\b", r["input_field"]) for n in facts}
        name = min((m.start(), n) for n, m in found.items() if m)[1]  # the first named
        material, category, brand = facts[name]
        answer = render_answer(r)
        if r["task_name"] == "product_summarization":
            assert all(f in answer for f in facts[name])
        if r["task_name"] in TRANSFER["product_summarization"]:
            question = r["input_field"].split("\n")[0]
            assert not re.search(rf"\b({material}|{brand})\b", question)
    assert CONTROL not in {f for users in TRANSFER.values() for f in users} | set(TRANSFER)


def test_the_control_needs_only_its_own_input(records):
    """review_rating's answer follows from the rating word in its own input."""
    for r in (r for r in records if r["task_name"] == CONTROL):
        stars = ["awful", "weak", "fine", "great", "superb"]
        word = next(w for w in stars if f"it is {w}." in r["input_field"])
        options = r["input_field"].split("\n")[1:-1]
        assert options[r["output_field"]].endswith(str(stars.index(word) + 1))


def test_the_synthetic_twin_is_valid_generated_and_wrong_at_its_rate(records):
    twin = world_synthetic_records()
    assert len(twin) == len(records) and all(problem(r) is None for r in twin)
    assert all(provenance_of(r, "x.jsonl", {}) == "synthetic" for r in twin)
    assert not {r["input_field"] for r in twin} & {r["input_field"] for r in records}
    for family in GENERATORS:
        pairs = [(a, b) for a, b in zip(twin, records, strict=True) if b["task_name"] == family]
        wrong = sum(a["output_field"] != b["output_field"] for a, b in pairs) / len(pairs)
        assert abs(wrong - SYNTHETIC_NOISE) < 0.1, (family, wrong)


# --- effects of known size (world-effects) ---------------------------------------------------


@pytest.fixture(scope="module")
def effects():
    return world_effect_records()


def held_out(records: list[dict], family: str) -> list[dict]:
    return [r for r in records if r["task_name"] == family and r["split"] == "eval"]


@pytest.mark.parametrize("size, seed", [(DEFAULT_PRODUCTS, 0), (DEFAULT_PRODUCTS, 1), (80, 5)])
def test_every_constant_answer_scores_exactly_chance_on_each_scored_family(size, seed):
    records = world_effect_records(size, seed)
    assert all(problem(r) is None for r in records)
    for family in EFFECT_TARGETS:
        answers = [r["output_field"] for r in held_out(records, family)]
        for constant in range(len(ACCESSORIES)):
            assert Fraction(answers.count(constant), len(answers)) == Fraction(1, 4), family


def test_held_out_sets_are_sized_for_the_effect_and_scale_with_the_world(effects):
    """200 held-out records per scored family: a paired 95 % half-width of about 0.08."""
    for family in EFFECT_TARGETS:
        assert len(held_out(effects, family)) >= 200
    bigger = world_effect_records(2 * DEFAULT_PRODUCTS)
    assert len(held_out(bigger, "accessory_rule")) == 2 * len(held_out(effects, "accessory_rule"))
    keys = Counter((r["task_name"], exact_key(r["input_field"])) for r in bigger)
    assert max(keys.values()) == 1  # inputs unique within a family, as in the world


def stated(records: list[dict], family: str) -> dict[str, set[str]]:
    """category -> the accessories a family's records give it."""
    out: dict[str, set[str]] = {}
    for r in (r for r in records if r["task_name"] == family):
        category = next(c for c in RULE_CATEGORIES if f" {c} for " in r["input_field"])
        out.setdefault(category, set()).add(ACCESSORIES[r["output_field"]])
    return out


@pytest.mark.parametrize("seed", [0, 3])
def test_each_arm_states_its_share_of_the_held_out_pairs_rightly(seed):
    """Each arm's source states 8 pairs in as many records (the same dilution in every arm):
    the trained categories only (none), or every held-out category with 1/4, 5/8, all or
    none of them right (chance, half, all, sham); the target trains on the other categories
    only, and the recall family asks about exactly those."""
    records, r = world_effect_records(DEFAULT_PRODUCTS, seed), rule(seed)
    truth = {c: r.accessory(c) for c in RULE_CATEGORIES}
    assert Counter(truth.values()) == dict.fromkeys(ACCESSORIES, 4)
    assert Counter(truth[c] for c in r.held) == dict.fromkeys(ACCESSORIES, 2)
    assert stated(records, "accessory_rule") == {c: {truth[c]} for c in RULE_CATEGORIES}
    assert stated(records, "accessory_recall") == {c: {truth[c]} for c in r.trained}
    splits = {
        (c in r.held, x["split"])
        for x in records
        if x["task_name"] == "accessory_rule"
        for c in RULE_CATEGORIES
        if f" {c} for " in x["input_field"]
    }
    assert splits == {(True, "eval"), (False, "train")}
    coverage = {}
    for name, arm in ARMS.items():
        pairs = stated(records, arm.family)
        assert len(pairs) == 8 and all(len(v) == 1 for v in pairs.values())
        assert {c: v.pop() for c, v in pairs.items()} == dict(arm.pairs(r))
        held = [(c, a) for c, a in arm.pairs(r) if c in r.held]
        coverage[name] = (sum(truth[c] == a for c, a in held), sum(truth[c] != a for c, a in held))
        assert all(truth[c] == a for c, a in arm.pairs(r) if c in r.trained)
        assert {x["split"] for x in records if x["task_name"] == arm.family} == {"train"}
        # a constant guess on the held-out categories the arm does not state scores chance
        left = [
            x["output_field"]
            for x in held_out(records, "accessory_rule")
            if not any(f" {c} for " in x["input_field"] for c, _ in held)
        ]
        for constant in range(len(ACCESSORIES)):
            assert not left or Fraction(left.count(constant), len(left)) == Fraction(1, 4)
    want = {"none": (0, 0), "chance": (2, 6), "half": (5, 3), "all": (8, 0), "sham": (0, 8)}
    assert coverage == want
    sizes = {sum(x["task_name"] == arm.family for x in records) for arm in ARMS.values()}
    assert len(sizes) == 1  # the same dilution in every arm
    predicted = {name: arm.predicted() for name, arm in ARMS.items()}
    assert predicted == {"none": 0.25, "chance": 0.25, "half": 0.625, "all": 1.0, "sham": 0.0}


def test_the_control_answers_from_its_own_input(effects):
    for r in (r for r in effects if r["task_name"] == "stock_status"):
        phrase = next(p for p in STOCK if f"'{p}'" in r["input_field"])
        assert list(STOCK.values())[r["output_field"]] == STOCK[phrase]


# --- world:N@SEED -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry, want",
    [
        ("world", Builtin("world", DEFAULT_PRODUCTS, 0)),
        ("world:100", Builtin("world", 100, 0)),
        ("world@3", Builtin("world", DEFAULT_PRODUCTS, 3)),
        ("world-effects:480@12", Builtin("world-effects", 480, 12)),
        ("world-synthetic@1", Builtin("world-synthetic", DEFAULT_PRODUCTS, 1)),
        ("demo:30@2", Builtin("demo", 30, 2)),
        ("worlds.jsonl", None),
        ("data/world@1.jsonl", None),
    ],
)
def test_a_built_in_corpus_names_its_size_and_seed(entry, want):
    assert builtin_corpus(entry) == want


@pytest.mark.parametrize(
    "entry, message",
    [
        ("world@one", "with SEED a whole number >= 0, got 'one'"),
        ("world@-1", "with SEED a whole number >= 0, got '-1'"),
        ("world@", "with SEED a whole number >= 0, got ''"),
        ("world:ten", "with N a whole number (the size), got 'ten'"),
        ("world:50@1", "size 50 is out of range (world:N takes 80 to 2000)"),
        ("world-effects:3000", "size 3000 is out of range"),
        ("demo:0", "size 0 is out of range (demo:N takes at least 1)"),
    ],
)
def test_a_bad_size_or_seed_is_a_config_error_before_any_cluster(entry, message):
    with pytest.raises(CorpusError, match=re.escape(message)):
        builtin_corpus(entry)
    cfg = Config()
    cfg.data.corpus = ["demo", entry]
    with pytest.raises(ConfigError, match=re.escape(f"my.yaml: data.corpus[1]: {entry}: ")):
        check_files(cfg, "my.yaml")


def test_another_seed_is_another_world_and_each_is_deterministic():
    assert world_records(100, 3) == world_records(100, 3)
    assert world_records(100, 3) != world_records(100, 0)
    assert world_effect_records(100, 3) == world_effect_records(100, 3)
    assert {rule(s) for s in range(6)} != {rule(0)}  # the rule changes with the seed
    files = resolve_corpus(["world:100@3", "world:100", "world-effects@3"])
    assert len(set(files)) == 3 and resolve_corpus(["world:100@3"])[0] == files[0]
    written = [json.loads(line) for line in Path(files[0]).read_text().splitlines()]
    assert written == world_records(100, 3)


def test_a_built_in_corpus_is_held_out_at_most_half():
    """The offline base read the questions the built-in corpora keep in training at any
    data.eval_fraction up to BUILTIN_EVAL_FRACTION_MAX."""
    cfg = Config()
    cfg.data.corpus, cfg.data.eval_fraction = ["world@2"], BUILTIN_EVAL_FRACTION_MAX
    check_files(cfg, "my.yaml")
    cfg.data.eval_fraction = 0.6
    with pytest.raises(ConfigError, match=r"data.eval_fraction: 0.6 holds out more than 0.5"):
        check_files(cfg, "my.yaml")


# --- no leak into the tiny base ---------------------------------------------------------------

# Corpora and held-out shares a sweep may evaluate on: other sizes and seeds too.
EVALUATED = ["demo", "demo:200@1", "world", "world:480@1", "world@2", "world-synthetic@1"]
EVALUATED += ["world-effects", "world-effects@1", "world-effects:960@4", "ood"]


def held_out_inputs(entry: str, fraction: float) -> set[str]:
    path = resolve_corpus([entry])[0]
    rows = parse_file(path, None, DataConfig(eval_fraction=fraction), None)
    return {exact_key(r["input"]) for r in rows if isinstance(r, dict) and r["split"] == "eval"}


def test_the_tiny_base_reads_no_held_out_record(tmp_path, monkeypatch):
    """What `pretrain` is given, and what the tokenizer is trained on, holds no held-out input of
    any built-in corpus at any size, seed or data.eval_fraction a config may set, nor of the
    shipped configs' held-out splits."""
    read: list[str] = []

    def pretrain(model, tokenizer, texts, seed, steps=300):
        read.extend(texts)
        return 0.0

    monkeypatch.setattr(base_model, "pretrain", pretrain)
    base_model.build_tiny_llama(tmp_path / "base")
    seen = {exact_key(t) for t in read}
    # the tokenizer is trained on these records' inputs and answers
    assert seen == {exact_key(r["input_field"]) for r in base_model.pretraining_records()}
    assert len(seen) > 1000
    for entry in EVALUATED:
        for fraction in (0.05, 0.15, BUILTIN_EVAL_FRACTION_MAX):
            assert not seen & held_out_inputs(entry, fraction), (entry, fraction)
    for path in sorted(CONFIGS.glob("*.yaml")):
        cfg = load_config(path)
        for entry in cfg.data.corpus:
            if builtin_corpus(entry):
                leak = seen & held_out_inputs(entry, cfg.data.eval_fraction)
                assert not leak, (path.name, entry)


def test_the_effects_config_trains_one_arm_a_trial_against_the_chance_arm_first():
    """configs/world-effects.yaml: every trial trains the target, the control and exactly one
    source at the same share; the first arm (the report's reference) is the chance arm."""
    cfg = load_config(CONFIGS / "world-effects.yaml")
    arms = []
    for point in grid_points(cfg):
        trial = trial_config(cfg, point)
        share = targets(dict.fromkeys(trial.data.tasks, 200), trial.data)
        trained = {t for t, v in share.items() if v > 0}
        (source,) = trained - {"accessory_rule", "stock_status"}
        assert len(trained) == 3 and len(set(share[t] for t in trained)) == 1
        arms.append(source)
    assert arms[0] == ARMS["chance"].family
    assert sorted(set(arms)) == sorted(a.family for a in ARMS.values())
    assert Counter(arms) == dict.fromkeys(set(arms), len(cfg.sweep.seeds))
    assert set(cfg.eval.tasks) == set(EFFECT_TARGETS)


def source_shares(cfg: Config) -> list[tuple[int, float]]:
    """Each trial's LoRA rank and the source's (accessory_guide_all's) share of its epoch."""
    out = []
    for point in grid_points(cfg):
        trial = trial_config(cfg, point)
        share = targets(dict.fromkeys(trial.data.tasks, 200), trial.data)
        out.append((trial.lora.rank, round(share["accessory_guide_all"] / sum(share.values()), 6)))
    return out


def test_the_mixture_config_moves_the_sources_share_from_none_to_all():
    """configs/world-mixture.yaml: the source's share of the epoch at 0, 1/4, 1/2, 3/4, 1."""
    cfg = load_config(CONFIGS / "world-mixture.yaml")
    assert [share for _, share in source_shares(cfg)] == [0, 0.25, 0.5, 0.75, 1]
    assert set(cfg.eval.tasks) == {"accessory_rule", "accessory_recall"}


def test_the_mixture_grid_crosses_sixteenths_of_the_source_with_two_ranks():
    """configs/world-mixture-grid.yaml: the source's share at 0, 1/16, ..., 1 and the
    stratified mixture (1/2 here), at ranks 2 and 8: 36 trials of world-mixture.yaml's."""
    cfg = load_config(CONFIGS / "world-mixture-grid.yaml")
    want = [k / 16 for k in range(17)] + [0.5]
    assert sorted(source_shares(cfg)) == sorted((rank, s) for rank in (2, 8) for s in want)
    mixture = load_config(CONFIGS / "world-mixture.yaml")
    for section in ("model", "lora", "data", "train", "eval"):
        assert getattr(cfg, section) == getattr(mixture, section), section
