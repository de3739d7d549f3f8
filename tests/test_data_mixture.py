"""The task mixture, and the whole Ray Data pipeline on a local cluster."""

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ecomtrain.base_model import resolve_model
from ecomtrain.config import Config, ConfigError, DataConfig, ModelConfig
from ecomtrain.data.corpus import resolve_corpus
from ecomtrain.data.demo import demo_records
from ecomtrain.data.mixture import (
    copies,
    multiplicities,
    positions,
    source_keys,
    stats,
    targets,
)
from ecomtrain.data.pipeline import (
    check_names,
    checked_scan,
    mixture_stats,
    task_split,
    train_dataset,
)
from ecomtrain.data.records import CorpusError
from ecomtrain.data.scan import is_eval, parse_file, scan_corpus
from ecomtrain.data.share import Share, StreamStats, epoch_order, read_share, stream

COUNTS = {"query_ner": 900, "review_rating": 100, "title_translation": 0}


def test_temperature_one_is_proportional_and_larger_flattens():
    t1 = targets(COUNTS, DataConfig())
    assert t1 == pytest.approx({"query_ner": 900, "review_rating": 100, "title_translation": 0})
    t2 = targets(COUNTS, DataConfig(temperature=2.0))
    assert t2["query_ner"] / t2["review_rating"] == pytest.approx(3.0)  # sqrt(900 / 100)
    assert sum(t2.values()) == pytest.approx(1000)
    flat = targets(COUNTS, DataConfig(temperature=1e6))
    assert flat["query_ner"] == pytest.approx(flat["review_rating"], rel=1e-3)


def test_caps_and_weights():
    capped = targets(COUNTS, DataConfig(max_per_task=200))
    assert capped == pytest.approx({"query_ner": 200, "review_rating": 100, "title_translation": 0})
    w = targets(COUNTS, DataConfig(capability_weights={"user-behavior-alignment": 9.0}))
    assert w["query_ner"] == pytest.approx(w["review_rating"])  # 900 * 1 vs 100 * 9
    off = targets(COUNTS, DataConfig(task_weights={"query_ner": 0.0}))
    assert off["query_ner"] == 0 and off["review_rating"] == pytest.approx(1000)
    with pytest.raises(ValueError, match="data.task_weights: unknown task family 'nope'"):
        targets(COUNTS, DataConfig(task_weights={"nope": 1.0}))
    with pytest.raises(ValueError, match="data.capability_weights: unknown capability"):
        targets(COUNTS, DataConfig(capability_weights={"shoes": 1.0}))
    with pytest.raises(ConfigError, match="temperature: 0 must be > 0"):
        targets(COUNTS, DataConfig(temperature=0))
    with pytest.raises(ValueError, match="mixture is empty"):
        targets({"query_ner": 0}, DataConfig())


def test_shares_are_the_epochs_shares_whatever_the_sizes():
    """data.weighting shares: task weights are the tasks' shares; capability weights the
    capabilities', split among their tasks by size; an unnamed task or capability is refused."""
    counts = {"query_ner": 900, "review_snippet_retrieval": 100, "review_rating": 300}
    shares = {"query_ner": 0.2, "review_snippet_retrieval": 0.3, "review_rating": 0.5}
    t = targets(counts, DataConfig(weighting="shares", task_weights=shares))
    total = sum(t.values())
    assert total == pytest.approx(1300)  # an epoch keeps its size
    assert [t[k] / total for k in counts] == pytest.approx([0.2, 0.3, 0.5])
    caps = {"understanding-shopping-concepts": 1.0, "user-behavior-alignment": 3.0}
    by_cap = targets(counts, DataConfig(weighting="shares", capability_weights=caps))
    # query_ner and review_snippet_retrieval are both concept tasks: a quarter, 9 : 1 by size
    assert by_cap["review_rating"] / 1300 == pytest.approx(0.75)
    assert by_cap["query_ner"] / by_cap["review_snippet_retrieval"] == pytest.approx(9.0)
    size = targets(counts, DataConfig(task_weights={"query_ner": 0.2}))  # the size rule
    assert size["query_ner"] / size["review_rating"] == pytest.approx(0.2 * 900 / 300)
    with pytest.raises(ValueError, match="every task trained needs its share; none for query_ner"):
        targets(counts, DataConfig(weighting="shares", task_weights={"review_rating": 1.0}))
    with pytest.raises(ValueError, match="none for understanding-shopping-concepts"):
        only_behavior = {"user-behavior-alignment": 1.0}
        targets(counts, DataConfig(weighting="shares", capability_weights=only_behavior))


