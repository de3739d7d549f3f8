"""Decontamination: content overlap is caught, shared prompt templates are not."""

from records import generation, write_jsonl

from ecomtrain.config import DataConfig
from ecomtrain.data.overlap import Decontaminator
from ecomtrain.data.scan import eval_index, parse_file

TEMPLATE = (
    "You are given a user review to a(n) {p} product. Please choose three aspects from the "
    "list that are covered by the review. Do not give explanations.\nReview: {r}\nOutput: "
)
EVAL = [
    ("dev:1", TEMPLATE.format(p="kettle", r="It boils water fast but the lid squeaks loudly"), "1"),
    ("dev:2", TEMPLATE.format(p="tent", r="Rain came through the seams on the second night"), "2"),
    ("dev:3", TEMPLATE.format(p="lamp", r="Bright warm light and the switch feels solid"), "3"),
]


def test_template_words_are_removed_content_kept():
    index = Decontaminator(EVAL, n=8)
    words = index.content_words(EVAL[0][1])
    assert "kettle" in words and "squeaks" in words
    assert "explanations" not in words and "aspects" not in words


def test_overlap_exact_ngram_and_template_only():
    index = Decontaminator(EVAL, n=8)
    assert index.check(EVAL[1][1].upper() + "  ", "x")[:2] == ("exact", "dev:2")
    leaked = "Rate this review of a tent: rain came through the seams on the second night!"
    kind, label, shared = index.check(leaked, "2")
    assert (kind, label) == ("ngram", "dev:2") and "came through the seams" in shared
    same_template = TEMPLATE.format(p="kettle", r="Looks nice on the counter and pours well")
    assert index.check(same_template, "1") is None


def test_parse_marks_contaminated_training_records(tmp_path):
    eval_file = tmp_path / "dev.jsonl"
    corpus = tmp_path / "train.jsonl"
    write_jsonl(eval_file, [generation(t, "x") for _, t, _ in EVAL])
    leaked = "Summarize the product review: rain came through the seams on the second night."
    write_jsonl(corpus, [generation(leaked, "x")])
    cfg = DataConfig(decontaminate=[str(eval_file)], ngram=8, eval_fraction=0.0)
    (row,) = parse_file(str(corpus), None, cfg, eval_index(cfg))
    assert row["split"] == "ngram" and row["task_family"] == "product_summarization"
