"""Decontamination of training records against eval files (e.g. the KDD Cup dev set).

A training record is contaminated when its normalised input equals an eval record's, or
when it shares a word n-gram of *content* with one. Prompt templates would otherwise make
every record of a task "overlap" the eval set, so template words are removed first: the
words covered by a word 5-gram that two or more eval records share. What is left (the
product, query, review or question itself, and the answer) is compared by n-grams; content
shorter than n (but of at least MIN_WORDS words) is looked for as a whole.
"""

from __future__ import annotations

from collections import Counter

from ecomtrain.dedup import exact_key, words

TEMPLATE_N = 5  # template = word 5-grams found in two or more eval records
MIN_WORDS = 4  # eval content shorter than this is too generic to flag anything


def _grams(ws: list[str], n: int) -> list[str]:
    if len(ws) < n:
        return [" ".join(ws)] if ws else []
    return [" ".join(ws[i : i + n]) for i in range(len(ws) - n + 1)]


def content_words(text: str, template: set[str]) -> list[str]:
    """The words of `text` not covered by a template 5-gram."""
    ws = words(text)
    keep = [True] * len(ws)
    for i in range(len(ws) - TEMPLATE_N + 1):
        if " ".join(ws[i : i + TEMPLATE_N]) in template:
            keep[i : i + TEMPLATE_N] = [False] * TEMPLATE_N
    return [w for w, k in zip(ws, keep, strict=True) if k]


def build_index(eval_records: list[tuple[str, str, str]], n: int) -> dict:
    """Index of eval records given as (label, input, answer): normalised inputs, template
    5-grams, and content n-grams (or whole short content) mapped to an eval record's label."""
    texts = [(label, q + "\n" + a) for label, q, a in eval_records]
    df = Counter(g for _, t in texts for g in set(_grams(words(t), TEMPLATE_N)))
    template = {g for g, c in df.items() if c >= 2}
    grams: dict[str, str] = {}
    lengths = {n}
    for label, text in texts:
        ws = content_words(text, template)
        if len(ws) >= MIN_WORDS:
            lengths.add(min(n, len(ws)))
            for g in _grams(ws, n):
                grams.setdefault(g, label)
    exact = {exact_key(q): label for label, q, _ in eval_records}
    return {"exact": exact, "template": template, "grams": grams, "lengths": sorted(lengths)}


def overlap(index: dict | None, text: str, answer: str) -> tuple[str, str] | None:
    """("exact" | "ngram", eval record label) when a training record overlaps, else None."""
    if index is None:
        return None
    label = index["exact"].get(exact_key(text))
    if label:
        return "exact", label
    ws = content_words(text + "\n" + answer, index["template"])
    for k in index["lengths"]:
        for i in range(len(ws) - k + 1):
            label = index["grams"].get(" ".join(ws[i : i + k]))
            if label:
                return "ngram", label
    return None
