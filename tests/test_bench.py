"""The benchmarks' own arithmetic and their CPU path (the figures themselves are not tested)."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import ray
import torch
from transformers import LlamaConfig

import ecomtrain.bench.__main__ as cli
import ecomtrain.bench.mfu as bench_mfu
from ecomtrain.bench.ablation import ABLATIONS, ablation
from ecomtrain.bench.asha import (
    evaluations,
    grid_best,
    replay_asha,
    replayed_orders,
    steps_until_best,
)
from ecomtrain.bench.corpus import SPACE as CORPUS_SPACE
from ecomtrain.bench.corpus import corpus_path
from ecomtrain.bench.data import data_work
from ecomtrain.bench.evaluation import eval_work
from ecomtrain.bench.measure import ratio_interval
from ecomtrain.bench.mfu import (
    MFU_DIMENSIONS,
    forward_flops,
    mfu,
    mfu_matrix,
    mfu_variants,
    synthetic_rows,
)
from ecomtrain.bench.models import SHAPES, head_share
from ecomtrain.bench.pack import CONFIG as PACK_CONFIG
from ecomtrain.bench.pack import SPACE as PACK_SPACE
from ecomtrain.bench.pack import pack_bench, same_results
from ecomtrain.bench.raytax import (
    RAYTAX_GOAL,
    CpuTime,
    raytax,
    run_figures,
    steady_window,
)
from ecomtrain.bench.raytax import SPACE as RAYTAX_SPACE
from ecomtrain.bench.scale import SPACE as SCALE_SPACE
from ecomtrain.bench.scale import scale
from ecomtrain.bench.throughput import SPACE as THROUGHPUT_SPACE
from ecomtrain.bench.throughput import throughput
from ecomtrain.config import CONFIGS, ConfigError, load_config
from ecomtrain.train.inputs import model_inputs


def test_forward_flops_counts_attention_per_record():
    config = LlamaConfig(hidden_size=64, intermediate_size=128, vocab_size=100)
    config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads = 1, 4, 4
    inputs = {"position_ids": torch.tensor([[0, 1, 2, 0, 1]]), "targets": torch.zeros(2)}
    body, head = forward_flops(config, inputs)
    dense = 2 * (4 * 64 * 64 + 3 * 64 * 128) * 5
    assert body == dense + 2 * 64 * (9 + 4) and head == 2 * 64 * 100 * 2


def test_synthetic_rows_are_full_and_prompt_masked():
    rows = synthetic_rows(4, 512, 1000, seed=0)
    assert rows["input_ids"].shape == (4, 512)
    assert (rows["segment_ids"] > 0).float().mean() > 0.95  # FFD fills the first rows
    inputs = model_inputs(rows)
    assert 0 < len(inputs["targets"]) < 0.6 * inputs["input_ids"].shape[1]


@pytest.fixture
def test_shape(monkeypatch):
    """A small shape named "test" for mfu on CPU, and a config of short rows for it."""
    shape = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    shape |= {"num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 500}
    monkeypatch.setitem(SHAPES, "test", shape)
    return load_config(None, ["data.max_seq_len=128", "train.micro_batch_size=2"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU path is tests/test_gpu.py's")
def test_mfu_step_runs_on_cpu(test_shape):
    figures = mfu(test_shape, "test", steps=2, warmup=1, device="cpu")
    assert figures["tokens_per_s"] > 0 and figures["supervised_tokens_per_s"] > 0
    assert figures["trainable_params"] > 0 and torch.isfinite(torch.tensor(figures["loss"]))
    assert figures["model_tflops_per_s"] > 0  # (no peak FLOPs to divide by on a CPU)
    packed = mfu(test_shape, "test", steps=2, warmup=1, device="cpu", pack=2)
    assert packed["pack"] == 2 and packed["trainable_params"] == figures["trainable_params"]
    assert packed["base_params"] == figures["base_params"] and packed["tokens_per_s"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU path is tests/test_gpu.py's")
def test_mfu_matrix_runs_each_variant_in_its_own_process_and_keeps_failures(monkeypatch):
    """`bench mfu --matrix`: a row per variant, each from its own process; a variant that
    cannot run is that row's result, not the end of the matrix."""
    small = ["data.max_seq_len=64", "train.micro_batch_size=1"]
    cfg = load_config(None, small)
    assert len(mfu_variants(cfg, list(MFU_DIMENSIONS))) == 8
    compiled = load_config(None, [*small, "train.compile=true"])
    assert mfu_variants(compiled, ["checkpointing"]) == [
        ("sdpa", True, True),
        ("sdpa", False, True),
    ]
    with pytest.raises(ConfigError, match="unknown"):
        mfu_variants(cfg, ["kernel"])
    variants = [("sdpa", True, False), ("sdpa", False, False), ("flash_attention_2", False, False)]
    monkeypatch.setattr(bench_mfu, "has_flash_attn", lambda: False)
    out = mfu_matrix(None, small, "smol135m", 1, "cpu", variants[2:])
    assert out["rows"][0]["result"] == "not run: flash-attn is not installed"
    assert out["fastest_fitting"] is None
    monkeypatch.setattr(bench_mfu, "has_flash_attn", lambda: True)  # its process then fails
    out = mfu_matrix(None, small, "smol135m", 1, "cpu", variants)
    json.dumps(out)
    ckpt, plain, flash = out["rows"]
    assert ckpt["result"] == plain["result"] == "ok", out
    assert (ckpt["checkpointing"], plain["checkpointing"]) == (True, False)
    assert ckpt["tokens_per_s"] > 0 and 0 < ckpt["answer_logits_gib"] < 0.01
    assert flash["result"].startswith("failed (exit"), flash
    assert out["fastest_fitting"] in (ckpt, plain)
    fastest = out["fastest_fitting"]["checkpointing"]
    assert out["preset"] == (
        "model.attn_implementation=sdpa "
        f"train.gradient_checkpointing={str(fastest).lower()} train.compile=false"
    )


