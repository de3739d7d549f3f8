from pathlib import Path

import pytest

from ecomtrain.config import Config, ConfigError, from_dict, load_config, to_dict

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
    assert from_dict(to_dict(cfg)) == cfg


def test_the_sweep_metric_must_be_one_a_trial_reports():
    assert load_config(None, ["sweep.metric=extra/track/multi-lingual-abilities"])
    with pytest.raises(ConfigError, match="sweep.metric: 'accuracy' is not a metric"):
        load_config(None, ["sweep.metric=accuracy"])