def test_positions_are_even_and_follow_the_seed():
    u = positions(source_keys([f"a.jsonl:{i}" for i in range(1000)]), seed=0)
    assert sorted(u) == pytest.approx((np.arange(1000) + 0.5) / 1000)
    assert list(u) == list(positions(source_keys([f"a.jsonl:{i}" for i in range(1000)]), seed=0))
    assert list(u) != list(positions(source_keys([f"a.jsonl:{i}" for i in range(1000)]), seed=1))


@pytest.mark.parametrize("multiplicity", [0.3, 0.5, 0.77, 1.4, 2.4])
def test_every_epoch_keeps_its_share_another_part_and_every_record_comes_round(multiplicity):
    """A downsampled task keeps its target share each epoch (to one record), a different part
    each epoch, and every record at least once within ceil(1 / fraction) epochs."""
    whole, frac = divmod(multiplicity, 1.0)
    u = positions(source_keys([f"a.jsonl:{i}" for i in range(500)]), seed=7)
    epochs = [[copies(x, multiplicity, e) for x in u] for e in range(math.ceil(1 / frac))]
    for kept in epochs:
        assert set(kept) <= {int(whole), int(whole) + 1}
        assert abs(sum(kept) - multiplicity * len(u)) <= 1
    assert epochs[0] != epochs[1]
    assert all(any(e[i] > whole for e in epochs) for i in range(len(u)))


def test_mixture_stats_are_flat_and_json_able():
    s = stats(COUNTS, DataConfig(temperature=2.0))
    json.dumps(s)
    assert (s["n_tasks"], s["n_capabilities"], s["capability_coverage"]) == (2, 2, 0.5)
    p = [0.75, 0.25]
    assert s["task_entropy"] == pytest.approx(-sum(x * math.log(x) for x in p))
    assert s["records/query_ner"] == 750 and "records/title_translation" not in s
    assert (s["share/query_ner"], s["share/title_translation"]) == (0.75, 0.0)
    assert all(not isinstance(v, (dict, list)) for v in s.values())


def small_cfg(tmp_path, records: list[dict], **data) -> Config:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n")
    cfg = Config()
    cfg.data = DataConfig(corpus=[str(corpus)], max_seq_len=128, pack_window=64, **data)
    cfg.data.rejects = str(tmp_path / "rejects.jsonl")
    cfg.eval.prompt_prefix = False
    cfg.train.num_workers, cfg.train.micro_batch_size = 2, 2
    return cfg


def share_of(dataset) -> Share:
    return read_share(dataset, batch_size=64)


def test_pipeline_shares_the_trial_deterministically(module_ray, tmp_path):
    cfg = small_cfg(tmp_path, demo_records(per_task=12))
    model = resolve_model(ModelConfig())
    tasks = ["query_ner", "review_rating", "title_translation"]
    shares, mult = train_dataset(cfg, model, tasks, 2, checked_scan(cfg.data))
    held_out = task_split(cfg, tasks)[1]  # the raw held-out split, whatever the tasks
    got = [share_of(s) for s in shares]
    again = [share_of(s) for s in train_dataset(cfg, model, tasks, 2, checked_scan(cfg.data))[0]]
    assert [list(g.key) for g in got] == [list(a.key) for a in again]  # reproducible
    assert abs(len(got[0]) - len(got[1])) <= 1  # one share per rank, even
    keys = [*got[0].key, *got[1].key]
    assert (
        len(set(keys)) == len(keys) == mixture_stats(cfg, tasks, checked_scan(cfg.data))["records"]
    )
    assert {f for g in got for f in g.tasks} == set(tasks) and set(mult) == set(tasks)
    batch = next(stream(got[0], cfg, mult, rank=0))
    assert batch["input_ids"].shape == (2, 128) == batch["segment_ids"].shape
    assert len(batch["records"]) > 2  # records share rows
    eval_rows = held_out.take_all()
    need = {"input", "answer", "output_json", "task_name", "task_family", "capability"}
    assert eval_rows and need | {"task_type", "metric"} <= set(eval_rows[0])
    held_tasks = {r["task_family"] for r in eval_rows}  # every task, not just the trial's
    assert len(held_tasks) >= 6 and held_tasks <= {r["task_name"] for r in demo_records()}
    train_inputs = {r["input"] for r in task_split(cfg, tasks)[0].take_all()}
    assert not train_inputs & {r["input"] for r in eval_rows}