ASHA_40 = ["sweep.scheduler=asha", "train.max_steps=200"]
ASHA_40 += ["sweep.grace_period=40", "sweep.reduction_factor=3"]


def test_asha_replay_stops_trials_as_tunes_asha_does():
    """Tune's ASHA, fed recorded evaluations one trial at a time: rungs at 40 and 120 of 200
    steps keep the top third of the values recorded there so far. (Checked against real ASHA
    runs: the same steps for every trial in 3 launch orders.)"""
    cfg = load_config(None, ASHA_40)
    steps = [40, 80, 120, 160, 200]
    curve = {"a": 0.2, "b": 0.5, "c": 0.1, "d": 0.6}  # each trial's level at every step
    history = {k: {s: v for s in steps} for k, v in curve.items()}
    history["c"][120] = 0.9  # a late riser is stopped at 40 before it rises
    rows = replay_asha(cfg, history, ["a", "b", "c", "d"])
    # a sets the bar; b clears it; c is below the top third of {0.2, 0.5} at 40; d is above
    # the top third of {0.2, 0.5, 0.1} at 40 and of {0.2, 0.5} at 120
    assert rows == [("a", 200), ("b", 200), ("c", 40), ("d", 200)]
    rows = replay_asha(cfg, history, ["d", "b", "a", "c"])  # the best first: the rest stop
    assert [s for _, s in rows] == [200, 40, 40, 40]
    assert steps_until_best(rows, ["d"], 200) == 200  # a quarter of the 800-step grid
    assert steps_until_best(rows, ["b"], 200) is None


def fake_result(subset: str, seed: int, level: float, index: int):
    """A finished grid trial as a Tune Result reads back: `level` at every evaluation."""
    import pandas as pd

    steps = [40, 80, 120, 160, 200]
    return SimpleNamespace(
        config={"subset": {"id": subset}, "rank": 2, "seed": seed},
        metrics={"step": 200, "score": level},
        metrics_dataframe=pd.DataFrame({"step": steps, "score": [level] * 5}),
        path=f"/grid/{subset}-r2-s{seed}-abc_{index:05d}",
    )


def test_asha_replay_counts_the_best_point_over_all_its_seeds():
    """With replicates the grid's best point is the cell of the best mean, and ASHA has
    found it only when every seed of it was trained to the end."""
    results = [
        fake_result("A", 0, 0.5, 0),
        fake_result("A", 1, 0.2, 1),
        fake_result("B", 0, 0.6, 2),
        fake_result("B", 1, 0.55, 3),  # B's mean 0.575 is the best; B-s1 alone is not
    ]
    cfg = load_config(None, ASHA_40 + ["sweep.stop_metric=metric"])
    assert grid_best(results, "score") == ("B-r2", ["B-r2-s0", "B-r2-s1"])
    history = evaluations(results, "score")
    assert history["B-r2-s1"] == {s: 0.55 for s in (40, 80, 120, 160, 200)}
    best = ["B-r2-s0", "B-r2-s1"]
    # B-s1 launched after B-s0 and A-s0 falls below the top third of {0.6, 0.5} at 40
    rows = replay_asha(cfg, history, ["B-r2-s0", "A-r2-s0", "B-r2-s1", "A-r2-s1"])
    assert rows[2] == ("B-r2-s1", 40)
    assert steps_until_best(rows, best, 200) is None
    # launched first, both seeds of B train to the end: half of the 800-step grid
    rows = replay_asha(cfg, history, ["B-r2-s1", "B-r2-s0", "A-r2-s0", "A-r2-s1"])
    assert steps_until_best(rows, best, 200) == 400
    figures = replayed_orders(cfg, results, orders=50)
    found = int(figures["replay_found_best_in"].split()[0])
    assert 0 < found < 50 and 0.5 <= figures["replay_share_mean"] <= 1.0
    assert figures == replayed_orders(cfg, results, orders=50)  # the same orders


