"""Every shipped YAML profile loads, and mistakes in a config fail fast with the field named."""
import pytest

from yanjin.config import CONFIG_DIR, ConfigError, PipelineConfig, load_config

PROFILES = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def test_the_three_profiles_exist():
    assert {"tiny", "demo", "full"} <= set(PROFILES)


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_loads_and_round_trips_through_json(profile):
    cfg = load_config(profile)
    assert cfg.profile == profile
    assert PipelineConfig.from_json(cfg.to_json()) == cfg


def test_override_sets_a_nested_field():
    cfg = load_config("tiny", ["train.epochs=0", "gate.min_accuracy=0.5"])
    assert cfg.train.epochs == 0 and cfg.gate.min_accuracy == 0.5


def test_renamed_field_is_rejected_with_its_path():
    with pytest.raises(ConfigError, match=r"config\.train: unknown field\(s\) \['epoch'\]"):
        load_config("tiny", ["train.epoch=3"])


def test_wrong_type_is_rejected():
    with pytest.raises(ConfigError, match="config.train.batch_size: expected int"):
        load_config("tiny", ["train.batch_size=big"])


def test_unknown_profile_lists_known_ones():
    with pytest.raises(ConfigError, match="known profiles"):
        load_config("nope")