def test_epochs_follow_temperature_and_caps(module_ray, tmp_path):
    records = [r for r in demo_records(per_task=40) if r["task_name"] != "query_ner"]
    records += [r for r in demo_records(per_task=6) if r["task_name"] == "query_ner"]
    cfg = small_cfg(tmp_path, records, temperature=3.0, max_per_task=30)
    train, _ = task_split(cfg, ["query_ner", "review_rating", "numeric_reasoning"])
    rows = train.take_all()
    counts = Counter(r["task_family"] for r in rows)
    mult = multiplicities(dict(counts), cfg.data)
    family = [r["task_family"] for r in rows]
    share = Share.of(
        [[0]] * len(rows), [0] * len(rows), family, source_keys([r["source"] for r in rows])
    )
    want = targets(dict(counts), cfg.data)
    for epoch in range(3):
        got = Counter(share.family(i) for i in epoch_order(share, mult, 0, epoch, rank=0))
        assert got["query_ner"] > counts["query_ner"]  # the small task is upsampled
        for t, n in want.items():
            assert abs(got[t] - n) <= 1, (t, got[t], n)


def test_stream_trains_on_every_record_and_resumes_across_epochs(module_ray, tmp_path):
    """A downsampled task's records all come round within a few epochs; a stream that skips k
    micro-batches continues exactly where an uninterrupted one is after k, across epochs."""
    records = demo_records(per_task=30)
    cfg = small_cfg(tmp_path, records, max_per_task=8)
    model = resolve_model(ModelConfig())
    shares, mult = train_dataset(
        cfg, model, ["query_ner", "review_rating"], 2, checked_scan(cfg.data)
    )
    share = share_of(shares[0])
    assert all(m < 1 for m in mult.values())  # both tasks are downsampled
    stats = StreamStats()
    endless = stream(share, cfg, mult, rank=0, stats=stats)
    first = [next(endless) for _ in range(40)]
    assert stats.epochs >= 4
    seen = {int(i) for b in first for i in b["records"]}
    assert seen == set(range(len(share)))  # every record, though each epoch keeps ~1/3
    per_epoch = stats.per_epoch[0]
    assert per_epoch < 0.5 * len(share)
    skipped = stream(share, cfg, mult, rank=0, skip=25)
    for want in first[25:]:
        got = next(skipped)
        assert all(np.array_equal(got[k], want[k]) for k in want)


def test_a_share_shorter_than_one_step_repeats_and_too_few_records_fail(module_ray, tmp_path):
    cfg = small_cfg(tmp_path, demo_records(per_task=3))
    cfg.train.num_workers, cfg.train.micro_batch_size = 2, 8
    model = resolve_model(ModelConfig())
    shares, mult = train_dataset(
        cfg, model, ["query_ner", "review_rating"], 2, checked_scan(cfg.data)
    )
    share = share_of(shares[1])
    assert len(share) < 8  # fewer records than rows of one micro-batch
    endless = stream(share, cfg, mult, rank=1)
    batches = [next(endless) for _ in range(3)]  # epochs repeat; no hang
    assert all(b["input_ids"].shape == (8, 128) for b in batches)
    with pytest.raises(CorpusError, match="cannot give each of 64 workers a share"):
        train_dataset(cfg, model, ["query_ner"], 64, checked_scan(cfg.data))


