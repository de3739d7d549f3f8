from pathlib import Path

import pytest

from ecomtrain.config import (
    Config,
    ConfigError,
    checked_config,
    field_docs,
    load_config,
    to_dict,
)

# Run configs: configs/*.yaml and configs/sweeps/*.yaml (generation specs have their own test).
_DIR = Path(__file__).resolve().parent.parent / "configs"
CONFIGS = sorted([*_DIR.glob("*.yaml"), *_DIR.glob("sweeps/*.yaml")])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)


def test_default_is_demo():
    cfg = load_config()
    assert cfg.model.name_or_path == "tiny-llama"
    assert cfg.sweep.name == "demo"


def test_overrides_are_typed():
    cfg = load_config(None, ["train.max_steps=20", "lora.alpha=8", "sweep.ranks=[2, 4]"])
    assert cfg.train.max_steps == 20
    assert cfg.lora.alpha == 8.0 and isinstance(cfg.lora.alpha, float)
    assert cfg.sweep.ranks == [2, 4]
    assert load_config(None, ["train.lr=1e-4"]).train.lr == 1e-4  # YAML 1.1 reads this as str


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_stepz=3", "train.max_stepz: unknown key"),
        ("train.max_steps=abc", "train.max_steps: expected int, got str"),
        ("train.max_steps=1.5", "train.max_steps: expected int, got float"),
        ("train.use_gpu=3", "train.use_gpu: expected bool"),
        ("train.lr=fast", "train.lr: expected float, got str"),
        ("train.zero_stage=4", "train.zero_stage: 4 is not one of (0, 1, 2, 3)"),
        ("train.precision=fp8", "train.precision: 'fp8' is not one of"),
        ("sweep.ranks=[4, x]", "sweep.ranks[1]: expected int"),
        ("data.corpus=demo", "data.corpus: expected list"),
        ("sweep.subsets.a=[1]", "sweep.subsets.a[0]: expected str"),
        ("nothing=1", "nothing: unknown key"),
        ("train=1", "train: expected a mapping"),
        ("novalue", "expected KEY.PATH=VALUE"),
    ],
)
def test_bad_values_name_key_and_file(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)
    if "KEY.PATH" not in message:
        assert "demo.yaml" in str(err.value)


def test_asha_rung_past_the_last_step_is_refused():
    with pytest.raises(ConfigError, match="sweep.grace_period: 500 is past train.max_steps"):
        load_config(None, ["sweep.scheduler=asha", "sweep.grace_period=500", "train.max_steps=400"])
    load_config(None, ["sweep.grace_period=500", "train.max_steps=400"])  # fifo: unused


def test_bad_yaml_file_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_steps: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:3: invalid YAML"):
        load_config(bad)
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_config(missing)


def test_dict_round_trip():
    cfg = load_config(None, ["lora.rank=32"])
    assert checked_config(to_dict(cfg), "<dict>") == cfg


def test_the_sweep_metric_must_be_one_a_trial_reports():
    assert load_config(None, ["sweep.metric=extra/track/multi-lingual-abilities"])
    with pytest.raises(ConfigError, match="sweep.metric: 'accuracy' is not one of"):
        load_config(None, ["sweep.metric=accuracy"])


def test_every_key_has_its_doc_and_explain_prints_type_default_range_and_doc(capsys):
    """Each field's doc is the string under it; `ecomtrain config --explain KEY` prints it."""
    from ecomtrain.config import explain, keys, main

    undocumented = [k for k, cls, f in keys() if not field_docs(cls).get(f.name)]
    assert not undocumented
    text = explain("train.lr")
    assert text.splitlines()[0] == "train.lr: float = 0.001  (in (0, 10])"
    assert "Peak learning rate" in text
    assert main(["--explain", "lora"]) == 0 and "lora.shape: 'single' | " in capsys.readouterr().out
    assert main(["--explain", "train.nope"]) == 2
    assert "train.nope: no such config key" in capsys.readouterr().err


def test_a_section_checks_its_rules_when_made_and_when_the_config_is_checked():
    """Made in code, a section refuses a value outside its rules; a value set afterwards is
    caught when the whole config is checked."""
    from ecomtrain.config import TrainConfig, check_values

    with pytest.raises(ConfigError, match=r"zero_stage: 5 is not one of \(0, 1, 2, 3\)"):
        TrainConfig(zero_stage=5)
    with pytest.raises(ConfigError, match="num_workers: \\[3, 2\\]: the fewest workers"):
        TrainConfig(num_workers=2, min_workers=3)
    cfg = load_config()
    cfg.train.grad_clip = float("nan")
    with pytest.raises(ConfigError, match="x.yaml: train.grad_clip: nan must be a finite number"):
        check_values(cfg, "x.yaml")


def test_swept_values_that_the_sweep_sets_itself_are_refused():
    """`sweep.params` of the rank, alpha, task set or seeds would be overwritten per trial."""
    for key in ("lora.rank", "lora.alpha", "data.tasks", "train.seed", "data.seed"):
        with pytest.raises(ConfigError, match=f"sweep.params.{key}: set per trial by the sweep"):
            load_config(None, [f"sweep.params={{{key}: [1, 2]}}"])
