"""The search space, without running Ray."""

import json
import pickle
from pathlib import Path

import pytest

from ecomtrain.config import ConfigError, load_config
from ecomtrain.data.pipeline import check_names
from tuning.space import optuna_search, param_space, subsets, trial_config


def test_demo_space_is_subsets_times_ranks():
    cfg = load_config()
    space = param_space(cfg)
    points = space["subset"]["grid_search"]
    assert [p["id"] for p in points] == ["concept+behavior", "all-4"]
    assert space["rank"]["grid_search"] == [4, 16]
    all4 = points[1]
    assert all4["n_tasks"] == 10 and all4["n_capabilities"] == 4
    assert points[0]["n_capabilities"] == 2


def test_capability_names_expand_in_subsets():
    cfg = load_config(None, ["sweep.subsets={multi: [multi-lingual-abilities]}"])
    (point,) = subsets(cfg)
    assert point["n_capabilities"] == 1
    assert "title_translation" in point["tasks"]


def test_unknown_task_in_subset_is_rejected_naming_key_and_file():
    """A name that is no built-in family may be a task of the user's own: the corpus must
    hold it (checked before any cluster starts); a malformed one fails at once."""
    from ecomtrain.sweep import main

    with pytest.raises(ConfigError, match=r"demo.yaml: sweep.subsets.bad\[0\]: 'no task'"):
        load_config(None, ["sweep.subsets={bad: [no task]}"])
    cfg = load_config(None, ["sweep.subsets={bad: [no_such_task]}"])
    with pytest.raises(ConfigError, match=r"config: sweep.subsets.bad\[0\]: unknown task"):
        check_names(cfg, "config")
    assert main(["--dry-run", "sweep.subsets={bad: [no_such_task]}"]) == 2


def test_trial_config_sets_tasks_rank_alpha():
    base = load_config()
    point = {"subset": subsets(base)[0], "rank": 32, "alpha": 64.0}
    cfg = trial_config(base, point)
    assert cfg.lora.rank == 32 and cfg.lora.alpha == 64.0
    assert cfg.data.tasks == point["subset"]["tasks"]
    assert base.lora.rank == 8  # the base config is not modified


def test_ladder_adds_one_capability_at_a_time():
    order = [
        "understanding-shopping-concepts",
        "user-behavior-alignment",
        "multi-lingual-abilities",
    ]
    cfg = load_config(None, ["sweep.subsets={}", f"sweep.ladder=[{', '.join(order)}]"])
    points = subsets(cfg)
    assert [p["id"] for p in points] == ["ladder-1", "ladder-2", "ladder-3"]
    assert [p["n_capabilities"] for p in points] == [1, 2, 3]
    assert [p["ladder_step"] for p in points] == [1, 2, 3]
    assert points[1]["coverage"] == 0.5


def test_leave_one_out_within_a_capability():
    cfg = load_config(
        None,
        [
            "sweep.subsets={}",
            "sweep.leave_one_out=[multi-lingual-abilities]",
            "data.tasks=[query_ner, title_translation, multilingual_keyword_mcq]",
        ],
    )
    points = {p["id"]: p["tasks"] for p in subsets(cfg)}
    assert points == {
        "without-multilingual_keyword_mcq": ["query_ner", "title_translation"],
        "without-title_translation": ["query_ner", "multilingual_keyword_mcq"],
    }


def test_random_subsets_cover_every_capability_and_are_deterministic():
    args = ["sweep.subsets={}", "sweep.random_subsets=5", "sweep.random_min_per_capability=1"]
    first = subsets(load_config(None, args))
    assert len(first) == 5 and len({tuple(p["tasks"]) for p in first}) == 5
    assert all(p["n_capabilities"] == 4 for p in first)
    assert subsets(load_config(None, args)) == first
    assert subsets(load_config(None, [*args, "sweep.seed=1"])) != first


def test_dotted_params_and_alpha_rules():
    cfg = load_config(None, ["sweep.params={train.lr: [0.001, 0.01]}", "sweep.ranks=[8]"])
    space = param_space(cfg)
    assert space["train.lr"]["grid_search"] == [0.001, 0.01]
    point = {"subset": subsets(cfg)[0], "rank": 8, "train.lr": 0.01}
    run = trial_config(cfg, point)
    assert run.train.lr == 0.01 and run.lora.alpha == 16.0
    fixed = load_config(None, ["sweep.alpha_rule=rslora", "lora.alpha=4"])
    run = trial_config(fixed, {"subset": subsets(fixed)[0], "rank": 64})
    assert run.lora.alpha == 4.0 and run.lora.use_rslora
    bad = {"subset": subsets(cfg)[0], "rank": 8, "train.lr": "fast"}
    with pytest.raises(ValueError, match="train.lr: expected float"):
        trial_config(cfg, bad)


