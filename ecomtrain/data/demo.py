"""The built-in demo corpus: small, deterministic, all four capabilities.

Records follow the ShopBench schema (input_field, output_field, task_type, metric)
plus task_name and capability. Every family has an answer a small model can learn
from the input (copying, a fixed mapping, arithmetic), so a sweep shows real signal.
"""

from __future__ import annotations

import random

from ecomtrain.data.records import render_options
from ecomtrain.tasks import FAMILIES

# English product -> (German, Spanish, French, complementary product).
PRODUCTS = {
    "shoes": ("Schuhe", "zapatos", "chaussures", "socks"),
    "laptop": ("Laptop", "portátil", "ordinateur", "mouse"),
    "phone": ("Telefon", "teléfono", "téléphone", "charger"),
    "camera": ("Kamera", "cámara", "appareil photo", "tripod"),
    "tent": ("Zelt", "tienda", "tente", "sleeping bag"),
    "jacket": ("Jacke", "chaqueta", "veste", "scarf"),
    "printer": ("Drucker", "impresora", "imprimante", "paper"),
    "guitar": ("Gitarre", "guitarra", "guitare", "strings"),
    "bicycle": ("Fahrrad", "bicicleta", "vélo", "helmet"),
    "kettle": ("Wasserkocher", "hervidor", "bouilloire", "tea"),
}
COMPLEMENTS = sorted({v[3] for v in PRODUCTS.values()})
COLORS = {"red": "rot", "blue": "blau", "green": "grün", "black": "schwarz", "white": "weiß"}
BRANDS = ["Acme", "Nordik", "Voltra", "Lumio", "Kestrel", "Orbis"]
AUDIENCES = {"kids": "Kinder", "women": "Damen", "men": "Herren", "students": "Studenten"}
PRAISE = ["terrible", "poor", "okay", "good", "excellent"]  # rating 1..5
LANGUAGES = {"German": 0, "Spanish": 1, "French": 2}


def mcq(rng: random.Random, question: str, answer: str, pool: list[str], k: int = 4):
    """A multiple-choice prompt: `answer` and k-1 others of `pool` (distinct), shuffled."""
    options = rng.sample([p for p in pool if p != answer], k - 1) + [answer]
    rng.shuffle(options)
    return f"{question}\n{render_options(options)}\nAnswer:", options.index(answer)


def _title(rng: random.Random) -> tuple[str, str, str]:
    return rng.choice(BRANDS), rng.choice(list(COLORS)), rng.choice(list(PRODUCTS))


def attribute_inference_mcq(rng):
    brand, color, product = _title(rng)
    q = f"Product title: {brand} {color} {product}. Which color is the product?"
    return mcq(rng, q, color, list(COLORS))


def query_ner(rng):
    _, color, product = _title(rng)
    q = f"{color} {product} for {rng.choice(list(AUDIENCES))}"
    return f"Extract the product type from the query.\nQuery: {q}\nOutput:", [product]


def review_keyphrase_extraction(rng):
    _, _, product = _title(rng)
    word = rng.choice(PRAISE)
    review = f"I bought this {product} last month. The battery is {word} and shipping was fast."
    return f"Extract the key phrase about quality.\nReview: {review}\nOutput:", f"battery is {word}"


def numeric_reasoning(rng):
    _, _, product = _title(rng)
    price, off = rng.choice([20, 40, 60, 80, 100]), rng.choice([10, 25, 50])
    q = f"A {product} costs ${price}. With a {off}% discount, what does it cost?"
    answer = f"${price * (100 - off) // 100}"
    return mcq(rng, q, answer, [f"${p}" for p in range(5, 100, 5)])


def complementary_category(rng):
    product = rng.choice(list(PRODUCTS))
    q = f"Which item is most often bought together with a {product}?"
    return mcq(rng, q, PRODUCTS[product][3], COMPLEMENTS)


def review_rating(rng):
    _, _, product = _title(rng)
    stars = rng.randint(1, 5)
    q = f"Review: The {product} is {PRAISE[stars - 1]}. What rating (1-5) did the user give?"
    return mcq(rng, q, str(stars), ["1", "2", "3", "4", "5"], k=5)


def _numbered(items: list[str]) -> str:
    return "\n".join(f"{i + 1}. {o}" for i, o in enumerate(items))


def product_ranking(rng):
    product = rng.choice(list(PRODUCTS))
    complement = PRODUCTS[product][3]
    items = [product, complement] + rng.sample([p for p in PRODUCTS if p != product], 3)
    rng.shuffle(items)
    weights = [1.0 if i == product else 0.1 if i == complement else 0.0 for i in items]
    q = f"Query: {product}\nRank these 5 products by relevance, most relevant first.\n"
    return f"{q}{_numbered(items)}\nOutput:", weights


def also_bought_retrieval(rng):
    products = rng.sample(list(PRODUCTS), 3)
    pool = [PRODUCTS[p][3] for p in products]
    items = pool + rng.sample([c for c in PRODUCTS if c not in products], 7)
    rng.shuffle(items)
    q = (
        f"A user bought: {', '.join(products)}. Which 3 of these products will they also buy?\n"
        + _numbered(items)
        + "\nOutput:"
    )
    return q, sorted(items.index(c) + 1 for c in pool)


def multilingual_keyword_mcq(rng):
    product = rng.choice(list(PRODUCTS))
    lang = rng.choice(list(LANGUAGES))
    word = PRODUCTS[product][LANGUAGES[lang]]
    q = f"Which English word means the {lang} keyword '{word}'?"
    return mcq(rng, q, product, list(PRODUCTS))


def title_translation(rng):
    brand, color, product = _title(rng)
    audience = rng.choice(list(AUDIENCES))
    title = f"{brand} {color} {product} for {audience}"
    q = f"Translate the product title into German.\nTitle: {title}\nOutput:"
    return q, f"{brand} {PRODUCTS[product][0]} {COLORS[color]} für {AUDIENCES[audience]}"


GENERATORS = {
    f.__name__: f
    for f in (
        attribute_inference_mcq,
        query_ner,
        review_keyphrase_extraction,
        numeric_reasoning,
        complementary_category,
        review_rating,
        product_ranking,
        also_bought_retrieval,
        multilingual_keyword_mcq,
        title_translation,
    )
}


def distinct(make, rng: random.Random, n: int) -> list[tuple[str, object]]:
    """(prompt, answer) pairs from a generator, `n` with distinct prompts (fewer when its
    tables run out within 20 n draws)."""
    out: dict[str, object] = {}
    for _ in range(n * 20):
        if len(out) == n:
            break
        prompt, answer = make(rng)
        out.setdefault(prompt, answer)
    return list(out.items())


def demo_records(per_task: int = 60, seed: int = 0) -> list[dict]:
    """Generate the demo corpus: `per_task` records for each demo family."""
    return [
        FAMILIES[name].record(prompt, answer)
        for name, make in GENERATORS.items()
        for prompt, answer in distinct(make, random.Random(f"{seed}-{name}"), per_task)
    ]