@pytest.mark.slow
def test_data_bench_shares_the_work_and_the_steps(local_ray):
    """`bench data`: each rank reads 1 / world of the records, and every rank takes the
    same steps."""
    cfg = load_config(None, ["data.corpus=[demo:40]", "train.max_steps=3"])
    out = data_work(cfg, [1, 2])
    json.dumps(out)  # --json writes this
    one, two = out["rows"]
    assert one["world"] == 1 and two["world"] == 2
    assert sum(two["records_per_rank"]) == one["records_per_rank"][0]
    assert max(two["records_per_rank"]) - min(two["records_per_rank"]) <= 1
    assert one["steps_per_rank"] == [3] and two["steps_per_rank"] == [3, 3]


@pytest.mark.slow
def test_eval_bench_shares_the_evaluation_and_agrees(local_ray):
    """`bench eval`: rank 0 alone and two ranks sharing the batches give the same result."""
    cfg = load_config(None, ["data.max_eval_per_task=3", "eval.batch_size=4"])
    out = eval_work(cfg, 2)
    json.dumps(out)  # --json writes this
    assert out["records"] == 30 and out["world"] == 2 and out["equal_bit_for_bit"] is True
    assert out["rank_0_alone_s"] > 0 and out["every_rank_s"] > 0


@pytest.mark.slow
def test_scale_bench_runs_simulated_trials_through_the_sweep_path(tmp_path):
    """`bench scale`, short: 20 simulated trials on 2 simulated nodes of 4 GPUs, through the
    Tuner, ASHA, trials.csv, the report and an offline W&B summary run."""
    overrides = ["wandb.project=scale-test", f"sweep.output={tmp_path}"]
    cfg = load_config(None, SCALE_SPACE + overrides)
    out = scale(cfg, trials=20, gpus=8, nodes=2, step_s=0.05)
    json.dumps(out)
    assert out["trials"] == 20 and out["errors"] == 0 and out["concurrent_trials"] == 4
    assert 20 <= out["evaluations_reported"] < 80  # ASHA stopped some trials early
    rows = (Path(out["output"]) / "trials.csv").read_text().splitlines()
    assert len(rows) == 21
    report = (Path(out["output"]) / "report.md").read_text()
    assert "ladder-4" in report and out["driver_peak_rss_mib"] > 0


def test_pack_bench_times_both_sides_and_checks_every_trial(monkeypatch):
    """`bench pack`'s bookkeeping, its sweeps stood in for (the packed sweeps themselves are
    tests/test_pack.py's): each repeat times one run per trial and then the pack, back to
    back; the ratio's interval is over the repeats; every trial's losses and per-record
    scores must agree both ways, or it fails naming the trial."""
    import ecomtrain.bench.pack as bench_pack

    def outcome(loss, memory):
        return {"history": [[1, loss], [2, loss / 2]], "scores": "s\n", "peak_memory_gib": memory}

    times = iter([100.0, 40.0, 110.0, 45.0, 90.0, 37.0])  # alone, packed, per repeat
    runs = []

    def timed_sweep(cfg, pack, name, prepared, folder):
        runs.append(pack)
        memory = 1.1 if pack > 1 else 1.0
        return next(times), {"a": outcome(2.0, memory), "b": outcome(3.0, memory)}

    monkeypatch.setattr(bench_pack, "connect", lambda **_: None)
    monkeypatch.setattr(bench_pack, "prepare", lambda cfg: None)
    monkeypatch.setattr(bench_pack, "timed_sweep", timed_sweep)
    cfg = load_config(CONFIGS / PACK_CONFIG, PACK_SPACE)
    out = pack_bench(cfg, pack=4, repeats=3)
    json.dumps(out)
    assert runs == [1, 4] * 3 and out["trials"] == 2 and out["same_results"]
    ratios = [0.4, 45 / 110, 37 / 90]
    assert [r["time_ratio"] for r in out["repeats"]] == [round(r, 3) for r in ratios]
    assert out["time_ratio"]["ratio"] == pytest.approx(np.prod(ratios) ** (1 / 3), abs=1e-3)
    assert out["time_ratio"]["goal"] == "met"  # the interval over the three wholly under 0.5
    assert out["memory_ratio"]["ratio"] == pytest.approx(1.1) and out["speedup"] > 2
    with pytest.raises(ConfigError, match="--pack"):
        pack_bench(cfg, pack=1, repeats=1)
    a, b = {"x": outcome(2.0, 1.0)}, {"x": outcome(2.0, 1.0)}
    assert same_results(a, b) == 0.0
    b["x"]["scores"] = "t\n"
    with pytest.raises(RuntimeError, match="trial x differs"):
        same_results(a, b)
    b = {"x": outcome(2.1, 1.0)}
    with pytest.raises(RuntimeError, match="differs packed and alone by"):
        same_results(a, b)