def test_pipeline_rejects_and_decontaminates(module_ray, tmp_path):
    records = demo_records(per_task=6)
    bad = dict(records[0], output_field="not an index")
    eval_file = tmp_path / "dev.jsonl"
    eval_file.write_text("".join(json.dumps(r) + "\n" for r in records[:5]))
    cfg = small_cfg(tmp_path, [*records, bad], decontaminate=[str(eval_file)])
    model = resolve_model(ModelConfig())
    with pytest.raises(CorpusError, match=r"corpus.jsonl:61: output_field: multiple-choice"):
        train_dataset(cfg, model, [], 2, checked_scan(cfg.data))
    cfg.data.max_bad_fraction = 0.05
    shares, _ = train_dataset(cfg, model, [], 2, checked_scan(cfg.data))
    (reject,) = [json.loads(x) for x in Path(cfg.data.rejects).read_text().splitlines()]
    assert reject["line"] == 61 and reject["record"]["output_field"] == "not an index"
    stats = mixture_stats(cfg, [], checked_scan(cfg.data))
    assert stats["bad_records"] == 1
    not_held = sum(not is_eval(r["input_field"], cfg.data.eval_fraction) for r in records[:5])
    assert stats["decontaminated/exact"] == not_held > 0  # held-out ones never train anyway
    assert sum(len(share_of(s)) for s in shares) == stats["records"]


def test_tasks_of_the_users_own_train_and_weigh_by_their_capability(module_ray, tmp_path):
    """Records of no built-in family are kept: a task_name of the user's own, or the file's
    name; their capability from data.file_capabilities weighs them in the mixture; the
    pipeline trains on them when data.tasks names them."""
    own = [
        {
            "input_field": f"Is item {i} a shoe?\n0. no\n1. yes\nAnswer:",
            "output_field": i % 2,
            "task_type": "multiple-choice",
            "metric": "accuracy",
            "task_name": "shoe_check",
        }
        for i in range(40)
    ]
    cfg = small_cfg(tmp_path, demo_records(per_task=12) + own)
    cfg.data.file_capabilities = {"corpus.jsonl": "user-behavior-alignment"}
    scan = scan_corpus(resolve_corpus(cfg.data.corpus), cfg.data, use_ray=False)
    assert scan["bad"] == 0 and list(scan["tasks"])[-1] == "shoe_check"
    assert scan["capabilities"]["shoe_check"] == "user-behavior-alignment"
    assert scan["tasks"]["shoe_check"]["train"] + scan["tasks"]["shoe_check"]["eval"] == 40
    cfg.data.tasks = ["shoe_check", "query_ner"]
    check_names(cfg, "config")  # the corpus holds it
    mix = mixture_stats(cfg, cfg.data.tasks, checked_scan(cfg.data))
    assert mix["n_tasks"] == 2 and mix["n_capabilities"] == 2
    assert 0 < mix["capability_share/user-behavior-alignment"] < 1
    cfg.data.capability_weights = {"user-behavior-alignment": 0.0}
    assert (
        mixture_stats(cfg, cfg.data.tasks, checked_scan(cfg.data))[
            "capability_share/user-behavior-alignment"
        ]
        == 0
    )
    cfg.data.capability_weights = {}
    shares, mult = train_dataset(
        cfg, resolve_model(ModelConfig()), cfg.data.tasks, 2, checked_scan(cfg.data)
    )
    trained = Counter(t for s in map(share_of, shares) for t in s.tasks)
    assert set(trained) == {"shoe_check", "query_ner"} and mult["shoe_check"] > 0


