"""The real pipeline under kfp.local against a real MLflow (SQLite): both gate branches, bad input."""
import json

import mlflow
import pandas as pd
import pytest

from yanjin.config import load_config
from yanjin.pipelines.run import LocalState, run_local

MODEL = "banking77-v1"


def run(tmp, data_dir, overrides=(), train=None, test=None):
    cfg = load_config("tiny", list(overrides))
    return run_local(cfg, str(train or data_dir / "train.csv"), str(test or data_dir / "test.csv"),
                     str(data_dir / "categories.json"), LocalState(tmp / "state"), None, "test-commit")


@pytest.fixture(scope="module")
def registry(tmp_path_factory, data_dir):
    """Two runs in one registry: a good candidate (calibrated), then a worse one (untrained head, floors off)."""
    tmp = tmp_path_factory.mktemp("pipeline")
    first = run(tmp, data_dir, ["train.calibrate=true"])
    worse = run(tmp, data_dir, ["train.epochs=0", "gate.min_accuracy=0", "gate.min_macro_f1=0", "gate.max_ece=1"])
    mlflow.set_tracking_uri(LocalState(tmp / "state").tracking_uri)
    yield first, worse, mlflow.MlflowClient()
    mlflow.set_tracking_uri(None)


def test_first_candidate_is_registered_as_champion_and_challenger(registry):
    first, _, client = registry
    assert first.gate == "register" and first.version == "1"
    assert client.get_registered_model(MODEL).aliases == {"champion": 1, "challenger": 1}


def test_registered_version_carries_lineage_tags(registry, data_dir):
    first, _, client = registry
    tags = client.get_model_version(MODEL, "1").tags
    from yanjin.components.data import sha256_files

    assert tags["variant"] == "v1" and tags["git_commit"] == "test-commit"
    assert tags["data_sha256"] == sha256_files([data_dir / f for f in ("train.csv", "test.csv", "categories.json")])
    assert json.loads(tags["config"])["profile"] == "tiny"
    assert len(tags["artifact_sha256"]) == 64
    assert float(tags["accuracy"]) == pytest.approx(first.evaluation["accuracy"])


def test_training_calibrates_its_checkpoint_only_when_asked(registry):
    first, worse, client = registry
    assert client.get_run(first.evaluation["run_id"]).data.metrics["calibration_temperature"] > 0
    assert "calibration_temperature" not in client.get_run(worse.evaluation["run_id"]).data.metrics


def test_evaluation_figures_are_complete(registry):
    first, _, _ = registry
    for key in ("accuracy", "macro_f1", "ece", "latency_ms_p50_b1", "throughput_b32", "onnx_bytes"):
        assert first.evaluation[key] > 0, key
    assert first.evaluation["accuracy"] >= load_config("tiny").gate.min_accuracy


def test_worse_candidate_is_not_registered(registry):
    first, worse, client = registry
    assert worse.gate == "reject" and worse.version is None
    assert worse.evaluation["accuracy"] < first.evaluation["accuracy"]
    assert [str(v.version) for v in client.search_model_versions(f"name='{MODEL}'")] == ["1"]
    run = client.get_run(worse.evaluation["run_id"])
    assert run.data.tags["gate"] == "reject"
    assert run.data.metrics[f"champion_test_accuracy.{MODEL}"] == pytest.approx(first.evaluation["accuracy"])


def _bad_inputs(data_dir, tmp):
    train = pd.read_csv(data_dir / "train.csv")
    cases = {
        "missing_columns": (train.rename(columns={"text": "utterance"}), "missing column(s) ['text']"),
        "unknown_labels": (train.assign(category=train["category"].where(train.index % 50 != 0, "crypto_refund")),
                           "labels belong to the known label set"),
        "too_few_examples": (train[~((train["category"] == "card_arrival") & (train.index % 20 != 0))],
                             "at least 10 training examples per class"),
    }
    for name, (frame, _) in cases.items():
        frame.to_csv(tmp / f"{name}.csv", index=False)
    (tmp / "empty_file.csv").write_bytes(b"")
    (tmp / "non_utf8.csv").write_bytes("text,category\nthé card,card_arrival\n".encode("latin-1"))
    return {**{n: m for n, (_, m) in cases.items()}, "empty_file": "file is empty", "non_utf8": "not valid UTF-8"}


@pytest.mark.parametrize("case", ["missing_columns", "empty_file", "unknown_labels", "non_utf8", "too_few_examples"])
def test_bad_input_stops_before_training_and_registers_nothing(case, data_dir, tmp_path, capfd):
    expected = _bad_inputs(data_dir, tmp_path)[case]
    bad = tmp_path / f"{case}.csv"
    with pytest.raises(RuntimeError, match="Inner task failed: .*'validate-data'"):
        run(tmp_path, data_dir, train=bad)
    output = capfd.readouterr()
    assert f"{bad}" in output.out + output.err and expected in output.out + output.err
    state = LocalState(tmp_path / "state")
    assert not list((tmp_path / "state" / "kfp").glob("*/train-model"))  # training never started
    mlflow.set_tracking_uri(state.tracking_uri)
    try:
        assert mlflow.MlflowClient().search_registered_models() == []
    finally:
        mlflow.set_tracking_uri(None)


def test_a_base_that_fails_its_pin_stops_before_training_and_registers_nothing(data_dir, tmp_path, capfd):
    import shutil

    from yanjin.models.pretrained import BASE_SHA256, base_model_dir

    base = tmp_path / "my-base"
    base.mkdir()
    for name in BASE_SHA256:
        shutil.copyfile(base_model_dir() / name, base / name)
    with (base / "model.safetensors").open("r+b") as f:  # one flipped byte deep in the weights
        f.seek(50_000_000)
        byte = f.read(1)
        f.seek(50_000_000)
        f.write(bytes([byte[0] ^ 1]))
    pins = ",".join(f"{k}={v}" for k, v in BASE_SHA256.items())
    with pytest.raises(RuntimeError, match="Inner task failed: .*'train-model'"):
        run(tmp_path, data_dir, [f"model.base={base}", f"model.base_sha256={pins}"])
    output = capfd.readouterr()
    assert f"{base / 'model.safetensors'}: sha256" in output.out + output.err
    assert "epoch 1: train loss" not in output.out + output.err  # no epoch ran
    mlflow.set_tracking_uri(LocalState(tmp_path / "state").tracking_uri)
    try:
        assert mlflow.MlflowClient().search_registered_models() == []
    finally:
        mlflow.set_tracking_uri(None)
