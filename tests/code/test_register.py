"""Registration against a real MLflow (SQLite): lineage tags, aliases, champion lookup."""
import mlflow
import pytest

from yanjin.components.export import export_onnx
from yanjin.registry import CHALLENGER, CHAMPION, VersionTags, ensure_experiment, find_champion, register_bundle
from yanjin.components.train import TrainParams, train_classifier
from yanjin.models.family import ModelSpec
from yanjin.models.inference import OnnxClassifier, bundle_sha256


@pytest.fixture(scope="module")
def trained(small_slice, tmp_path_factory):
    train, _, labels = small_slice
    ckpt = tmp_path_factory.mktemp("ckpt")
    train_classifier(train, train.iloc[::3], labels, ModelSpec(n_layers=1, max_length=32),
                     TrainParams(epochs=1, batch_size=16), ckpt, progress=False)
    out = tmp_path_factory.mktemp("bundle")
    export_onnx(ckpt, out)
    return ckpt, out


@pytest.fixture(scope="module")
def bundle(trained):
    return trained[1]


@pytest.fixture
def tracking(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = ensure_experiment("t-v1", str(tmp_path / "artifacts"))
    yield exp, tmp_path
    mlflow.set_tracking_uri(None)


@pytest.fixture
def release(tracking):
    from yanjin.registry.ledger import Ledger
    from yanjin.registry.mirror import Release

    return Release(mlflow.MlflowClient(), Ledger(f"sqlite:///{tracking[1] / 'release.db'}"), "trainer")


def test_first_version_is_champion_and_challenger_with_lineage(bundle, tracking, release):
    exp, tmp = tracking
    with mlflow.start_run(experiment_id=exp) as run:
        pass
    version = register_bundle(bundle, "t-v1", run.info.run_id, VersionTags(variant="v1", data_sha256="abc"), release)
    client = mlflow.MlflowClient()
    mv = client.get_model_version("t-v1", version)
    assert mv.tags["variant"] == "v1" and mv.tags["data_sha256"] == "abc"
    assert mv.tags["artifact_sha256"] == bundle_sha256(bundle)
    assert client.get_registered_model("t-v1").aliases == {CHAMPION: int(version), CHALLENGER: int(version)}
    # the artifacts live under the embedded-mode folder, not ./mlruns
    assert str(tmp / "artifacts") in client.get_experiment(exp).artifact_location


def test_second_version_moves_only_challenger(bundle, tracking, release):
    exp, tmp = tracking
    with mlflow.start_run(experiment_id=exp) as run:
        pass
    v1 = register_bundle(bundle, "t-v1", run.info.run_id, VersionTags(), release)
    v2 = register_bundle(bundle, "t-v1", run.info.run_id, VersionTags(), release)
    aliases = mlflow.MlflowClient().get_registered_model("t-v1").aliases
    assert aliases == {CHAMPION: int(v1), CHALLENGER: int(v2)}
    # every alias move is in the audit trail, made under the model's lease, by who registered it
    from yanjin.release.promotion import history

    moves = [(e.action, e.alias, e.from_version, e.to_version, e.who) for e in history(release, "t-v1")]
    assert moves == [("register", CHALLENGER, None, v1, "trainer"), ("register", CHAMPION, None, v1, "trainer"),
                     ("register", CHALLENGER, v1, v2, "trainer")]
    assert release.ledger.registered_by("t-v1", v2) == "trainer"


def test_registering_during_a_rollout_leaves_the_challenger_alone(bundle, tracking, release, capsys):
    """Before, a drift-triggered retraining during a rollout swapped an unassessed version in at the
    rollout's traffic share."""
    from yanjin.release.promotion import history

    exp, _ = tracking
    with mlflow.start_run(experiment_id=exp) as run:
        pass
    v1 = register_bundle(bundle, "t-v1", run.info.run_id, VersionTags(), release)
    v2 = register_bundle(bundle, "t-v1", run.info.run_id, VersionTags(), release)
    client = mlflow.MlflowClient()
    with release.ledger.fenced(None) as conn:   # a rollout of v2 runs
        release.ledger.write_rollout(conn, "t-v1", {"status": "running", "challenger": v2})
    v3 = register_bundle(bundle, "t-v1", run.info.run_id, VersionTags(), release)
    assert client.get_registered_model("t-v1").aliases == {CHAMPION: int(v1), CHALLENGER: int(v2)}
    assert f"@challenger stays at v{v2}: a rollout of it is running" in capsys.readouterr().out
    assert client.get_model_version("t-v1", v3).tags["artifact_sha256"]  # registered all the same
    assert history(release, "t-v1")[-1].to_version == v2


def test_champion_downloads_as_a_runnable_bundle(bundle, tracking, release):
    exp, tmp = tracking
    assert find_champion("t-v1", tmp / "dl") is None  # no model yet: no champion
    with mlflow.start_run(experiment_id=exp) as run:
        pass
    version = register_bundle(bundle, "t-v1", run.info.run_id, VersionTags(), release)
    champ = find_champion("t-v1", tmp / "dl")
    assert champ.version == version
    assert bundle_sha256(champ.bundle_dir) == champ.tags.artifact_sha256
    texts = ["my card has not arrived yet"]
    assert OnnxClassifier.from_dir(champ.bundle_dir).predict(texts) == OnnxClassifier.from_dir(bundle).predict(texts)


def test_a_student_starts_from_the_named_members_champion_or_version_checkpoint(trained, tracking, release):
    """compress.student_from as the compress step resolves it: no champion is an error naming the
    model; otherwise the version's logged checkpoint, verified against its digest."""
    from yanjin.components.stages import _student_start
    from yanjin.config import load_config
    from yanjin.registry import checkpoint_sha256

    ckpt, bundle = trained
    exp, tmp = tracking
    cfg = load_config("tiny", ["model.variant=lite", "model_name=t", "compress.student_from=v1"])
    uri = mlflow.get_tracking_uri()
    with pytest.raises(RuntimeError, match="t-v1@champion does not exist"):
        _student_start(cfg, uri, str(tmp / "none"))
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_artifacts(str(ckpt), "checkpoint")
    tags = VersionTags(variant="v1", checkpoint_sha256=checkpoint_sha256(ckpt))
    first = register_bundle(bundle, "t-v1", run.info.run_id, tags, release)
    second = register_bundle(bundle, "t-v1", run.info.run_id, tags, release)
    found, path = _student_start(cfg, uri, str(tmp / "champion"))
    assert (found.version, checkpoint_sha256(path)) == (first, tags.checkpoint_sha256)  # the first is champion
    pinned = load_config("tiny", ["model.variant=lite", "model_name=t", f"compress.student_from=v1:{second}"])
    assert _student_start(pinned, uri, str(tmp / "pinned"))[0].version == second
