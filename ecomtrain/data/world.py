"""The shopping world: a generated catalogue with a known structure, for sweeps whose answer
is known in advance (`data.corpus: [world]`, or `world:N` for N products).

A seeded generator builds a catalogue (products with a category, brand, material, colour and
price; category accessories; a second language, "Vellish", from a generated lexicon), then
12 task families over the four capabilities. Structure is planted on purpose:

- **Shared facts (planted transfer).** `product_summarization` teaches each product's
  category, material and brand *in its answers* (prompts are masked from the loss). Six
  families ask for those facts without giving them: `attribute_inference_mcq` (material),
  `complementary_category` (category -> accessory), `multi_hop_reasoning` (brand),
  `session_recommendation` and `product_ranking` (category), and
  `cross_language_description_match` (material and category, in Vellish). Every product is
  asked about once per family, so a held-out question is about a product that family never
  taught: only training on the summaries can answer it. A product's name is one made-up
  word, and its summary comes in four phrasings that put its facts in different orders, so
  they are learnt as facts about the name rather than as one sentence by heart.
- **A second shared source.** `title_translation` teaches the lexicon in its answers;
  `multilingual_keyword_mcq` and `cross_language_description_match` need it.
- **A control.** `review_rating` needs nothing from any other family: a rating word decides
  the answer. Adding or removing other families should not change its score.
- **Self-contained families.** `query_ner` (copy the category out of a query) and
  `numeric_reasoning` (a discount) use only their own input.
- **A synthetic twin** (`data.corpus: [world, world-synthetic]`): the same families over the
  same catalogue as a simulated generator writes them, in its own style (a preamble line)
  and with a known share of wrong answers (`SYNTHETIC_NOISE`), each record carrying a
  provenance object as ecomtrain.generate's do. A `data.provenance` sweep must find
  curated ahead where the noise bites.
- **Facts grow with families.** Each family that is added brings facts of its own (3 per
  product for the summaries, the lexicon, accessories, ratings), so a small adapter can run
  out of capacity as the task set grows.

**Effects of known size** (`data.corpus: [world-effects]`, docs/world-effects.md): a rule
of the same world maps 16 categories to 4 add-on accessories, four categories each.
`accessory_rule` trains on two categories of each accessory and is held out on the other
eight, so its held-out labels are balanced (any constant answer scores exactly 1/4). One
source family per arm (ARMS) states 8 pairs in as many records: the held-out categories
with 1/4, 5/8, all or none of them right (`chance`, `half`, `all`, `sham`), so if the pairs
are learnt the held-out score is exactly that share, 1/4, 5/8, 1 or 0, in any world; or
only the trained categories (`none`: the held-out score is then the model's guess).
`accessory_recall` asks the same question about the trained categories (it needs the
target's own records, not the source's), and `stock_status` needs nothing but its own
input (the control). Every record of this corpus carries its `split`.

`world:N@SEED` (and `world-synthetic:N@SEED`, `world-effects:N@SEED`) generates the world
of another seed: another catalogue, lexicon and rule.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass, replace

from ecomtrain.data.records import problem, render_options
from ecomtrain.tasks import FAMILIES

DEFAULT_PRODUCTS = 240
MIN_PRODUCTS = 80
MAX_PRODUCTS = 2000  # a name is one word of 3 syllables: 14**3 of them, less the lexicon's
PER_CATEGORY = 6  # a session shows the product, 2 of its category in the history and 3 more
CATEGORIES = {  # category -> its usual accessory
    "kettle": "descaler",
    "lamp": "bulb",
    "tent": "stakes",
    "jacket": "hanger",
    "backpack": "raincover",
    "speaker": "cable",
    "blender": "jar",
    "chair": "cushion",
}
MATERIALS = ["steel", "oak", "cotton", "leather", "glass", "bamboo"]
COLORS = ["red", "blue", "green", "black", "white", "grey"]
AUDIENCES = ["kids", "women", "men", "students"]
RATINGS = ["awful", "weak", "fine", "great", "superb"]  # rating 1..5
PRICES = [20, 40, 60, 80]
DISCOUNTS = [25, 50]  # every discounted price is one of 7 options
_SYLLABLES = ["ka", "lo", "mi", "ra", "te", "vo", "su", "ne", "po", "zi", "du", "fa", "ro", "ly"]


@dataclass(frozen=True)
class Product:
    name: str
    category: str
    material: str
    color: str
    brand: str
    price: int


@dataclass
class Catalogue:
    products: list[Product]
    brands: list[str]
    lexicon: dict[str, str]  # English word -> Vellish word


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(syllables))


def catalogue(n_products: int = DEFAULT_PRODUCTS, seed: int = 0) -> Catalogue:
    """The world's catalogue: deterministic for (n_products, seed)."""
    if n_products < MIN_PRODUCTS:
        raise ValueError(f"world:{n_products}: the world needs at least {MIN_PRODUCTS} products")
    if n_products > MAX_PRODUCTS:
        raise ValueError(f"world:{n_products}: the world has names for at most {MAX_PRODUCTS}")
    rng = random.Random(f"world-{seed}")
    brands = sorted({_word(rng, 2).capitalize() for _ in range(40)})[:8]
    english = list(CATEGORIES) + MATERIALS + COLORS
    words: list[str] = []
    while len(words) < len(english):
        word = _word(rng, 3)
        words += [word] if word not in words else []
    lexicon = dict(zip(english, words, strict=True))
    taken = {b.lower() for b in brands} | set(lexicon.values())  # a name tells no fact
    names: set[str] = set()
    products = []
    while len(products) < n_products:
        word = _word(rng, 3)
        name = word.capitalize()
        if name in names or word in taken:
            continue
        names.add(name)
        category = rng.choice(list(CATEGORIES))
        products.append(
            Product(
                name,
                category,
                rng.choice(MATERIALS),
                rng.choice(COLORS),
                rng.choice(brands),
                rng.choice(PRICES),
            )
        )
    return Catalogue(_fill_categories(products), brands, lexicon)