def test_an_ood_fraction_takes_its_share_of_an_epoch_of_unchanged_size():
    counts = COUNTS | {"ood_arithmetic": 30, "ood_general_knowledge": 10}
    caps = {"ood_arithmetic": "ood", "ood_general_knowledge": "ood"}
    plain = targets(counts, DataConfig(), caps)
    assert plain["ood_arithmetic"] == plain["ood_general_knowledge"] == 0
    assert plain["query_ner"] == pytest.approx(900)  # as without the ood tasks
    mixed = targets(counts, DataConfig(ood_fraction=0.3), caps)
    assert sum(mixed.values()) == pytest.approx(1000)  # the e-commerce epoch's size
    assert mixed["ood_arithmetic"] + mixed["ood_general_knowledge"] == pytest.approx(300)
    assert mixed["ood_arithmetic"] / mixed["ood_general_knowledge"] == pytest.approx(3)
    assert mixed["query_ner"] / mixed["review_rating"] == pytest.approx(9)
    s = stats(counts, DataConfig(ood_fraction=0.3), caps)
    assert s["ood_share"] == pytest.approx(0.3) and (s["n_tasks"], s["records"]) == (2, 1000)
    assert s["records/ood_arithmetic"] == 225
    entropy = {
        stats(counts, DataConfig(ood_fraction=f), caps)["task_entropy"] for f in (0, 0.1, 0.3)
    }
    assert len(entropy) == 1  # the same e-commerce diversity whatever the share
    with pytest.raises(
        ValueError, match="no out-of-domain training records.*data.corpus: \\[..., ood\\]"
    ):
        targets(COUNTS, DataConfig(ood_fraction=0.1))


def test_ood_tasks_train_at_their_share_and_are_never_evaluated(module_ray, tmp_path):
    cfg = small_cfg(tmp_path, demo_records(per_task=20))
    tasks = ["query_ner", "review_rating", "numeric_reasoning"]
    cfg.data.ood_fraction = 0.25
    with pytest.raises(ConfigError, match="holds no out-of-domain task"):
        check_names(cfg, "config")
    cfg.data.corpus.append("ood:40")
    check_names(cfg, "config")
    model = resolve_model(ModelConfig())
    shares, mult = train_dataset(cfg, model, tasks, 2, checked_scan(cfg.data))
    held_out = task_split(cfg, tasks)[1]  # the raw held-out split, whatever the tasks
    assert set(mult) == {*tasks, "ood_arithmetic", "ood_general_knowledge"}
    assert not {r["capability"] for r in held_out.take_all()} & {"ood"}
    mix = mixture_stats(cfg, tasks, checked_scan(cfg.data))
    for epoch in range(3):
        got = Counter()
        for rank, s in enumerate(shares):
            share = share_of(s)
            got += Counter(share.family(i) for i in epoch_order(share, mult, 0, epoch, rank))
        ood = got["ood_arithmetic"] + got["ood_general_knowledge"]
        assert abs(ood - 0.25 * mix["records"]) <= 4, (got, mix)  # one record per task, rank
        assert sum(got.values()) == pytest.approx(mix["records"], abs=12)
    cfg.data.ood_fraction = 0.0
    shares, mult = train_dataset(cfg, model, [], 2, checked_scan(cfg.data))
    trained = {t for s in shares for t in share_of(s).tasks}
    assert trained and not trained & {"ood_arithmetic", "ood_general_knowledge"}


