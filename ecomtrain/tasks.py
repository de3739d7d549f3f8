"""Capabilities and task families: one dict, one line per family.

A capability is a ShopBench track; a family is a kind of task inside it with a fixed
task_type and metric. Adding a family is one `_family(...)` line here.
"""

from __future__ import annotations

from dataclasses import dataclass

CONCEPT = "understanding-shopping-concepts"
KNOWLEDGE = "shopping-knowledge-reasoning"
BEHAVIOR = "user-behavior-alignment"
MULTILINGUAL = "multi-lingual-abilities"
CAPABILITIES = (CONCEPT, KNOWLEDGE, BEHAVIOR, MULTILINGUAL)

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
    metric: str


FAMILIES: dict[str, Family] = {}


def _family(name: str, capability: str, task_type: str, metric: str) -> None:
    assert metric in METRICS_BY_TYPE[task_type], (name, task_type, metric)
    FAMILIES[name] = Family(name, capability, task_type, metric)


# The 18 families of the ShopBench development set (task1..task18), in order.
_family("category_explanation", CONCEPT, "generation", "sent-transformer")
_family("category_attribute_mcq", CONCEPT, "multiple-choice", "accuracy")
_family("review_snippet_retrieval", CONCEPT, "retrieval", "hit rate@3")
_family("query_ner", CONCEPT, "named_entity_recognition", "micro f1")
_family("attribute_inference_mcq", CONCEPT, "multiple-choice", "accuracy")
_family("review_keyphrase_extraction", CONCEPT, "generation", "rougel")
_family("review_aspect_retrieval", CONCEPT, "retrieval", "hit rate@3")
_family("numeric_reasoning", KNOWLEDGE, "multiple-choice", "accuracy")
_family("commonsense_event", KNOWLEDGE, "multiple-choice", "accuracy")
_family("complementary_category", KNOWLEDGE, "multiple-choice", "accuracy")
_family("query_query_relation", BEHAVIOR, "multiple-choice", "accuracy")
_family("product_ranking", BEHAVIOR, "ranking", "ndcg")
_family("next_query_in_session", BEHAVIOR, "multiple-choice", "accuracy")
_family("also_bought_retrieval", BEHAVIOR, "retrieval", "hit rate@3")
_family("review_rating", BEHAVIOR, "multiple-choice", "accuracy")
_family("multilingual_keyword_mcq", MULTILINGUAL, "multiple-choice", "accuracy")
_family("title_translation", MULTILINGUAL, "generation", "bleu")
_family("cross_language_description_match", MULTILINGUAL, "multiple-choice", "accuracy")
# Families the method adds beyond the development set.
_family("concept_normalization", CONCEPT, "generation", "rougel")
_family("product_summarization", CONCEPT, "generation", "rougel")
_family("multi_hop_reasoning", KNOWLEDGE, "multiple-choice", "accuracy")
_family("session_recommendation", BEHAVIOR, "retrieval", "hit rate@3")


def expand(names: list[str]) -> list[str]:
    """Resolve capability names to their families; keep family names; reject the rest."""
    out: list[str] = []
    for name in names:
        if name in CAPABILITIES:
            out += [f.name for f in FAMILIES.values() if f.capability == name]
        elif name in FAMILIES:
            out.append(name)
        else:
            raise KeyError(
                f"unknown task or capability {name!r}; capabilities: {', '.join(CAPABILITIES)}"
            )
    return list(dict.fromkeys(out))


def capabilities_of(names: list[str]) -> list[str]:
    """Capabilities covered by a list of families, in canonical order."""
    covered = {FAMILIES[n].capability for n in names}
    return [c for c in CAPABILITIES if c in covered]
