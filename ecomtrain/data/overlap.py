"""Overlap between texts: exact and near duplicates, and decontamination against eval sets.

Records of one task family repeat a long instruction template around a short content
(a query, a review, a title), so every check here looks at content only: template
n-grams are set aside first.

- Exact duplicates: equal after normalisation (case, punctuation, spacing).
- Near duplicates: a MinHash signature with a fixed seed estimates the Jaccard similarity
  of two texts' content shingles (word 5-grams), and datasketch's LSH, its bands chosen for
  the threshold, finds candidate pairs without comparing every pair.
- Decontamination (`Decontaminator`, the one definition used by the corpus scan and by the
  generation gate): a training record is contaminated when its normalised input equals an
  eval record's, or when it shares a word n-gram of *content* with one. Template words are
  the words covered by a word 5-gram that two or more eval records share (or that appears
  in texts given as template, such as a generation spec's instruction and examples). What
  is left of an eval record (the product, query, review or question itself, and the
  answer) is indexed by its n-grams; eval content shorter than n (but of at least
  MIN_WORDS words) is looked for as a whole.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter

from datasketch import MinHash, MinHashLSH

_WORD = re.compile(r"\w+", re.UNICODE)
TEMPLATE_N = 5  # template = word 5-grams found in two or more eval records
MIN_WORDS = 4  # eval content shorter than this is too generic to flag anything


def words(text: str) -> list[str]:
    """Lower-cased word tokens (punctuation and spacing never make two texts differ)."""
    return _WORD.findall(text.lower())


def exact_key(text: str) -> str:
    """Digest of the normalised text: equal for texts that differ only in case/punctuation."""
    return hashlib.sha1(" ".join(words(text)).encode("utf-8")).hexdigest()


def ngrams(tokens: list[str], n: int) -> set[str]:
    """Word n-grams; a text shorter than n is one n-gram of all its words."""
    if len(tokens) < n:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def frequent_shingles(texts: list[str], n: int, min_df: int = 5, frac: float = 0.01) -> set[str]:
    """Shingles in at least max(min_df, frac * len(texts)) texts: a corpus's template."""
    df: Counter[str] = Counter()
    for text in texts:
        df.update(ngrams(words(text), n))
    cut = max(min_df, frac * len(texts))
    return {g for g, c in df.items() if c >= cut}


class MinHashIndex:
    """Near-duplicate index over shingle sets (datasketch's MinHash LSH): `add` them,
    `query` the closest one. LSH bands and rows are chosen for `threshold`, so lowering it
    really catches less similar pairs."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128):
        self.threshold, self.num_perm = threshold, num_perm
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.signatures: dict[str, MinHash] = {}

    def signature(self, shingles: set[str]) -> MinHash:
        """MinHash signature of a non-empty shingle set (a fixed seed: comparable across runs)."""
        m = MinHash(num_perm=self.num_perm, seed=20240601)
        m.update_batch([s.encode("utf-8") for s in sorted(shingles)])
        return m

    def query(self, sig: MinHash) -> tuple[str, float] | None:
        """(label, estimated Jaccard) of the most similar indexed set at or above threshold."""
        best = None
        for label in self.lsh.query(sig):
            sim = float(self.signatures[label].jaccard(sig))
            if sim >= self.threshold and (best is None or sim > best[1]):
                best = (label, sim)
        return best

    def add(self, sig: MinHash, label: str) -> None:
        """Index a signature under a label (where it came from, shown when it matches)."""
        if label not in self.signatures:
            self.signatures[label] = sig
            self.lsh.insert(label, sig)


class Deduplicator:
    """Exact (normalised text) and near (MinHash over content shingles) duplicates."""

    def __init__(self, threshold: float = 0.8, shingle: int = 5, template: set[str] = frozenset()):
        self.exact: dict[str, str] = {}
        self.near = MinHashIndex(threshold)
        self.shingle, self.template = shingle, set(template)

    def _signature(self, text: str) -> MinHash | None:
        content = ngrams(words(text), self.shingle) - self.template
        return self.near.signature(content) if content else None  # all template: exact only

    def check(self, question: str, content: str) -> tuple[str, str] | None:
        """("exact" | "near", what it duplicates) or None when new: exact on the question,
        near on the content (question and answer)."""
        label = self.exact.get(exact_key(question))
        if label is not None:
            return "exact", label
        sig = self._signature(content)
        hit = self.near.query(sig) if sig is not None else None
        return ("near", f"{hit[0]} (jaccard~{hit[1]:.2f})") if hit else None

    def add(self, question: str, content: str, label: str) -> None:
        self.exact.setdefault(exact_key(question), label)
        sig = self._signature(content)
        if sig is not None:
            self.near.add(sig, label)


class Decontaminator:
    """Flags training records that overlap an eval set (see the module docstring)."""

    def __init__(
        self, eval_records: list[tuple[str, str, str]], n: int = 13, template: list[str] = ()
    ):
        """eval_records: (label, input, answer); template: texts whose word 5-grams are
        template too (e.g. a generation spec's instruction and examples)."""
        texts = [(label, q + "\n" + a) for label, q, a in eval_records]
        df = Counter(g for _, t in texts for g in ngrams(words(t), TEMPLATE_N))
        self.template = {g for g, c in df.items() if c >= 2}
        self.template |= {g for t in template for g in ngrams(words(t), TEMPLATE_N)}
        self.grams: dict[str, str] = {}
        lengths = {n}
        for label, text in texts:
            ws = self.content_words(text)
            if len(ws) >= MIN_WORDS:
                lengths.add(min(n, len(ws)))
                for g in ngrams(ws, n):
                    self.grams.setdefault(g, label)
        self.lengths = sorted(lengths)
        self.exact = {exact_key(q): label for label, q, _ in eval_records}

    def content_words(self, text: str) -> list[str]:
        """The words of `text` not covered by a template 5-gram."""
        ws = words(text)
        keep = [True] * len(ws)
        for i in range(len(ws) - TEMPLATE_N + 1):
            if " ".join(ws[i : i + TEMPLATE_N]) in self.template:
                keep[i : i + TEMPLATE_N] = [False] * TEMPLATE_N
        return [w for w, k in zip(ws, keep, strict=True) if k]

    def check(self, text: str, answer: str = "") -> tuple[str, str, str] | None:
        """("exact" | "ngram", eval record label, what is shared) when a training record
        (input `text`, `answer`) overlaps the eval set, else None."""
        label = self.exact.get(exact_key(text))
        if label:
            return "exact", label, "the whole input"
        ws = self.content_words(text + "\n" + answer)
        for k in self.lengths:
            for i in range(len(ws) - k + 1):
                gram = " ".join(ws[i : i + k])
                label = self.grams.get(gram)
                if label:
                    return "ngram", label, gram
        return None