def test_provenance_keeps_synthetic_or_curated_training_records(module_ray, tmp_path):
    """Records ecomtrain.generate wrote (a provenance object), or labelled synthetic by
    themselves or their file, are synthetic; the filter keeps one kind for training, the
    held-out split whatever it says; a malformed label is a bad record."""
    records = demo_records(per_task=24)
    for i, r in enumerate(records):
        if i % 2:
            r["provenance"] = {"spec": "s", "backend": "local"} if i % 4 == 1 else "synthetic"
    labelled = tmp_path / "gpt_written.jsonl"
    extra = [r for r in demo_records(per_task=8) if r["task_name"] == "query_ner"]
    labelled.write_text("".join(json.dumps(r) + "\n" for r in extra))
    cfg = small_cfg(tmp_path, records, max_per_task=6)
    cfg.data.corpus.append(str(labelled))
    cfg.data.file_provenance = {"gpt_*.jsonl": "synthetic"}
    scan = scan_corpus(resolve_corpus(cfg.data.corpus), cfg.data, use_ray=False)
    assert scan["bad"] == 0
    ner = scan["tasks"]["query_ner"]
    held = {}
    for provenance in ("curated", "synthetic", "both"):
        cfg.data.provenance = provenance
        train, held_out = task_split(cfg, [])
        rows = train.take_all()
        assert provenance == "both" or {r["provenance"] for r in rows} == {provenance}
        n_ner = sum(r["task_family"] == "query_ner" for r in rows)
        want = {
            "curated": ner["train"] - ner["train_synthetic"],
            "synthetic": ner["train_synthetic"],
        }
        assert n_ner == want.get(provenance, ner["train"]) > 0
        held_rows = held_out.take_all()
        held[provenance] = sorted(r["source"] for r in held_rows)
        mix = mixture_stats(cfg, [], scan)
        assert mix["records/query_ner"] == 6  # the equal budget per task
    assert held["curated"] == held["synthetic"] == held["both"]
    cfg.eval.provenance = "curated"  # score against curated answers only
    scored = task_split(cfg, [])[1].take_all()
    assert {r["provenance"] for r in scored} == {"curated"}
    assert len(scored) == sum(r["provenance"] == "curated" for r in held_rows)
    cfg.data.provenance = "both"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(dict(records[0], provenance="gpt")) + "\n")
    cfg.data.corpus, cfg.data.file_provenance = [str(bad)], {}
    (entry,) = parse_file(str(bad), None, cfg.data, None)
    assert (entry.field, entry.line) == ("provenance", 1) and "got 'gpt'" in entry.reason


def test_fixed_downsampling_trains_on_the_same_records_every_epoch():
    """data.downsample: fixed: a capped task keeps the same records each epoch, as many as
    its target (to one record), in a new order; rotate keeps another part."""
    sources = [f"a.jsonl:{i}" for i in range(100)] + [f"b.jsonl:{i}" for i in range(30)]
    family = ["query_ner"] * 100 + ["review_rating"] * 30
    share = Share.of([[0]] * 130, [0] * 130, family, source_keys(sources))
    counts = Counter(family)
    cfg = DataConfig(max_per_task=20)
    mult, want = multiplicities(dict(counts), cfg), targets(dict(counts), cfg)
    kept = {}
    for fixed in (False, True):
        orders = [epoch_order(share, mult, 0, e, 0, fixed) for e in range(4)]
        kept[fixed] = [frozenset(o) for o in orders]
        for order in orders:
            got = Counter(family[i] for i in order)
            assert all(abs(got[t] - n) <= 1 for t, n in want.items())
        assert list(orders[0]) != list(orders[1])  # shuffled anew either way
    assert len(set(kept[True])) == 1 and len(set(kept[False])) == 4


def test_a_windows_rows_come_in_random_order_not_longest_first():
    """First-fit decreasing packs a window longest records first; the stream shuffles the
    window's rows, so a step's records are of the window's usual make-up, and every record
    of the epoch is still trained on once."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(4, 120, size=400)
    ids = [list(range(1, n + 1)) for n in lengths]
    share = Share.of(
        ids, [2] * 400, ["query_ner"] * 400, source_keys([f"a:{i}" for i in range(400)])
    )
    cfg = Config()
    cfg.data.max_seq_len, cfg.data.pack_window, cfg.train.micro_batch_size = 128, 400, 1
    stats = StreamStats()
    endless = stream(share, cfg, {"query_ner": 1.0}, rank=0, stats=stats)
    rows = [next(endless)["records"]]  # the epoch is one window, packed by now
    rows += [next(endless)["records"] for _ in range(stats.rows - 1)]
    assert sorted(int(i) for r in rows for i in r) == list(range(400))
    longest = [int(lengths[r].max()) for r in rows]
    half = len(longest) // 2
    assert longest != sorted(longest, reverse=True)
    # longest-first would put every long record in the first half of the window
    assert abs(np.mean(longest[:half]) - np.mean(longest[half:])) < 15
