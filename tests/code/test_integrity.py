"""Every loader refuses stored bytes that no longer hash to what registration recorded: the serving
bundle (tests/serving/test_server.py), Lite's teacher checkpoint, the gate's champions, the drift
monitor's checkpoint and training split, and the family benchmark. The stored files are changed, not
the tags. And the gate takes a version's recorded accuracy only for the very rows it was measured on."""
import json
from pathlib import Path

import mlflow
import pytest

from tests.tampering import copy_version, flip_byte, stored_bundle, stored_run_files, stored_split
from yanjin import registry as R
from yanjin.components import stages
from yanjin.components.data import LABEL
from yanjin.config import MonitorParams, load_config, with_variant
from yanjin.monitoring.monitor import ServedMonitor
from yanjin.pipelines.run import LocalState, run_local

MODEL = "banking77-v1"


@pytest.fixture(scope="module")
def registry(tmp_path_factory, data_dir):
    state = LocalState(tmp_path_factory.mktemp("integrity") / "state")
    outcome = run_local(load_config("tiny"), str(data_dir / "train.csv"), str(data_dir / "test.csv"),
                        str(data_dir / "categories.json"), state, None, "test-commit", adapt_corpus=[])
    assert outcome.version == "1"
    mlflow.set_tracking_uri(state.tracking_uri)
    yield state, mlflow.MlflowClient(state.tracking_uri)
    mlflow.set_tracking_uri(None)


def checkpoint_weights(client, model, version) -> Path:
    return stored_run_files(client, model, version) / R.CHECKPOINT_ARTIFACT / R.CHECKPOINT_WEIGHTS


def training_split(client, model, version) -> Path:
    return stored_split(client, model, version)


def test_an_untouched_copy_loads(registry, tmp_path):
    state, client = registry
    version = copy_version(client, MODEL, "1", "banking77-copy")
    found = R.download_version("banking77-copy", version, tmp_path / "b", state.tracking_uri)
    assert R.download_checkpoint(found, tmp_path / "c", state.tracking_uri).is_dir()
    assert R.download_training_split(client, "banking77-copy", version, tmp_path / "t") is not None


def test_lite_refuses_a_teacher_whose_checkpoint_was_altered(registry, tmp_path):
    state, client = registry
    version = copy_version(client, MODEL, "1", "banking77-pro")      # Lite's teacher is the Pro member
    flip_byte(checkpoint_weights(client, "banking77-pro", version))
    lite = with_variant(load_config("tiny"), "lite")
    with pytest.raises(R.TamperedArtifact, match="checkpoint sha256 .* does not match"):
        stages._teacher(lite, state.tracking_uri, str(tmp_path), version)
    client.set_registered_model_alias("banking77-pro", R.CHAMPION, version)
    with pytest.raises(R.TamperedArtifact, match="checkpoint"):                   # the champion path too
        stages._teacher(lite, state.tracking_uri, str(tmp_path / "champion"), "")


def test_the_gate_refuses_to_score_a_champion_whose_bundle_was_altered(registry, tmp_path, small_slice):
    state, client = registry
    version = copy_version(client, MODEL, "1", "banking77-gated")
    flip_byte(stored_bundle(client, "banking77-gated", version) / R.ONNX_FILE)
    test_set = tmp_path / "test.parquet"
    small_slice[1].to_parquet(test_set)
    with pytest.raises(R.TamperedArtifact, match="banking77-gated version .* artifact sha256"):
        stages.gate_member("unused", str(test_set), {"run_id": "unused"}, {}, load_config("tiny"),
                           state.tracking_uri, "banking77-gated")


