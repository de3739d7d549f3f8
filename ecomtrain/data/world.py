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

`world:N@SEED` (and `world-synthetic:N@SEED`) generates the world of another seed: another
catalogue and lexicon.
"""

from __future__ import annotations

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
