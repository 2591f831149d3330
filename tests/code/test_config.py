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


@pytest.mark.parametrize("value", ["nosuch", "v1:latest", "v1:"])
def test_a_student_start_must_be_a_member_and_an_optional_version(value):
    with pytest.raises(ConfigError, match="compress.student_from"):
        load_config("tiny", ["model.variant=lite", f"compress.student_from={value}"])
    assert load_config("tiny", ["model.variant=lite", "compress.student_from=v1:7"]).compress.student_from == "v1:7"


def test_renamed_field_is_rejected_with_its_path():
    with pytest.raises(ConfigError, match=r"config\.train: unknown field\(s\) \['epoch'\]"):
        load_config("tiny", ["train.epoch=3"])


def test_wrong_type_is_rejected():
    with pytest.raises(ConfigError, match="config.train.batch_size: expected int"):
        load_config("tiny", ["train.batch_size=big"])


def test_unknown_profile_lists_known_ones():
    with pytest.raises(ConfigError, match="known profiles"):
        load_config("nope")


def test_a_run_form_resolves_to_the_config_it_describes():
    from yanjin.config import from_run_form, with_variant

    form = from_run_form("", "tiny", "lite", epochs=5, learning_rate=1e-4, seed=3, min_improvement=0.01,
                         overrides="data.max_per_class=10; gate.max_ece=0.4")
    assert (form.model.variant, form.recipe.teacher, form.recipe.int8) == ("lite", "pro", True)
    assert (form.train.epochs, form.train.learning_rate, form.train.seed) == (5, 1e-4, 3)
    assert (form.gate.min_improvement, form.data.max_per_class, form.gate.max_ece) == (0.01, 10, 0.4)
    untouched = from_run_form("", "tiny")                              # 0, -1 and empty keep the profile's
    assert untouched == load_config("tiny")
    pro = with_variant(load_config("demo"), "pro")                    # what the CLI submits: a whole config
    assert from_run_form(pro.to_json(), "full") == pro
    assert from_run_form(pro.to_json(), "full", epochs=2).train.epochs == 2
    with pytest.raises(ConfigError, match="unknown field"):
        from_run_form("", "tiny", overrides="train.epoch=2")
    with pytest.raises(ConfigError, match="section.field=value"):
        from_run_form("", "tiny", overrides="epochs 2")


def test_a_profile_recipe_change_reaches_its_member_only():
    """The demo's Pro: MPNet and a probe for Pro, the profile's MiniLM fine-tuning for the others, by every route."""
    from yanjin.config import from_run_form, with_variant

    profile = load_config("demo")                                      # V1: what the CLI submits
    for pro in (load_config("demo", ["model.variant=pro"]), with_variant(profile, "pro"),
                from_run_form(profile.to_json(), "full", "pro")):
        assert (pro.model.base, pro.model.n_layers, pro.train.probe, pro.recipe.start) == ("mpnet", 12, True, "pretrained")
        assert pro.train.epochs == profile.train.epochs and pro.gate.also_beat == "v1"
    for member in ("v1", "v2", "lite"):
        other = with_variant(profile, member)
        assert (other.model.base, other.train.probe) == ("minilm", False), member


@pytest.mark.parametrize("start", ["pro", "v2", "lite"])
def test_a_member_built_from_another_members_config_gets_the_profiles_settings_not_that_members(start):
    """A recorded Pro config (MPNet, a probe) or V2's (4096 tokens) pasted into the run form for V1: nothing leaks."""
    from yanjin.config import from_run_form, with_variant

    profile = load_config("demo")
    recorded = with_variant(profile, start)
    for member in ("v1", "v2", "pro", "lite"):
        direct = with_variant(profile, member)
        assert with_variant(recorded, member) == direct, (start, member)
        assert from_run_form(recorded.to_json(), "full", member) == direct, (start, member)
    assert with_variant(recorded, "v1").model.max_length == 64 and with_variant(recorded, "v1").model.base == "minilm"


@pytest.mark.parametrize("change, error", [
    ("recipes.pro.teacher=v1", r"\['teacher'\] order the family graph"),
    ("recipes.nope.start=pretrained", "config.recipes.nope: unknown family member"),
    ("recipes.pro.model.bogus=1", r"config.recipes.pro.model: unknown field\(s\) \['bogus'\]"),
    ("recipes.pro.train.probe=3", "config.recipes.pro.train.probe: expected bool"),
    ("recipes.pro.start=elsewhere", "config.recipes.pro: .*start 'elsewhere'"),
])
def test_a_wrong_recipe_change_is_rejected_with_its_path(change, error):
    with pytest.raises(ConfigError, match=error):
        load_config("demo", [change])


def test_the_full_profile_ships_the_pro_and_lite_the_benchmark_measured():
    """benchmarks/results/family_pro.json holds Pro's measured recipe and Lite's overrides: the profile users run is them."""
    import json
    from pathlib import Path

    from yanjin.config import apply_override, with_variant

    measured = json.loads((Path(__file__).parents[2] / "benchmarks/results/family_pro.json").read_text())
    arm = measured["recipes"][measured["pro_arm"]["full"]]
    pro, lite = (with_variant(load_config("full"), m) for m in ("pro", "lite"))
    assert pro.recipe.start == "pretrained" and pro.gate.also_beat == "v1"
    assert {k: getattr(pro.model, k) for k in arm["model"]} == arm["model"]
    assert {k: getattr(pro.train, k) for k in arm["train"]["full"]} == arm["train"]["full"]
    # Lite's figures come from a Lite of that Pro, or say they do not (Pro's arm changed before its Lite ran)
    assert measured["lite_teacher_is_pro"] == (measured["lite_teacher"].split(":")[1] == measured["pro_arm"]["full"])
    values = json.loads(lite.to_json())
    for assignment in measured["lite_sets"] + ["train.calibrate=true"]:
        apply_override(values, assignment)
    assert PipelineConfig.from_json(json.dumps(values)) == lite, "the full profile's Lite lacks a measured override"


def test_the_users_own_model_and_train_fields_win_over_a_members_recipe_by_every_route():
    """The full Pro's recipe trains 6 epochs; `--set train.epochs=1` or the run form's epochs means 1 for Pro too."""
    from yanjin.config import from_run_form, with_variant

    quick = load_config("full", ["train.epochs=1"])                    # what the CLI submits for --variant all
    for pro in (load_config("full", ["model.variant=pro", "train.epochs=1"]), with_variant(quick, "pro"),
                from_run_form(quick.to_json(), "full", "pro"), from_run_form("", "full", "pro", epochs=1),
                from_run_form(load_config("full").to_json(), "full", "pro", epochs=1),
                from_run_form(load_config("full").to_json(), "full", "pro", overrides="train.epochs=1")):
        assert (pro.train.epochs, pro.train.learning_rate, pro.model.base) == (1, 5e-5, "mpnet")  # the rest: the recipe's
        assert PipelineConfig.from_json(pro.to_json()) == pro
    assert with_variant(load_config("full"), "pro").train.epochs == 6                       # untouched: the recipe's
    assert load_config("full", ["model.variant=pro", "recipes.pro.train.epochs=3"]).train.epochs == 3
    assert with_variant(with_variant(quick, "pro"), "v1") == with_variant(quick, "v1")   # nothing of Pro stays