def test_optuna_suggests_points_shaped_like_the_grid():
    pytest.importorskip("optuna")
    cfg = load_config(
        None,
        [
            "sweep.search=optuna",
            "sweep.ladder=[understanding-shopping-concepts, user-behavior-alignment]",
            "sweep.ranks=[2, 4, 8]",
            "sweep.params={train.lr: [0.001, 0.01]}",
        ],
    )
    assert param_space(cfg) == {}  # the searcher holds the space
    searcher = pickle.loads(pickle.dumps(optuna_search(cfg)))  # Tune checkpoints it
    ids = {s["id"] for s in subsets(cfg)}
    seen = set()
    for i in range(8):
        point = searcher.suggest(f"t{i}")
        assert point["subset"]["id"] in ids and point["subset"]["id"] == point["subset_id"]
        assert point["alpha"] == 2.0 * point["rank"] and point["train.lr"] in (0.001, 0.01)
        run = trial_config(cfg, point)  # a point is a run config like any other
        assert run.lora.rank == point["rank"] and run.data.tasks == point["subset"]["tasks"]
        searcher.on_trial_complete(f"t{i}", {"score": point["rank"] / 8})
        seen.add((point["subset"]["id"], point["rank"]))
    assert len(seen) > 2


def test_seeds_are_replicates_of_every_point():
    base = load_config(None, ["sweep.seeds=[0, 1, 2]"])
    space = param_space(base)
    assert space["seed"] == {"grid_search": [0, 1, 2]}
    cfg = trial_config(base, {"subset": subsets(base)[0], "rank": 4, "seed": 2})
    assert cfg.train.seed == cfg.data.seed == 2


def test_launch_seed_shuffles_the_grid_not_its_points():
    a = param_space(load_config(None, ["sweep.ranks=[2, 4, 8, 16]"]))
    b = param_space(load_config(None, ["sweep.ranks=[2, 4, 8, 16]", "sweep.launch_seed=3"]))
    assert sorted(b["rank"]["grid_search"]) == a["rank"]["grid_search"]
    assert b["rank"]["grid_search"] != a["rank"]["grid_search"]


def test_an_empty_subset_is_refused():
    with pytest.raises(ValueError, match="none of"):
        subsets(load_config(None, ["sweep.subsets={empty: []}"]))