@pytest.mark.slow
def test_corpus_bench_spills_and_loses_no_record():
    """`bench corpus`, short: 80,000 records of 256 tokens through an 80 MiB object store,
    so the tokenised mixture (about 80 MiB as int32 Arrow lists) spills to disk; every
    record is counted, every bad one found, and each rank packs every record of its share
    exactly as often as the mixture says."""
    cfg = load_config(None, CORPUS_SPACE)
    out = corpus_path(cfg, records=80_000, files=4, ranks=2, store_mib=80, words=120)
    json.dumps(out)
    scan, shares, packed = out["scan"], out["tokenise_mix_share"], out["read_and_pack"]
    assert out["object_store_spilled"].startswith("Spilled"), out["object_store_spilled"]
    assert scan["records_counted"] == 80_000 and scan["bad_found"] == scan["bad_written"] == 4
    assert shares["training_records"] + scan["held_out"] + scan["bad_found"] == 80_000
    assert packed["records_in_shares"] == shares["training_records"]  # none dropped, none lost
    assert packed["every_record_packed_as_mixed"] and packed["every_record_once_per_epoch"]
    assert all(r["share_bytes_per_record"] < 4 * 256 + 32 for r in packed["ranks"])


def test_head_share_counts_the_vocabulary_projection(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=1000,
    ).save_pretrained(tmp_path)
    body = 2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128)  # q, o; k, v; gate, up, down
    assert head_share(str(tmp_path)) == pytest.approx(64_000 / (64_000 + body))


@pytest.mark.slow
def test_throughput_bench_matches_tokens_and_times_the_same_window(local_ray):
    """`bench throughput`: HF under DDP expects ecomtrain's supervised tokens per step to
    half a record per micro-batch, over the same timed steps, the order alternating from
    pair to pair; the padding-free collator is refused where sdpa would attend across
    records."""
    overrides = THROUGHPUT_SPACE + ["train.max_steps=4", "train.log_every=2"]
    out = throughput(load_config(None, overrides), repeats=2)
    json.dumps(out)  # --json writes this
    assert out["timed_steps"] == 2 and out["warmup_steps"] == 2
    ours, expected = out["ecomtrain_tokens_per_step"], out["hf_expected_tokens_per_step"]
    batch = out["hf_batch_records"]
    assert batch > 1 and abs(expected - ours) <= 0.5 * expected / batch + 0.1  # (rounding)
    assert out["hf_padded_grouped_tokens_per_step"] > 0
    runs = out["runs"]
    assert [r["order"] for r in runs] == [
        ["hf_padded_grouped", "ecomtrain"],
        ["ecomtrain", "hf_padded_grouped"],
    ]
    pair = [r["ratio_vs_hf_padded_grouped"] for r in runs]
    assert all(x > 0 for x in pair) and out["ratio_vs_hf_padded_grouped_ci95"] is not None
    run = runs[0]
    assert 0 < run["hf_padded_grouped_passes_share"] <= 1
    # tokens processed (prompts too) per supervised token: more than one on both sides
    assert out["ecomtrain_processed_per_supervised"] > 1
    assert out["hf_padded_grouped_processed_per_supervised"] > 1
    assert out["processed_ratio_vs_hf_padded_grouped"] > 0
    assert out["hf_padding_free"].startswith("not run: with attn_implementation=sdpa")


