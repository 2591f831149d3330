"""Changing the stored bytes of a registered version, as an attacker with write access to the artifact
store would (the tags, and so the recorded digests, stay as they were). Embedded mode: file stores."""
import tempfile
from dataclasses import asdict
from pathlib import Path

import mlflow

from yanjin import registry as R


def local(uri: str) -> Path:
    assert uri.startswith("file://"), f"not a local artifact store: {uri}"
    return Path(uri[len("file://"):])


def stored_bundle(client, model: str, version: str) -> Path:
    """The folder the registry serves the version's ONNX bundle from."""
    source = client.get_model_version(model, version).source          # models:/m-<id> (an MLflow 3 logged model)
    return local(client.get_logged_model(source.split("/")[-1]).artifact_location)


def stored_run_files(client, model: str, version: str) -> Path:
    """The artifact folder of the run that made the version (checkpoint, training split)."""
    return local(client.get_run(client.get_model_version(model, version).run_id).info.artifact_uri)


def stored_split(client, model: str, version: str) -> Path:
    """The training split file the version's drift reference is read from (in its customer-data run)."""
    run_id = R.split_run(client, client.get_model_version(model, version).run_id)
    return next((local(client.get_run(run_id).info.artifact_uri) / R.TRAINING_DATA_ARTIFACT).iterdir())


def flip_byte(path: Path) -> None:
    """Change one byte in the middle of the file: same size, another sha256."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def release_of(client, principal: str = "tests"):
    """The release ledger beside the client's embedded MLflow, acting as `principal`."""
    from yanjin.registry.ledger import Ledger, ledger_url
    from yanjin.registry.mirror import Release

    return Release(client, Ledger(ledger_url(client.tracking_uri)), principal)


def copy_version(client, source_model: str, version: str, model: str) -> str:
    """`source_model` v`version` registered again as a version of `model`, from a new run holding copies of
    its checkpoint and training split, with the same recorded digests: a version whose files can be altered
    without touching the original."""
    mv = client.get_model_version(source_model, version)
    experiment = client.get_run(mv.run_id).info.experiment_id
    run = client.create_run(experiment)
    with tempfile.TemporaryDirectory() as tmp:
        folder = client.download_artifacts(mv.run_id, R.CHECKPOINT_ARTIFACT, tmp)
        client.log_artifacts(run.info.run_id, folder, R.CHECKPOINT_ARTIFACT)
        split = client.download_artifacts(R.split_run(client, mv.run_id), f"{R.TRAINING_DATA_ARTIFACT}/{R.TRAINING_DATA_FILE}", tmp)
        client.set_tag(run.info.run_id, R.DATA_RUN_TAG, R.keep_customer_rows(
            client, split, R.TRAINING_DATA_ARTIFACT, f"{model} training split", {R.DATA_OF_TAG: model}))
        bundle = mlflow.artifacts.download_artifacts(R.model_uri(source_model, version), dst_path=str(Path(tmp) / "b"))
        tags = R.VersionTags(**asdict(R.VersionTags.from_tags(dict(mv.tags))) | {"artifact_sha256": ""})
        return R.register_bundle(bundle, model, run.info.run_id, tags, release_of(client))