def test_dry_run_prints_every_trial_and_starts_nothing(capsys):
    import ray

    from ecomtrain.sweep import main

    assert main(["--dry-run", "sweep.seeds=[0, 1]", "sweep.params={train.lr: [0.001, 0.003]}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("corpus: ") and "held out" in lines[0]
    trials = lines[1:]
    assert len(trials) == 2 * 2 * 2 * 2  # subsets x ranks x lr x seeds
    assert "all-4  rank 16  alpha 32  train.lr=0.003  seed=1" in trials[-1]
    assert "10 tasks over 4 capabilities" in trials[-1] and "training records" in trials[-1]
    assert not ray.is_initialized()
    assert main(["--dry-run", "train.num_workers=0"]) == 2  # the usual clear errors


def test_the_paper_ladder_resolves_its_space_on_real_data(refdata, capsys):
    """configs/paper-ladder.yaml: the four ladder steps at ranks 8-64 with two seeds, run
    dry on the real EC-Guide files, decontaminated against the dev set and a Shopping MMLU
    folder (the fixture stands in for the benchmark's data)."""
    from ecomtrain.sweep import main

    mmlu = Path(__file__).parent / "data" / "shopping_mmlu"
    files = [
        str(refdata / Path(p).name) for p in load_config("configs/paper-ladder.yaml").data.corpus
    ]
    dev = str(refdata / "kddcup24_development.json")
    overrides = [
        f"data.corpus=[{', '.join(files)}]",
        f"data.decontaminate=[{dev}, {mmlu}]",
        f"eval.extra_files=[{dev}]",
    ]
    assert main(["--config", "configs/paper-ladder.yaml", "--dry-run", *overrides]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("corpus: 22110 records in 5 file(s)")
    trials = lines[1:]
    assert len(trials) == 4 * 4 * 2  # ladder steps x ranks x seeds
    assert trials[0].split("|")[0].split() == [
        "1",
        "ladder-1",
        "rank",
        "8",
        "alpha",
        "16",
        "seed=0",
    ]
    assert "ladder-4  rank 64  alpha 128  seed=1" in trials[-1]
    assert "over 4 capabilities" in trials[-1] and "over 1 capabilities" in trials[0]
    for line in trials:  # every step trains on records of what it adds
        assert int(line.rsplit("|", 1)[1].split()[0]) > 0


def test_a_subset_can_name_a_task_of_the_users_own(tmp_path, capsys):
    from ecomtrain.sweep import main

    own = tmp_path / "mine.jsonl"
    record = {
        "input_field": "Is it a shoe?\n0. no\n1. yes\nAnswer:",
        "task_type": "multiple-choice",
        "metric": "accuracy",
        "task_name": "shoe_check",
        "capability": "user-behavior-alignment",
    }
    own.write_text("".join(json.dumps(record | {"output_field": i % 2}) + "\n" for i in range(30)))
    args = [f"data.corpus=[demo, {own}]", "sweep.subsets={mine: [shoe_check, query_ner]}"]
    assert main(["--dry-run", "sweep.ranks=[4]", *args]) == 0
    (trial,) = capsys.readouterr().out.splitlines()[1:]
    assert "mine  rank 4" in trial and ": shoe_check, query_ner |" in trial
    assert int(trial.rsplit("|", 1)[1].split()[0]) > 30  # both tasks' training records


@pytest.mark.parametrize(
    "config, trials, records",
    [
        # the e-commerce records, then with 2 x ~51 out-of-domain training records added
        ("configs/ood.yaml", 12, {3042, 3139}),
        # curated, synthetic (a record or two more or fewer held out), and both
        ("configs/provenance.yaml", 6, {3042, 3040, 6082}),
        # three adapter shapes, every one on the same records
        ("configs/capacity-shape.yaml", 12, {3042}),
    ],
)
def test_the_question_configs_resolve_their_space(config, trials, records, capsys):
    """configs/ood.yaml, provenance.yaml and capacity-shape.yaml, dry: every trial reads the
    records of its own out-of-domain share or provenance, and all are scored on the curated
    world."""
    from ecomtrain.sweep import main

    assert main(["--config", config, "--dry-run"]) == 0
    head, *lines = capsys.readouterr().out.splitlines()
    assert "558 held out" in head and len(lines) == trials
    assert {int(line.split("| ")[-1].split()[0]) for line in lines} == records


def test_trial_drivers_take_the_driver_resources():
    """`sweep.driver_resources` pins each trial's driver (and Ray Train controller) to the
    nodes that offer them, e.g. an on-demand head."""
    from ecomtrain.train.trial import Prepared
    from tuning.run import trainable

    cfg, prepared = load_config(None, ["sweep.driver_resources={driver: 0.01}"]), Prepared("m")
    assert trainable(cfg, "/tmp/x", prepared)._resources.bundles == [{"CPU": 0.01, "driver": 0.01}]
    assert trainable(load_config(None, []), "/tmp/x", prepared)._resources.bundles == [
        {"CPU": 0.01}
    ]


@pytest.mark.parametrize(
    "stop, metric, mode",
    [("metric", "score", "max"), ("eval_loss", "eval_loss", "min")]
    + [("eval_likelihood", "eval_likelihood", "max")],
)
def test_asha_decides_on_the_stop_metric_in_its_direction(stop, metric, mode):
    from tuning.run import scheduler

    cfg = load_config(None, ["sweep.scheduler=asha", f"sweep.stop_metric={stop}"])
    asha = scheduler(cfg)
    assert (asha._metric, asha._mode) == (metric, mode)


def test_resuming_a_sweep_whose_saved_config_was_edited_is_refused(tmp_path, capsys):
    """--resume runs the experiment the sweep began: an edited config.yaml would leave a
    file that no longer matches the results, so it is refused before any cluster starts."""
    from ecomtrain.config import CONFIG_FILE, load_config
    from ecomtrain.sweep import main, parse_args, sealed, setup

    saved = tmp_path / CONFIG_FILE
    saved.write_text(sealed(load_config()))
    cfg, output = setup(parse_args(["--resume", str(tmp_path)]))
    assert cfg == load_config() and output == str(tmp_path)
    saved.write_text(saved.read_text().replace("- 16", "- 32"))  # sweep.ranks [4, 16] -> [4, 32]
    assert main(["--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{saved}: edited after the sweep began" in err and "--output NEW_DIR" in err
