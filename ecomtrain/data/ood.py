"""The built-in out-of-domain corpus: generic tasks with nothing to do with shopping.

`data.corpus: [..., ood]` adds it; `data.ood_fraction` then sets the share of every training
epoch drawn from it (and from any file or record whose capability is "ood"), with the
e-commerce evaluation unchanged (data.mixture). Two multiple-choice families, each learnable
from its input or a small fixed table, so adding them changes what a model learns:
plain arithmetic, and general knowledge (capitals, chemical symbols, animal classes).
Records carry task_name and capability "ood", so they are tasks of their own to every
other part of ecomtrain.
"""

from __future__ import annotations

import random

from ecomtrain.data.demo import distinct, mcq
from ecomtrain.tasks import OOD

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Portugal": "Lisbon", "Japan": "Tokyo", "China": "Beijing", "India": "New Delhi",
    "Canada": "Ottawa", "Australia": "Canberra", "Brazil": "Brasilia", "Egypt": "Cairo",
    "Kenya": "Nairobi", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki",
    "Poland": "Warsaw", "Greece": "Athens", "Turkey": "Ankara", "Peru": "Lima",
    "Chile": "Santiago", "Mexico": "Mexico City", "Argentina": "Buenos Aires",
    "Ireland": "Dublin", "Austria": "Vienna", "Hungary": "Budapest", "Thailand": "Bangkok",
    "Vietnam": "Hanoi", "Morocco": "Rabat", "Ghana": "Accra",
}  # fmt: skip
SYMBOLS = {
    "hydrogen": "H", "helium": "He", "carbon": "C", "nitrogen": "N", "oxygen": "O",
    "sodium": "Na", "magnesium": "Mg", "aluminium": "Al", "silicon": "Si", "sulfur": "S",
    "chlorine": "Cl", "potassium": "K", "calcium": "Ca", "iron": "Fe", "copper": "Cu",
    "zinc": "Zn", "silver": "Ag", "tin": "Sn", "gold": "Au", "lead": "Pb",
}  # fmt: skip
CLASSES = {
    "eagle": "bird", "sparrow": "bird", "penguin": "bird", "owl": "bird",
    "whale": "mammal", "bat": "mammal", "dolphin": "mammal", "horse": "mammal",
    "frog": "amphibian", "salamander": "amphibian", "newt": "amphibian", "toad": "amphibian",
    "shark": "fish", "salmon": "fish", "trout": "fish", "cod": "fish",
    "lizard": "reptile", "snake": "reptile", "crocodile": "reptile", "turtle": "reptile",
}  # fmt: skip
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def ood_arithmetic(rng: random.Random):
    op = rng.choice(list(OPS))
    a, b = rng.randint(2, 99), rng.randint(2, 99 if op != "*" else 12)
    value = OPS[op](a, b)
    near = [value + d for d in (-10, -2, -1, 1, 2, 10)]
    return mcq(rng, f"What is {a} {op} {b}?", str(value), [str(v) for v in near])


def ood_general_knowledge(rng: random.Random):
    kind = rng.choice(("capital", "symbol", "class"))
    if kind == "capital":
        country = rng.choice(list(CAPITALS))
        q = f"What is the capital of {country}?"
        return mcq(rng, q, CAPITALS[country], list(CAPITALS.values()))
    if kind == "symbol":
        element = rng.choice(list(SYMBOLS))
        q = f"What is the chemical symbol of {element}?"
        return mcq(rng, q, SYMBOLS[element], list(SYMBOLS.values()))
    animal = rng.choice(list(CLASSES))
    q = f"To which class of animals does the {animal} belong?"
    return mcq(rng, q, CLASSES[animal], sorted(set(CLASSES.values())))


GENERATORS = {f.__name__: f for f in (ood_arithmetic, ood_general_knowledge)}


def ood_records(per_task: int = 60, seed: int = 0) -> list[dict]:
    """`per_task` distinct records of each out-of-domain family (fewer where its table
    runs out)."""
    return [
        {
            "input_field": prompt,
            "output_field": answer,
            "task_type": "multiple-choice",
            "metric": "accuracy",
            "task_name": name,
            "capability": OOD,
        }
        for name, make in GENERATORS.items()
        for prompt, answer in distinct(make, random.Random(f"{seed}-{name}"), per_task)
    ]