@pytest.mark.slow
def test_ablation_bench_undoes_each_choice_without_changing_the_loss(local_ray):
    out = ablation(load_config(None, ["train.micro_batch_size=2"]), "tiny", steps=2)
    json.dumps(out)
    assert [r["step"] for r in out["rows"]] == list(ABLATIONS)
    assert out["rows"][0]["ecomtrain_gain"] == 1.0 and out["supervised_tokens"] > 0
    # every micro-batch's loss, warm-up included, under every variant: ecomtrain's exactly
    assert all(len(r["losses"]) == 2 + 2 for r in out["rows"])
    assert len(set(out["rows"][0]["losses"])) > 1  # different micro-batches
    assert out["losses_equal_bit_for_bit"] and out["loss_max_relative_difference"] == 0.0


@pytest.mark.slow
def test_raytax_bench_runs_one_loop_under_both_runners(monkeypatch):
    """`bench raytax`: the same loop under Ray Train and as plain torch.distributed
    processes trains the same records with the same losses, and both are timed over the
    same steps (it starts and stops its own Ray instance)."""
    # connect() points the state API at its local dashboard: undone after the test (setenv
    # records the variable's absence, so its teardown removes what connect sets)
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "")
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS")
    overrides = RAYTAX_SPACE + ["train.max_steps=12", "train.log_every=4"]
    out = raytax(load_config(None, overrides), "tiny", repeats=1)
    json.dumps(out)
    assert out["same_records"] and out["loss_max_abs_difference"] == 0.0
    assert out["warmup_steps"] == 2 and out["timed_steps"] == 10
    for runner in ("ray_train", "torch_distributed"):
        (run,) = out[runner]
        assert run["step_s"] > 0 and run["cores"] is None, run  # half a second: too short
    assert out["ratio"] == out["pair_ratios"][0] and out["goal"] == "not clear"
    assert not ray.is_initialized()


def test_raytax_ratio_interval_says_met_only_when_the_interval_does():
    met = ratio_interval([1.01, 1.02, 1.0, 1.015], RAYTAX_GOAL)
    assert met["goal"] == "met" and met["ratio_ci95"][1] <= 1.05
    assert met["ratio_ci95"][0] < met["ratio"] < met["ratio_ci95"][1]
    assert ratio_interval([1.2, 1.25, 1.22], RAYTAX_GOAL)["goal"] == "missed"
    assert ratio_interval([0.95, 1.2], RAYTAX_GOAL)["goal"] == "not clear"  # wide
    one = ratio_interval([1.01], RAYTAX_GOAL)
    assert one["ratio_ci95"] is None and one["goal"] == "not clear"
    assert "goal" not in ratio_interval([2.0, 2.2])  # throughput's: no goal


def test_raytax_times_the_steps_after_the_warmup_from_the_loops_clock():
    state = {"clock": [[s, 100.0 + 0.5 * s] for s in range(1, 41)]}
    state["clock"][20][1] += 2.0  # step 21 waited on a report: the mean sees it
    for step in state["clock"][21:]:
        step[1] += 2.0
    steps, t0, t1 = steady_window(state)
    assert (steps, t0, t1) == (36, 102.0, 122.0)  # a tenth of 40 steps is the warm-up
    cpu = CpuTime()
    cpu.samples = [(100.0, dict.fromkeys(cpu.KINDS, 0.0)), (130.0, dict.fromkeys(cpu.KINDS, 30.0))]
    cpu.samples[1][1]["ray"] = 3.0
    figures = run_figures(state, cpu)
    assert figures["step_s"] == pytest.approx(20 / 36, abs=1e-4)
    assert figures["median_step_s"] == 0.5
    assert figures["cores"] == {"training": 1.0, "ray": 0.1, "driver": 1.0, "other": 1.0}


def test_every_documented_benchmark_is_a_command_with_its_own_flags(capsys):
    """Each `python -m ecomtrain.bench X` of the module's usage is a command whose --help
    gives its module's doc and its own flags; another benchmark's flag is refused."""
    import re

    names = set(re.findall(r"python -m ecomtrain\.bench (\w+)", cli.__doc__))
    assert names == set(cli.BENCHMARKS)
    for name in sorted(names):
        with pytest.raises(SystemExit) as done:
            cli.main([name, "--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert cli.BENCHMARKS[name].__doc__.split()[0] in text and "--json" in text, name
    with pytest.raises(SystemExit):
        cli.main(["throughput", "--grid", "x"])
    assert "unrecognized arguments: --grid" in capsys.readouterr().err
    assert cli.main(["mfu", "--shape", "tiny"]) == 2
    assert "real model's shape" in capsys.readouterr().err
    assert cli.main(["nope"]) == 2 and "unknown benchmark 'nope'" in capsys.readouterr().err
