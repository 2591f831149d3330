"""V2, Pro and Lite go through the same pipeline as V1 and register as their own models."""
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
    for variant in ("v2", "pro", "lite"):  # Lite distils the Pro champion registered just before
        cfg = with_variant(load_config("tiny"), variant)
        outcomes[variant] = run_local(cfg, str(data_dir / "train.csv"), str(data_dir / "test.csv"),
                                      str(data_dir / "categories.json"), state, None, "test-commit", adapt_corpus=corpus)
    # the same Lite recipe, held to a size ceiling it cannot meet: the compression gate must block it
    strict = with_variant(load_config("tiny", ["gate.max_teacher_size_ratio=0.0001"]), "lite")
    outcomes["lite-too-big"] = run_local(strict, str(data_dir / "train.csv"), str(data_dir / "test.csv"),
                                         str(data_dir / "categories.json"), state, None, "test-commit", adapt_corpus=corpus)
    mlflow.set_tracking_uri(state.tracking_uri)
    yield outcomes, mlflow.MlflowClient()
    mlflow.set_tracking_uri(None)


@pytest.mark.parametrize("variant", ["v2", "pro", "lite"])
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


def test_lite_names_its_teacher_and_is_really_smaller(runs, tmp_path):
    outcomes, client = runs
    lite = client.get_model_version("banking77-lite", "1")
    pro = client.get_model_version("banking77-pro", "1")
    assert (lite.tags["teacher_model"], lite.tags["teacher_version"], lite.tags["teacher_run_id"]) == (
        "banking77-pro", "1", pro.run_id)
    run = client.get_run(lite.run_id).data
    assert run.metrics["student_params"] < run.metrics["teacher_params"] / 4
    assert run.metrics["student_vocab_size"] < 30522 / 4
    spec = json.load(open(client.download_artifacts(lite.run_id, "checkpoint/model_config.json", str(tmp_path))))
    assert spec["n_layers"] == 1 and spec["n_heads"] == 6 and spec["d_ff"] == 768
    # the registered file is the INT8 one, and its accuracy was measured on the test set
    assert int(lite.tags["onnx_bytes"]) < int(pro.tags["onnx_bytes"]) / 10
    assert float(lite.tags["accuracy"]) == outcomes["lite"].evaluation["accuracy"]
    assert run.metrics["accuracy_ratio_vs_teacher"] == pytest.approx(
        float(lite.tags["accuracy"]) / run.metrics["teacher_test_accuracy"])


def test_compression_gate_blocks_a_lite_over_its_size_ceiling(runs, tmp_path):
    outcomes, client = runs
    too_big = outcomes["lite-too-big"]
    assert too_big.gate == "reject" and too_big.version is None
    assert [str(v.version) for v in client.search_model_versions("name='banking77-lite'")] == ["1"]
    decision = client.download_artifacts(too_big.evaluation["run_id"], "gate/decision.json", str(tmp_path))
    reasons = json.load(open(decision))["reasons"]
    assert any("of teacher's" in r and "> ceiling 0.0%" in r for r in reasons)


def test_lite_without_a_teacher_stops_with_a_clear_error(tmp_path, data_dir, capfd):
    cfg = with_variant(load_config("tiny"), "lite")
    with pytest.raises(RuntimeError):
        run_local(cfg, str(data_dir / "train.csv"), str(data_dir / "test.csv"), str(data_dir / "categories.json"),
                  LocalState(tmp_path / "state"), None, "test-commit", adapt_corpus=[str(data_dir / "train.csv")])
    err = capfd.readouterr()
    assert "Lite distils banking77-pro@champion, which does not exist" in err.out + err.err
    assert mlflow.MlflowClient(LocalState(tmp_path / "state").tracking_uri).search_registered_models() == []


def test_family_benchmark_measures_every_registered_champion(runs, tmp_path, small_slice):
    from yanjin.components.compare import CompareParams, compare_family

    train, test, _ = small_slice
    result = compare_family("banking77", ["v1", "v2", "pro", "lite"], train, test,
                            CompareParams(latency_runs=10, throughput_batches=2), tmp_path)
    assert result["missing"] == ["banking77-v1"] and set(result["versions"]) == {"v2", "pro", "lite"}
    lite, pro = result["versions"]["lite"], result["versions"]["pro"]
    for row in (lite, pro):
        assert row["eager_latency_ms_p50_b1"] > 0 and row["ort_latency_ms_p50_b1"] > 0 and row["peak_rss_mb"] > 0
    assert lite["params"] < pro["params"] / 4 and lite["onnx_bytes"] < pro["onnx_bytes"] / 10
    assert result["lite_size_ratio_vs_pro"] == lite["onnx_bytes"] / pro["onnx_bytes"]
    assert result["goals"]["lite_size_ratio_vs_pro"]["met"]
    assert {p.name for p in tmp_path.iterdir()} == {"family.json", "family.md", "family.png"}
    assert (tmp_path / "family.md").read_text().count("\n| ") == 4  # v2, pro, lite, TF-IDF rows