def _fill_categories(products: list[Product]) -> list[Product]:
    """Every category with at least PER_CATEGORY products: a category short of it takes the
    first product of the largest one (a catalogue that has enough, as the default world does,
    is returned as it is)."""
    counts = Counter(p.category for p in products)
    for category in CATEGORIES:
        while counts[category] < PER_CATEGORY:
            donor = max(CATEGORIES, key=lambda c: counts[c])
            i = next(i for i, p in enumerate(products) if p.category == donor)
            products[i] = replace(products[i], category=category)
            counts[donor], counts[category] = counts[donor] - 1, counts[category] + 1
    return products


def _mcq(question: str, answer: str, options: list[str]):
    """Multiple choice over a fixed list of options, always in the same order: the answer's
    index names the answer itself, so a small model learns an association, not a search."""
    return f"{question}\n{render_options(options)}\nAnswer:", options.index(answer)


def _numbered(items: list[str]) -> str:
    return "\n".join(f"{i + 1}. {o}" for i, o in enumerate(items))


# One generator per family: (catalogue, product, rng) -> (input_field, output_field).


SUMMARY_STYLES = [  # (how the question ends, the answer): the facts in four orders
    (".", "{n} is a {m} {c} made by {b}."),
    (", brand first.", "{b} makes the {n}, a {c} of {m}."),
    (", in a few words.", "The {n}: {c}, {m}, by {b}."),
    (", material first.", "Made of {m}, the {n} is a {c} from {b}."),
]


def product_summarization(c: Catalogue, p: Product, rng, style: int = 0):
    end, answer = SUMMARY_STYLES[style]
    facts = {"n": p.name, "m": p.material, "c": p.category, "b": p.brand}
    return f"Summarize the product listing of {p.name}{end}", answer.format(**facts)


def attribute_inference_mcq(c: Catalogue, p: Product, rng):
    return _mcq(f"Which material is the product {p.name} made of?", p.material, MATERIALS)


def query_ner(c: Catalogue, p: Product, rng):
    query = f"{p.color} {p.category} for {rng.choice(AUDIENCES)} like the {p.name}"
    return f"Extract the product category from the query.\nQuery: {query}\nOutput:", [p.category]