def test_the_gate_reuses_a_champions_recorded_accuracy_only_on_the_rows_it_was_measured_on(registry, tmp_path,
                                                                                             small_slice):
    from yanjin.components.data import frame_sha256
    from yanjin.components.evaluate import accuracy_on, evaluate_bundle
    from yanjin.config import EvalParams

    state, client = registry
    assert len(client.get_model_version(MODEL, "1").tags["test_sha256"]) == 64  # the pipeline records its rows
    version = copy_version(client, MODEL, "1", "banking77-recorded")
    client.set_registered_model_alias("banking77-recorded", R.CHAMPION, version)
    test = small_slice[1]
    found = R.download_version("banking77-recorded", version, tmp_path / "b", state.tracking_uri)
    measured = evaluate_bundle(found.bundle_dir, test, EvalParams(latency_runs=1, throughput_batches=1))
    assert measured["test_sha256"] == frame_sha256(test) != frame_sha256(test.iloc[1:])
    for key in ("test_sha256", "accuracy"):  # as if registered from this evaluation
        client.set_model_version_tag("banking77-recorded", version, key, str(measured[key]))
    candidate = {"run_id": client.create_run("0").info.run_id, "accuracy": 1.0, "macro_f1": 1.0, "ece": 0.0}

    def champion_on(rows):
        rows.to_parquet(tmp_path / "test.parquet")
        return stages.gate_member("unused", str(tmp_path / "test.parquet"), candidate, {}, load_config("tiny"),
                                  state.tracking_uri, "banking77-recorded").champions[0]

    same, fewer = champion_on(test), champion_on(test.iloc[1:])
    assert (same.source, same.accuracy) == ("recorded", measured["accuracy"])
    assert (fewer.source, fewer.accuracy) == ("re-scored", accuracy_on(found.bundle_dir, test.iloc[1:]))


@pytest.mark.parametrize("altered", ["checkpoint", "training split"])
def test_the_drift_monitor_refuses_an_altered_checkpoint_or_training_split(registry, altered):
    state, client = registry
    name = f"banking77-monitored-{altered.replace(' ', '-')}"
    version = copy_version(client, MODEL, "1", name)
    flip_byte(checkpoint_weights(client, name, version) if altered == "checkpoint" else training_split(client, name, version))
    with pytest.raises(R.TamperedArtifact, match=f"{altered} sha256 .* does not match"):
        ServedMonitor.load(client, name, MonitorParams(reference_size=50), version)


def test_the_family_benchmark_stops_at_an_altered_checkpoint(registry, tmp_path, banking):
    from yanjin.components.compare import CompareParams, compare_family

    state, client = registry
    version = copy_version(client, MODEL, "1", "banking77-bench-v1")
    client.set_registered_model_alias("banking77-bench-v1", R.CHAMPION, version)
    flip_byte(checkpoint_weights(client, "banking77-bench-v1", version))
    train, test, _ = banking
    with pytest.raises(R.TamperedArtifact):   # before: taken for a version without a checkpoint, and skipped
        compare_family("banking77-bench", ["v1"], train.head(200), test.head(50), CompareParams(), str(tmp_path))


def test_the_family_benchmark_fits_its_baseline_on_the_versions_own_training_split(registry, tmp_path, banking):
    """Like with like: the TF-IDF row learns from the texts the versions learned from, not the whole file."""
    import pandas as pd

    from yanjin.components.compare import CompareParams, compare_family

    state, client = registry
    versions = {m: copy_version(client, MODEL, "1", f"banking77-fair-{m}") for m in ("v1", "pro", "lite")}
    for member, version in versions.items():  # one version thrice: what matters here is what each records
        client.set_registered_model_alias(f"banking77-fair-{member}", R.CHAMPION, version)
    train, test, _ = banking
    split = pd.read_parquet(training_split(client, "banking77-fair-v1", versions["v1"]))
    known = test[test[LABEL].isin(set(split[LABEL]))].head(50)  # the intents it knows: ratios of non-zero accuracies
    result = compare_family("banking77-fair", ["v1", "pro", "lite"], train, known, CompareParams(10, 1), str(tmp_path))
    baseline = result["tfidf_linearsvc"]
    assert baseline["n_train"] == len(split) < len(train)
    assert f"own training split ({len(split):,} texts" in baseline["fit_on"]
    assert baseline["fit_on"] in (tmp_path / "family.md").read_text()
    # Lite's ratios to its teacher: as strict as the gate its version records, not the full profile's
    recorded = json.loads(R.VersionTags.from_tags(dict(client.get_model_version("banking77-fair-lite", versions["lite"]).tags)).config)
    goal = result["goals"]["lite_accuracy_ratio_vs_pro"]
    assert goal["goal"] == f">= {recorded['gate']['min_teacher_accuracy_ratio']:.3g} (Lite's gate, profile {recorded['profile']})"
