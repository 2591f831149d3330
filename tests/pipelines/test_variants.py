"""V2 and Pro go through the same pipeline as V1 and register as their own models."""
import json

import mlflow
import pytest

from yanjin.config import load_config, with_variant
from yanjin.pipelines.run import LocalState, run_local


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("variants")
    state = LocalState(tmp / "state")
    corpus = [str(data_dir / "train.csv"), str(data_dir.parent / "nlupp" / "banking")]
    outcomes = {}
    for variant in ("v2", "pro"):
        cfg = with_variant(load_config("tiny"), variant)
        outcomes[variant] = run_local(cfg, str(data_dir / "train.csv"), str(data_dir / "test.csv"),
                                      str(data_dir / "categories.json"), state, None, "test-commit", adapt_corpus=corpus)
    mlflow.set_tracking_uri(state.tracking_uri)
    yield outcomes, mlflow.MlflowClient()
    mlflow.set_tracking_uri(None)


@pytest.mark.parametrize("variant", ["v2", "pro"])
def test_variant_is_registered_under_its_own_name_with_lineage(runs, variant):
    outcomes, client = runs
    assert outcomes[variant].registered_model == f"banking77-{variant}" and outcomes[variant].version == "1"
    mv = client.get_model_version(f"banking77-{variant}", "1")
    assert mv.tags["variant"] == variant and json.loads(mv.tags["config"])["model"]["variant"] == variant
    assert client.get_registered_model(f"banking77-{variant}").aliases == {"champion": 1, "challenger": 1}


def test_v2_bundle_accepts_4096_positions(runs):
    outcomes, client = runs
    spec = json.loads(client.get_model_version("banking77-v2", "1").tags["config"])["model"]
    assert spec["max_positions"] == 4096 and spec["max_length"] == 4096


def test_pro_run_logs_its_adapted_encoder(runs):
    outcomes, client = runs
    run = client.get_run(outcomes["pro"].evaluation["run_id"])
    assert run.data.metrics["adapt_texts"] == load_config("tiny").adapt.max_texts
    assert run.data.metrics["adapt_excluded_test_texts"] > 0  # NLU++ shares a few texts with banking77 test
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "adapted_encoder")]
    assert artifacts == ["adapted_encoder/encoder.safetensors"]