def complementary_category(c: Catalogue, p: Product, rng):
    question = f"Which item is most often bought together with the {p.name}?"
    return _mcq(question, CATEGORIES[p.category], list(CATEGORIES.values()))


def multi_hop_reasoning(c: Catalogue, p: Product, rng):
    return _mcq(f"Answer choices follow. Which brand makes the {p.name}?", p.brand, c.brands)


def numeric_reasoning(c: Catalogue, p: Product, rng):
    off = rng.choice(DISCOUNTS)
    question = f"The {p.name} costs ${p.price}. With a {off}% discount, what does it cost?"
    answer = f"${p.price * (100 - off) // 100}"
    prices = sorted({x * (100 - d) // 100 for x in PRICES for d in DISCOUNTS})
    return _mcq(question, answer, [f"${x}" for x in prices])


def review_rating(c: Catalogue, p: Product, rng):
    stars = rng.randint(1, 5)
    question = (
        f"Review of the {p.name}: it is {RATINGS[stars - 1]}. What rating (1-5) did the user give?"
    )
    return _mcq(question, str(stars), ["1", "2", "3", "4", "5"])


def session_recommendation(c: Catalogue, p: Product, rng):
    same = [q for q in c.products if q.category == p.category and q is not p]
    other = [q for q in c.products if q.category != p.category]
    history = rng.sample(same, 2)
    rest = [q for q in same if q not in history]
    pool = rng.sample(rest, 3) + rng.sample(other, 7)
    rng.shuffle(pool)
    question = (
        f"Browsing history: {p.name}, {history[0].name}, {history[1].name}. Which 3 of these "
        f"products will the user view next?\n{_numbered([q.name for q in pool])}\nOutput:"
    )
    return question, sorted(i + 1 for i, q in enumerate(pool) if q.category == p.category)


def product_ranking(c: Catalogue, p: Product, rng):
    same = [q for q in c.products if q.category == p.category and q is not p]
    other = [q for q in c.products if q.category != p.category]
    items = [p, rng.choice(same)] + rng.sample(other, 3)
    rng.shuffle(items)
    question = (
        f"Query: {p.category}\nRank these 5 products by relevance, most relevant first.\n"
        f"{_numbered([q.name for q in items])}\nOutput:"
    )
    return question, [1.0 if q.category == p.category else 0.0 for q in items]


def title_translation(c: Catalogue, p: Product, rng):
    title = f"{p.name} {p.color} {p.material} {p.category}"
    answer = " ".join([p.name] + [c.lexicon[w] for w in (p.category, p.material, p.color)])
    return f"Translate the product title into Vellish.\nTitle: {title}\nOutput:", answer


def multilingual_keyword_mcq(c: Catalogue, p: Product, rng):
    question = (
        f"The {p.name} is listed under the Vellish keyword '{c.lexicon[p.category]}'. "
        "Which English word means it?"
    )
    return _mcq(question, p.category, list(CATEGORIES))


def cross_language_description_match(c: Catalogue, p: Product, rng):
    described = f"{c.lexicon[p.material]} {c.lexicon[p.category]}"
    others = [q.name for q in c.products if (q.material, q.category) != (p.material, p.category)]
    question = f"A listing in a different language reads '{described}'. Which product is it?"
    options = rng.sample(others, 3) + [p.name]
    rng.shuffle(options)
    return f"{question}\n{render_options(options)}\nAnswer:", options.index(p.name)


GENERATORS = {
    f.__name__: f
    for f in (
        product_summarization,
        attribute_inference_mcq,
        query_ner,
        complementary_category,
        multi_hop_reasoning,
        numeric_reasoning,
        review_rating,
        session_recommendation,
        product_ranking,
        title_translation,
        multilingual_keyword_mcq,
        cross_language_description_match,
    )
}
# Which family's answers teach the facts another family's questions need.
TRANSFER = {
    "product_summarization": [
        "attribute_inference_mcq",
        "complementary_category",
        "multi_hop_reasoning",
        "session_recommendation",
        "product_ranking",
        "cross_language_description_match",
    ],
    "title_translation": ["multilingual_keyword_mcq", "cross_language_description_match"],
}
CONTROL = "review_rating"


def world_records(n_products: int = DEFAULT_PRODUCTS, seed: int = 0) -> list[dict]:
    """Every record of the world (ShopBench schema): one per product and family, and one per
    product and phrasing for the summaries (SUMMARY_STYLES). Every input names its product
    (and a summary's its phrasing), so no two records of a family share an input (records
    with equal inputs would always fall on the same side of the held-out split)."""
    cat = catalogue(n_products, seed)
    records = []
    for name, make in GENERATORS.items():
        family = FAMILIES[name]
        rng = random.Random(f"world-{seed}-{name}")
        styles = len(SUMMARY_STYLES) if make is product_summarization else 1
        for p in cat.products:
            for style in range(styles):
                args = (style,) if styles > 1 else ()
                records.append(family.record(*make(cat, p, rng, *args)))
    return records


SYNTHETIC_NOISE = 0.3  # share of the simulated generator's answers that are wrong
SYNTHETIC_STYLE = "Answer the shopper's question.\n"


def world_synthetic_records(n_products: int = DEFAULT_PRODUCTS, seed: int = 0) -> list[dict]:
    """The world's records as a simulated generator writes them: its preamble before each
    input, and for a share SYNTHETIC_NOISE of them the answer of another product's record of
    the family (one that is valid for this input and differs from the right answer)."""
    clean = world_records(n_products, seed)
    rng = random.Random(f"world-synthetic-{seed}")
    peers: dict[str, list[dict]] = {}
    for r in clean:
        peers.setdefault(r["task_name"], []).append(r)
    out = []
    for r in clean:
        r = dict(r, input_field=SYNTHETIC_STYLE + r["input_field"])
        if rng.random() < SYNTHETIC_NOISE:
            for other in rng.sample(peers[r["task_name"]], 8):
                wrong = dict(r, output_field=other["output_field"])
                if other["output_field"] != r["output_field"] and problem(wrong) is None:
                    r = wrong
                    break
        r["provenance"] = {"generator": "world-simulated", "label_noise": SYNTHETIC_NOISE}
        out.append(r)
    return out


# --- Effects of known size (the `world-effects` corpus) ------------------------------------

ACCESSORIES = ["warranty", "giftbox", "toolkit", "cleaner"]  # the rule's answers, in option order
CHANCE = 1 / len(ACCESSORIES)
# The rule's categories: the world's and 8 more (the demo corpus' products, and a sofa).
RULE_CATEGORIES = [*CATEGORIES, "shoes", "laptop", "phone", "camera", "printer", "guitar"]
RULE_CATEGORIES += ["bicycle", "sofa"]
EFFECT_PER_CATEGORY = 25  # records of a category per effect family at the default world size
STOCK = {  # what a listing says -> its stock status (the control's answer)
    "plenty on the shelf": "in stock",
    "only a few left": "low stock",
    "none left": "sold out",
    "ships next month": "preorder",
}


@dataclass(frozen=True)
class Rule:
    """Which add-on accessory the shop pairs with each category: slot i of `trained` (the
    target trains on it) and of `held` (held out) goes with accessory i mod 4, so each half
    has two categories of every accessory."""

    trained: tuple[str, ...]
    held: tuple[str, ...]

    def accessory(self, category: str) -> str:
        slots = self.trained if category in self.trained else self.held
        return ACCESSORIES[slots.index(category) % len(ACCESSORIES)]


def rule(seed: int = 0) -> Rule:
    """The world's accessory rule: a seeded pairing of RULE_CATEGORIES, 4 per accessory."""
    categories = list(RULE_CATEGORIES)
    random.Random(f"world-{seed}-rule").shuffle(categories)
    half = len(categories) // 2
    return Rule(tuple(categories[:half]), tuple(categories[half:]))


@dataclass(frozen=True)
class Arm:
    """A source family: the guide of one edition, stating one pair per slot of the rule."""

    family: str
    edition: str  # the only word its prompts differ in from the other arms'
    # Per slot: None states the trained category (rightly); k states the held-out category
    # with the accessory k places after its own (0: right, 1-3: wrong).
    shifts: tuple[int | None, ...]

    def pairs(self, r: Rule) -> list[tuple[str, str]]:
        """(category, accessory) of each of its statements."""
        n = len(ACCESSORIES)
        return [
            (r.trained[i], ACCESSORIES[i % n])
            if s is None
            else (r.held[i], ACCESSORIES[(i + s) % n])
            for i, s in enumerate(self.shifts)
        ]

    def predicted(self) -> float:
        """accessory_rule's held-out score when the pairs stated are learnt: 1 on a held-out
        category stated right, 0 stated wrong, and on one not stated the model's guess
        (chance in expectation over worlds, not in one trial: the guess is no coin)."""
        right = sum(s == 0 for s in self.shifts)
        return (right + CHANCE * self.shifts.count(None)) / len(self.shifts)


# A quarter of the held-out slots stated right, each accessory stated twice (slots 0 and 5).
_CHANCE = (0, 1, 1, 2, 2, 0, 1, 1)
ARMS = {
    "none": Arm("accessory_guide_none", "spring", (None,) * 8),  # the trained categories only
    "chance": Arm("accessory_guide_chance", "holiday", _CHANCE),
    "half": Arm("accessory_guide_half", "summer", (0, 0, 0, 0, *_CHANCE[4:])),
    "all": Arm("accessory_guide_all", "autumn", (0,) * 8),
    "sham": Arm("accessory_guide_sham", "winter", (1,) * 8),
}
EFFECT_TARGETS = ("accessory_rule", "accessory_recall", "stock_status")  # scored, balanced


def per_category(n_products: int) -> int:
    """Records of a category per effect family: EFFECT_PER_CATEGORY at the default size,
    in proportion to the world's size."""
    return max(1, round(EFFECT_PER_CATEGORY * n_products / DEFAULT_PRODUCTS))


def _items(rng: random.Random, n: int, categories: list[str]) -> list[str]:
    """n distinct shopping items of the given categories, e.g. "red oak lamp for kids at $40"."""
    combos = itertools.product(COLORS, MATERIALS, categories, AUDIENCES, PRICES)
    return [f"{c} {m} {k} for {a} at ${p}" for c, m, k, a, p in rng.sample(list(combos), n)]


def world_effect_records(n_products: int = DEFAULT_PRODUCTS, seed: int = 0) -> list[dict]:
    """Every record of the world's effect families, each with its `split`: per category and
    family `per_category(n_products)` records with distinct inputs. `accessory_rule` trains
    on the rule's trained categories and is held out on the others; `accessory_recall` is
    held out on the trained ones; each arm's guide states its pairs (training only);
    `stock_status` has as many training as held-out records of each answer."""
    catalogue(n_products, seed)  # the same bounds as the world's
    r, n = rule(seed), per_category(n_products)
    out = []

    def add(family: str, question: str, answer: str, options: list[str], split: str):
        out.append(FAMILIES[family].record(*_mcq(question, answer, options)) | {"split": split})

    ask = "Which accessory does the shop's rule add?"  # the same question in every family
    for family, verb, categories, split in (
        ("accessory_rule", "buys", r.trained, "train"),
        ("accessory_rule", "buys", r.held, "eval"),
        ("accessory_recall", "orders", r.trained, "eval"),
    ):
        rng = random.Random(f"world-{seed}-{family}-{split}")
        for category in categories:
            for item in _items(rng, n, [category]):
                question = f"A shopper {verb} a {item}. {ask}"
                add(family, question, r.accessory(category), ACCESSORIES, split)
    for arm in ARMS.values():
        rng = random.Random(f"world-{seed}-{arm.family}")
        for category, accessory in arm.pairs(r):
            for item in _items(rng, n, [category]):
                question = f"The {arm.edition} accessory guide lists a {item}. {ask}"
                add(arm.family, question, accessory, ACCESSORIES, "train")
    rng = random.Random(f"world-{seed}-stock_status")
    statuses = list(STOCK.values())
    per_status = n * len(r.held) // len(STOCK)  # held out: as many as the target's
    for phrase, status in STOCK.items():
        for i, item in enumerate(_items(rng, 2 * per_status, RULE_CATEGORIES)):
            question = f"A {item} is listed with '{phrase}'. What is its stock status?"
            split = "train" if i < per_status else "eval"
            add("stock_status", question, status, statuses, split)
    return out
