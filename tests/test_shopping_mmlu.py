"""Shopping MMLU in both layouts: files read into ShopBench records exactly as the
benchmark renders them, bad rows named by file and line, and a folder scored per skill."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ecomtrain.config import Config
from ecomtrain.data import shopping_mmlu
from ecomtrain.data.corpus import check_files, iter_items, resolve_corpus
from ecomtrain.data.records import CorpusError, render_answer
from ecomtrain.data.scan import eval_index, eval_rows
from ecomtrain.evaluate.__main__ import main as evaluate_main
from ecomtrain.evaluate.datafiles import load_data
from ecomtrain.tasks import BEHAVIOR, CONCEPT

MMLU = Path(__file__).parent / "data" / "shopping_mmlu"


def items(path) -> list:
    return list(iter_items(str(path)))


def test_multiple_choice_csv_is_rendered_as_the_benchmark_renders_it():
    first, second, third = items(MMLU / "multiple_choice" / "product_category_dataset.csv")
    assert first.record == {
        "input_field": "Which category does 'Acme Trail Runner, size 10' belong to?"
        "\n0. Kitchen\n1. Footwear\n2. Garden\n3. Toys\nAnswer: ",
        "output_field": 1,
        "task_name": "product_category",
        "task_type": "multiple-choice",
        "metric": "accuracy",
    }
    # a quoted question over three lines: the next row's line number counts them
    assert (first.line, second.line, third.line) == (2, 3, 6)
    assert second.record["input_field"].startswith('A product listing says:\n"Stainless')
    assert '\n1. A pair of "jeans"\n2. A lamp, desk\n' in second.record["input_field"]
    assert third.record["output_field"] == 2 and third.error is None


def test_review_rating_keeps_its_options_in_the_question():
    low, high = items(MMLU / "multiple_choice" / "review_rating_prediction_dataset.csv")
    assert low.record["input_field"].endswith("on a scale of 1 to 5.\nAnswer: ")
    assert (low.record["output_field"], high.record["output_field"]) == (1, 5)


def test_task_files_take_type_task_and_metric_from_their_names():
    (gen, _) = (i.record for i in items(MMLU / "generation" / "attribute_extraction_dataset.json"))
    assert gen == {
        "input_field": "Extract the material from: 'Wool hiking socks, 3 pairs'.",
        "output_field": "Wool",
        "task_name": "attribute_extraction",
        "task_type": "generation",
        "metric": "rougel",
    }
    (jp,) = items(MMLU / "generation" / "product_title_translation_JP_dataset.json")
    assert jp.record["metric"] == "jp-bleu"
    (rank,) = items(MMLU / "ranking" / "query_product_ranking_dataset.json")
    assert (rank.record["task_type"], rank.record["metric"]) == ("ranking", "ndcg")
    names = {
        "title_translation": "bleu",
        "multilingual_description": "multilingual-sent-transformer",
        "pt_name_explain": "sent-transformer",
        "aspect_extraction": "rougel",
    }
    assert {t: shopping_mmlu.generation_metric(t) for t in names} == names


def test_skill_files_get_their_skill_as_track():
    records, places = load_data(str(MMLU / "skills" / "skill3_behavior.json"))
    assert {r["track"] for r in records} == {BEHAVIOR}
    assert places[1].endswith("skill3_behavior.json:2")


def test_a_folder_reads_its_skill_files_else_its_task_files(tmp_path):
    both = shopping_mmlu.files(MMLU)
    assert [Path(f).name for f in both] == ["skill1_concept.json", "skill3_behavior.json"]
    task_wise = tmp_path / "data"
    shutil.copytree(MMLU, task_wise, ignore=shutil.ignore_patterns("skills"))
    names = [Path(f).name for f in shopping_mmlu.files(task_wise)]
    assert len(names) == 7 and names[0] == "product_category_dataset.csv"
    assert resolve_corpus([str(task_wise / "ranking")]) == [
        str((task_wise / "ranking" / "query_product_ranking_dataset.json").resolve())
    ]
    (tmp_path / "empty" / "skills").mkdir(parents=True)
    with pytest.raises(CorpusError, match="no Shopping MMLU files"):
        shopping_mmlu.files(tmp_path / "empty")


@pytest.mark.parametrize(
    "row, field, reason",
    [
        ('"Q?","__import__(\'os\').getcwd()",0', "choices", "not a list literal"),
        ("\"Q?\",\"['a', 'b', 'c']\",0", "choices", "expected a list of 4 options"),
        ("\"Q?\",\"['a', 'b', 'c', 'd']\",4", "answer", "4 is not an option number (0-3)"),
        ("\"Q?\",\"['a', 'b', 'c', 'd']\",two", "answer", "must be an integer, got 'two'"),
        ("\"\",\"['a', 'b', 'c', 'd']\",1", "question", "must be a non-empty string"),
    ],
)
def test_bad_csv_rows_are_named_by_file_and_line(row, field, reason, tmp_path, capsys):
    folder = tmp_path / "multiple_choice"
    folder.mkdir()
    path = folder / "product_category_dataset.csv"
    good = "\"Which is a shoe?\",\"['boot', 'cup', 'pen', 'key']\",0"
    path.write_text(f"question,choices,answer\n{good}\n{row}\n{good}\n")
    found = items(path)
    assert [i.error is None for i in found] == [True, False, True]  # the others are kept
    assert found[1].line == 3 and found[1].error[0] == field and reason in found[1].error[1]
    with pytest.raises(CorpusError, match=f"{path}:3: {field}: "):
        load_data(str(path))


def test_a_csv_without_the_benchmark_columns_is_refused(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("prompt,label\nhello,1\n")
    (item,) = items(path)
    assert item.line == 1 and item.error[0] == "header" and "question, choices" in item.error[1]


def test_scores_per_skill_are_means_of_their_tasks(tmp_path, capsys):
    """Gold answers everywhere but one multiple-choice task: its skill is the mean of its
    three tasks (0, 1, 1), and the overall score the mean of the two skills."""
    records, _ = load_data(str(MMLU))
    responses = [
        "3" if r["task_name"] == "product_category_mcq" else render_answer(r) for r in records
    ]
    resp = tmp_path / "r.jsonl"
    resp.write_text(
        "".join(json.dumps({"index": i, "response": r}) + "\n" for i, r in enumerate(responses))
    )
    out = tmp_path / "scores.json"
    args = ["score", "--data", str(MMLU), "--responses", str(resp), "--out", str(out)]
    assert evaluate_main(args) == 0
    scores = json.loads(out.read_text())
    assert scores["tasks"]["product_category_mcq"]["score"] == 0.0
    assert scores["tracks"][CONCEPT] == pytest.approx(2 / 3)
    assert scores["tracks"][BEHAVIOR] == pytest.approx(1.0)
    assert scores["overall"] == pytest.approx((2 / 3 + 1) / 2)
    assert CONCEPT in capsys.readouterr().out


def test_task_wise_folder_scores_every_task(tmp_path):
    task_wise = tmp_path / "data"
    shutil.copytree(MMLU, task_wise, ignore=shutil.ignore_patterns("skills"))
    records, places = load_data(str(task_wise))
    assert len(records) == 11 and len({r["task_name"] for r in records}) == 7
    assert places[0].endswith("product_category_dataset.csv:2")
    resp = tmp_path / "r.jsonl"
    resp.write_text(
        "".join(
            json.dumps({"index": i, "response": render_answer(r)}) + "\n"
            for i, r in enumerate(records)
        )
    )
    out = tmp_path / "scores.json"
    args = ["score", "--data", str(task_wise), "--responses", str(resp), "--out", str(out)]
    assert evaluate_main(args) == 0
    scores = json.loads(out.read_text())
    assert set(scores["tracks"]) == {"unknown"}  # task-wise files name no skill
    assert scores["overall"] == pytest.approx(1.0, abs=1e-6)


def test_a_folder_decontaminates_a_corpus_and_passes_the_file_check():
    cfg = Config()
    cfg.data.decontaminate = [str(MMLU)]
    check_files(cfg, "config")
    index = eval_index(cfg.data)
    prompt = "Extract the brand from the product title: 'Acme Trail Runner Shoes, Size 10'."
    assert index.check(prompt, "Acme") is not None
    cfg.data.decontaminate = [str(Path(__file__).parent)]
    with pytest.raises(Exception, match="is a directory, not a file"):
        check_files(cfg, "config")


def test_a_folder_is_an_extra_eval_set_scored_by_its_own_labels(tmp_path):
    """eval.extra_files takes the benchmark folder: rows keep the benchmark's task names
    and skills (extra/track/<skill> in a sweep); a dev-set task id still finds its family."""
    cfg = Config()
    cfg.eval.extra_files = [str(MMLU)]
    check_files(cfg, "config")
    rows = eval_rows(str(MMLU), cfg.data)
    assert len(rows) == 5 and {r["split"] for r in rows} == {"eval"}
    assert {r["task_name"]: r["capability"] for r in rows} == {
        "product_category_mcq": CONCEPT,
        "brand_extraction": CONCEPT,
        "query_product_type_ner": CONCEPT,
        "query_product_ranking": BEHAVIOR,
        "session_next_product": BEHAVIOR,
    }
    assert all(r["task_family"] == r["task_name"] for r in rows)  # tasks of their own
    assert rows[0]["source"].endswith("skill1_concept.json:1")
    dev = tmp_path / "dev.jsonl"
    record = {
        "input_field": "Which category does a trail runner belong to?\n0. Shoes\n1. Food",
        "output_field": 0,
        "task_type": "multiple-choice",
        "metric": "accuracy",
        "task_name": "task2",
        "track": "amazon-kdd-cup-24-understanding-shopping-concepts",
    }
    dev.write_text(json.dumps(record) + "\n")
    (row,) = eval_rows(str(dev), cfg.data)
    assert (row["task_name"], row["task_family"]) == ("task2", "category_attribute_mcq")
    assert row["capability"] == CONCEPT


def test_training_on_the_benchmark_is_warned_against(caplog):
    cfg = Config()
    cfg.data.corpus = ["demo", str(MMLU / "skills")]
    with caplog.at_level("WARNING", logger="ecomtrain"):
        check_files(cfg, "config")
    (record,) = caplog.records
    assert "data.corpus[1]" in record.message and "is Shopping MMLU" in record.message


def test_shopbench_records_in_folders_of_the_same_names_stay_as_they_are(tmp_path):
    """A user's own ShopBench files in a `generation/` or `skills/` folder are read as they
    are: only target_field records are converted, and a record's own track wins."""
    record = {
        "input_field": "Describe a red mug.",
        "output_field": "A red mug.",
        "task_type": "generation",
        "metric": "rougel",
        "task_name": "mug_notes",
        "track": "amazon-kdd-cup-24-multi-lingual-abilities",
    }
    for folder in ("generation", "skills"):
        path = tmp_path / folder / "skill1_concept.json"
        path.parent.mkdir()
        path.write_text(json.dumps(record) + "\n")
        (item,) = items(path)
        assert item.error is None and item.record == record


def test_data_validate_reads_a_folder(capsys):
    from ecomtrain.data.__main__ import main as data_main

    assert data_main(["validate", str(MMLU)]) == 0
    err = capsys.readouterr().err
    assert "5 records, 0 bad, in 2 files" in err
    assert "  capabilities: user-behavior-alignment 2" in err
