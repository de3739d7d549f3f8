"""Capabilities and task families: one dict, one line per family.

A capability is a ShopBench track; a family is a kind of task inside it with a fixed
task_type and a default metric. A record names its family (`task_name`, or the dev set's
`taskN`), gets one from its file (`data.file_tasks`), or is recognised by its prompt:
each family carries a regex on `input_field` (and optionally one on the answer). Adding a
family is one `_family(...)` line here plus a row in tests/data/families.jsonl.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CONCEPT = "understanding-shopping-concepts"
KNOWLEDGE = "shopping-knowledge-reasoning"
BEHAVIOR = "user-behavior-alignment"
MULTILINGUAL = "multi-lingual-abilities"
CAPABILITIES = (CONCEPT, KNOWLEDGE, BEHAVIOR, MULTILINGUAL)
# Outside e-commerce: records of this capability (the built-in "ood" corpus, or files and
# records labelled so) are trained on only as `data.ood_fraction` of an epoch, never scored.
OOD = "ood"
LABELS = (*CAPABILITIES, OOD)  # what a record's capability, or data.file_capabilities, may say
TRACK_PREFIX = "amazon-kdd-cup-24-"  # the KDD Cup files' track names are prefixed with this
UNKNOWN = "unknown"  # the track of a record, or task of the user's own, that names none

# task_type -> metrics ShopBench allows for it.
METRICS_BY_TYPE = {
    "multiple-choice": ("accuracy",),
    "ranking": ("ndcg",),
    "retrieval": ("hit rate@3",),
    "named_entity_recognition": ("micro f1",),
    "generation": (
        "rougel",
        "bleu",
        "jp-bleu",
        "sent-transformer",
        "multilingual-sent-transformer",
    ),
}


@dataclass(frozen=True)
class Family:
    name: str
    capability: str
    task_type: str
    metric: str  # the family's default; a record may use another metric of its task_type
    pattern: re.Pattern  # recogniser: searched in input_field (case-insensitive)
    answer_pattern: re.Pattern | None  # or searched in the rendered answer
    fallback: bool  # broad recogniser: tried only when no specific one matches

    def record(self, prompt: str, answer) -> dict:
        """A ShopBench record of this family (the built-in corpora write these)."""
        return {
            "input_field": prompt,
            "output_field": answer,
            "task_type": self.task_type,
            "metric": self.metric,
            "task_name": self.name,
            "capability": self.capability,
        }


FAMILIES: dict[str, Family] = {}
DEV_TASKS: dict[str, str] = {}  # ShopBench dev set task id (task1..task18) -> family


def _family(
    name: str,
    capability: str,
    task_type: str,
    metric: str,
    pattern: str,
    answer: str = "",
    fallback: bool = False,
    dev: str = "",
) -> None:
    assert metric in METRICS_BY_TYPE[task_type], (name, task_type, metric)
    flags = re.IGNORECASE | re.DOTALL
    answer_re = re.compile(answer, flags) if answer else None
    family = Family(
        name, capability, task_type, metric, re.compile(pattern, flags), answer_re, fallback
    )
    FAMILIES[name] = family
    if dev:
        DEV_TASKS[dev] = name


MC, GEN, RET = "multiple-choice", "generation", "retrieval"
NER, RANK = "named_entity_recognition", "ranking"
_PRODUCT_ON_SITE = r"appears on (an )?e-commerce website"
_NUMERIC = r"\b(how (many|much)|total|in all|altogether|what amount)\b"
_ARITHMETIC = (  # broad: numeric_reasoning is a fallback, tried after every specific family;
    # it needs a number in the question (not an option's number), and a question about how
    # things relate is no sum
    r"\A(?=.*(\$\d|\d(?![.):]\s)))(?!.*\brelat(ion|ionship|ed)\b).*?"
    r"\b(how (many|much|tall|long|far|old|fast)|total|in all|altogether|find the number"
    r"|what (fraction|amount|percent\w*)|what is the (length|width|area|price|cost|weight)"
    r"|cost|per)\b"
)

# fmt: off
# One line per family: name, capability, task_type, default metric, recogniser on input_field
# (case-insensitive regex), then: answer= a regex on the answer that also recognises it,
# fallback= tried only when no specific family matches, dev= the dev set's task id.
# The 18 families of the ShopBench development set (task1..task18), in order.
_family("category_explanation", CONCEPT, GEN, "sent-transformer",
        r"\b(explain|tell me what)\b[^\n]*\b(product (category|type)|category)", dev="task1")
_family("category_attribute_mcq", CONCEPT, MC, "accuracy",
        r"\bcategor(y|ies)\b[^\n]*\bhave the attribute\b", dev="task2")
_family("review_snippet_retrieval", CONCEPT, RET, "hit rate@3",
        r"review snippets?\b", dev="task3")
_family("query_ner", CONCEPT, NER, "micro f1",
        r"(following query|\bquery:|customer's query|in the query)", dev="task4")
_family("attribute_inference_mcq", CONCEPT, MC, "accuracy",
        rf"\A(?!.*{_NUMERIC}).*?({_PRODUCT_ON_SITE}|product title:[^\n]*\. which)", dev="task5")
_family("review_keyphrase_extraction", CONCEPT, GEN, "rougel",
        r"extract the key ?phrase", dev="task6")
_family("review_aspect_retrieval", CONCEPT, RET, "hit rate@3",
        r"(list of \w+ aspects|aspect list)", dev="task7")
_family("numeric_reasoning", KNOWLEDGE, MC, "accuracy",
        _ARITHMETIC, fallback=True, dev="task8")
_family("commonsense_event", KNOWLEDGE, MC, "accuracy",
        r"(\bPersonX\b|most reasonable step)", dev="task9")
_family("complementary_category", KNOWLEDGE, MC, "accuracy",
        r"\b(best complement|bought together with)", dev="task10")
_family("query_query_relation", BEHAVIOR, MC, "accuracy",
        r"relation (from|between) query", dev="task11")
_family("product_ranking", BEHAVIOR, RANK, "ndcg",
        r"\brank", dev="task12")
_family("next_query_in_session", BEHAVIOR, RET, "hit rate@3",
        r"(next query|sequence of actions)", dev="task13")
_family("also_bought_retrieval", BEHAVIOR, RET, "hit rate@3",
        r"\b(may also (purchase|buy)|will (they|the user) also (buy|purchase))\b", dev="task14")
_family("review_rating", BEHAVIOR, MC, "accuracy",
        r"(\b(rate|rating|evaluate|assess|score)\b[^\n]*\breview\b|\breview\b[^\n]*\b(rating|scale)\b)",
        dev="task15")
_family("multilingual_keyword_mcq", MULTILINGUAL, MC, "accuracy",
        r"(keyword sets?\b|sets of (phrases|keywords)|\bkeyword '[^']*'\?)", dev="task16")
_family("title_translation", MULTILINGUAL, GEN, "bleu",
        r"\A(?=.*?(product title|entitled|with title|\btitle:))(?=.*?(translat|adequate title))",
        dev="task17")
_family("cross_language_description_match", MULTILINGUAL, MC, "accuracy",
        r"\bdifferent language\b", dev="task18")
# Families the method adds beyond the development set.
_family("concept_normalization", CONCEPT, GEN, "rougel",
        r"\b(normali[sz]e|canonical (name|form))\b")
_family("product_summarization", CONCEPT, GEN, "rougel",
        r"\bsummari[sz]e (the|this) (product|review|description|listing)")
_family("product_attribute_extraction", CONCEPT, NER, "micro f1",
        r"\btitle\b")
_family("multi_hop_reasoning", KNOWLEDGE, MC, "accuracy",
        r"(answer choices:|multi-?hop|\bcombin\w+ (the|both) (facts|clues))")
_family("chain_of_thought_reasoning", KNOWLEDGE, GEN, "sent-transformer",
        r"think step by step", answer=r"(^|\n)#### \S|the answer is")
_family("session_recommendation", BEHAVIOR, RET, "hit rate@3",
        r"\b(browsing|purchase|session) history\b")
_family("sentence_translation", MULTILINGUAL, GEN, "bleu",  # upstream spells it "Sentece" too
        r"translat\w*\b.*\bsente?n?ce\b")
# The shopping world's effects of known size (ecomtrain/data/world.py): a target, the same
# question on its trained categories, one source per arm (its guide's edition), a control.
_family("accessory_rule", KNOWLEDGE, MC, "accuracy",
        r"\bA shopper buys a\b[^\n]*\bshop's rule\b")
_family("accessory_recall", KNOWLEDGE, MC, "accuracy",
        r"\bA shopper orders a\b[^\n]*\bshop's rule\b")
_family("accessory_guide_none", CONCEPT, MC, "accuracy", r"\bspring accessory guide\b")
_family("accessory_guide_chance", CONCEPT, MC, "accuracy", r"\bholiday accessory guide\b")
_family("accessory_guide_half", CONCEPT, MC, "accuracy", r"\bsummer accessory guide\b")
_family("accessory_guide_all", CONCEPT, MC, "accuracy", r"\bautumn accessory guide\b")
_family("accessory_guide_sham", CONCEPT, MC, "accuracy", r"\bwinter accessory guide\b")
_family("stock_status", BEHAVIOR, MC, "accuracy", r"\bwhat is its stock status\b")
# fmt: on


def recognise(input_field: str, task_type: str, answer: str = "") -> list[str]:
    """Families whose recogniser matches: every specific match, else every fallback match."""
    hits: dict[bool, list[str]] = {False: [], True: []}
    for f in FAMILIES.values():
        if f.task_type != task_type:
            continue
        if f.pattern.search(input_field) or (f.answer_pattern and f.answer_pattern.search(answer)):
            hits[f.fallback].append(f.name)
    return hits[False] or hits[True]


def family_named(name: str) -> Family | None:
    """The family a `task_name` denotes: a family name or a dev-set task id."""
    return FAMILIES.get(DEV_TASKS.get(name, name))


def expand(names: list[str]) -> list[str]:
    """Resolve capability names to their built-in families; keep every other name (a
    built-in family, or a task of the user's own that the corpus holds)."""
    out: list[str] = []
    for name in names:
        if name in CAPABILITIES:
            out += [f.name for f in FAMILIES.values() if f.capability == name]
        else:
            out.append(name)
    return list(dict.fromkeys(out))


def track_of(record: dict) -> str:
    """A record's track (capability): its `track` less the KDD Cup prefix, else its
    `capability`, else its task family's, else "unknown"."""
    if record.get("track"):
        return str(record["track"]).removeprefix(TRACK_PREFIX)
    if record.get("capability"):
        return str(record["capability"])
    family = family_named(str(record.get("task_name") or ""))
    return family.capability if family else UNKNOWN


def capabilities_of(names: list[str]) -> list[str]:
    """Capabilities covered by the built-in families of a list, in canonical order (a task
    of the user's own has its capability in the corpus scan: data.mixture)."""
    covered = {FAMILIES[n].capability for n in names if n in FAMILIES}
    return [c for c in CAPABILITIES if c in covered]
