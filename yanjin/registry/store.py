"""The verified store: registered versions downloaded and checked, bundles registered with their record.

Downloads are verified: a bundle against the `artifact_sha256` its registration recorded, the
PyTorch checkpoint against `checkpoint_sha256`, the logged training split against
`training_data_sha256`. A mismatch is a LineageError naming the version, and nothing is loaded.
MLflow is imported only inside the functions that call it.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from .names import (BUNDLE_FILES, CHALLENGER, CHAMPION, CHECKPOINT_ARTIFACT, CHECKPOINT_FILES, CUSTOMER_DATA_EXPERIMENT,
                    DATA_RUN_TAG, LABELS_FILE,
                    MODEL_ARTIFACT, ONNX_FILE, ROLLOUT_RUNNING, TRAINING_DATA_ARTIFACT, VersionTags, model_uri)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Downloaded:
    """One registered version on local disk, its bundle verified."""
    model: str
    version: str
    bundle_dir: Path
    tags: VersionTags
    run_id: str = ""


class LineageError(RuntimeError):
    """A registered version lacks what a later step needs, or its stored bytes were altered."""


class MissingArtifact(LineageError):
    """The version's run logged no such artifact (registered before it existed): nothing to verify or load."""


class TamperedArtifact(LineageError):
    """Stored bytes that no longer hash to the digest recorded at registration: never loaded."""


# -- digests --------------------------------------------------------------------------------------
def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def bundle_file(bundle_dir: str | Path, name: str) -> Path:
    """A bundle file, found at the top level or under MLflow's `extra_files/` when downloaded."""
    root = Path(bundle_dir)
    for candidate in (root / name, root / "extra_files" / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{root}: bundle has no {name}")


def files_sha256(folder: str | Path, names: tuple[str, ...]) -> str:
    """One digest over named files, so tampering with any of them is detected."""
    lines = [f"{name} {sha256_file(bundle_file(folder, name))}" for name in names]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def bundle_sha256(bundle_dir: str | Path) -> str:
    return files_sha256(bundle_dir, BUNDLE_FILES)


def checkpoint_sha256(ckpt_dir: str | Path) -> str:
    return files_sha256(ckpt_dir, CHECKPOINT_FILES)


def verify_bundle(found: Downloaded) -> Downloaded:
    """Re-check a downloaded bundle on disk (e.g. after it sat in a cache) against its registered digest."""
    actual = bundle_sha256(found.bundle_dir)
    if actual != found.tags.artifact_sha256:
        raise TamperedArtifact(f"{found.model} version {found.version}: artifact sha256 {actual} does not match the "
                           f"registered {found.tags.artifact_sha256 or '(none)'}; the stored model was altered")
    return found


def _check(what: str, model: str, version: str, expected: str, actual: str, tag: str) -> None:
    if not expected:
        log.warning("%s v%s: no %s tag (registered before it existed); its %s is not verified",
                    model, version, tag, what)
    elif expected != actual:
        raise TamperedArtifact(f"{model} version {version}: {what} sha256 {actual} does not match the registered "
                           f"{expected}; the stored {what} was altered")


# -- client operations ----------------------------------------------------------------------------
def client(tracking_uri: str | None = None):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri) if tracking_uri else MlflowClient()


def embedded_artifact_root(tracking_uri: str) -> str | None:
    """Where an embedded (SQLite) registry keeps artifacts: the state folder its database lies in says
    (MLflow's own default is ./mlruns under whatever folder the process runs in); None for a server."""
    from ..state import LocalState

    if not tracking_uri.startswith("sqlite:///"):
        return None
    return LocalState(Path(tracking_uri[len("sqlite:///"):]).parent).artifact_root


def ensure_experiment(name: str, artifact_root: str | None = None, tracking_uri: str | None = None) -> str:
    """Experiment id, created if new with artifacts under `artifact_root`, by default beside an embedded
    registry's database (a tracking server keeps its own default)."""
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifact_root = artifact_root or embedded_artifact_root(c.tracking_uri)
    location = Path(artifact_root).resolve().as_uri() if artifact_root else None
    try:
        return c.create_experiment(name, artifact_location=location)
    except MlflowException as e:   # another step created it in between
        if (exp := c.get_experiment_by_name(name)) is None:
            raise
        log.debug("experiment %s created meanwhile: %s", name, e.error_code)
        return exp.experiment_id


def keep_customer_rows(mlflow_client, path: str | Path, artifact: str, run_name: str, tags: dict[str, str],
                       artifact_root: str | None = None) -> str:
    """Keep a file of training or customer text as a run of CUSTOMER_DATA_EXPERIMENT, apart from the
    models: a deployment denies that one experiment to serving (infra's grants). Returns the run id."""
    exp = ensure_experiment(CUSTOMER_DATA_EXPERIMENT, artifact_root, tracking_uri=mlflow_client.tracking_uri)
    run = mlflow_client.create_run(exp, run_name=run_name[:100], tags=tags)
    mlflow_client.log_artifact(run.info.run_id, str(path), artifact)
    mlflow_client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def split_run(mlflow_client, run_id: str) -> str:
    """The run holding a training run's split: its customer-data run (DATA_RUN_TAG), or for a run logged
    before there was one, the run itself."""
    return mlflow_client.get_run(run_id).data.tags.get(DATA_RUN_TAG) or run_id


def alias_version(mlflow_client, model: str, alias: str) -> str | None:
    """The version `model@alias` points at, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow_client.get_model_version_by_alias(model, alias).version)
    except MlflowException:
        return None


def version_tags(mlflow_client, model: str, version: str) -> VersionTags:
    return VersionTags.from_tags(dict(mlflow_client.get_model_version(model, version).tags))


def download_version(model: str, version: str, download_to: str | Path, tracking_uri: str | None = None) -> Downloaded:
    """One registered version's ONNX bundle, refused unless it hashes to its `artifact_sha256`."""
    import mlflow

    c = client(tracking_uri)
    mv = c.get_model_version(model, version)
    tags = VersionTags.from_tags(dict(mv.tags))
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts(model_uri(model, str(mv.version)), dst_path=str(download_to)))
    return verify_bundle(Downloaded(model, str(mv.version), local, tags, mv.run_id))


def version_labels(model: str, version: str, tracking_uri: str | None = None) -> list[str]:
    """The labels a registered version answers with (its bundle's labels.json alone, not the whole bundle)."""
    import tempfile

    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"{model_uri(model, version)}/extra_files/{LABELS_FILE}",
                                                   dst_path=tmp)
        return json.loads(Path(path).read_text())


def find_champion(model: str, download_to: str | Path, alias: str = CHAMPION,
                  tracking_uri: str | None = None) -> Downloaded | None:
    """The version behind `model@alias`, downloaded and verified; None when there is none."""
    version = alias_version(client(tracking_uri), model, alias)
    return None if version is None else download_version(model, version, download_to, tracking_uri)


def download_checkpoint(found: Downloaded, download_to: str | Path, tracking_uri: str | None = None) -> Path:
    """The PyTorch checkpoint the version's training run logged, refused unless it hashes to its tag."""
    from mlflow.exceptions import MlflowException

    try:
        path = Path(client(tracking_uri).download_artifacts(found.run_id, CHECKPOINT_ARTIFACT, str(download_to)))
    except (MlflowException, OSError) as e:
        raise MissingArtifact(f"{found.model} version {found.version} (run {found.run_id}) has no "
                           f"'{CHECKPOINT_ARTIFACT}' artifact to start from; re-run its pipeline: {e}") from e
    _check("checkpoint", found.model, found.version, found.tags.checkpoint_sha256, checkpoint_sha256(path),
           "checkpoint_sha256")
    return path


def download_training_split(mlflow_client, model: str, version: str, download_to: str | Path) -> Path | None:
    """The training split the version's run logged (parquet), verified; None when none was logged. A user
    denied the customer-data experiment gets a LineageError saying so."""
    from mlflow.exceptions import MlflowException

    mv = mlflow_client.get_model_version(model, version)
    try:
        folder = Path(mlflow_client.download_artifacts(split_run(mlflow_client, mv.run_id), TRAINING_DATA_ARTIFACT,
                                                       str(download_to)))
    except MlflowException as e:
        if e.get_http_status_code() == 403 or "Permission denied" in str(e):
            raise LineageError(f"{model} v{version}: this MLflow user may not read its training split (kept in "
                               f"{CUSTOMER_DATA_EXPERIMENT}, denied to serving); run this as the pipeline's user") from e
        return None
    except OSError:
        return None
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if not files:
        return None
    _check("training split", model, version, VersionTags.from_tags(dict(mv.tags)).training_data_sha256,
           sha256_file(files[0]), "training_data_sha256")
    return files[0]


def register_bundle(bundle_dir: str | Path, model: str, run_id: str, tags: VersionTags, release) -> str:
    """Log the ONNX bundle to the run and register it with its tags; the release ledger (`release`, a
    registry.mirror.Release) records who registered it and moves the aliases. Returns the version."""
    import tempfile

    import mlflow
    import numpy as np
    import onnx
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    labels = json.loads(bundle_file(bundle_dir, LABELS_FILE).read_text())
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("int64"), (-1, -1), "input_ids"),
                       TensorSpec(np.dtype("int64"), (-1, -1), "attention_mask")]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, len(labels)), "logits")]),
    )
    extra = [str(bundle_file(bundle_dir, n)) for n in BUNDLE_FILES if n != ONNX_FILE]
    with mlflow.start_run(run_id=run_id):
        info = mlflow.onnx.log_model(
            onnx.load(str(bundle_file(bundle_dir, ONNX_FILE))), name=MODEL_ARTIFACT, signature=signature,
            extra_files=extra, save_as_external_data=False,
            onnx_execution_providers=["CPUExecutionProvider"],
        )
    # hash what was stored, not what we meant to store: serving re-checks exactly these bytes
    with tempfile.TemporaryDirectory() as tmp:
        stored = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=tmp)
        digest = bundle_sha256(stored)
    all_tags = VersionTags(**asdict(tags) | {"artifact_sha256": digest}).to_tags()
    mv = mlflow.register_model(info.model_uri, model, tags=all_tags)
    version = str(mv.version)
    release.ledger.record_version(model, version, release.principal)
    with release.holding(model) as lease:  # aliases move under the model's lease, never under a rollout
        running = release.ledger.rollout(model)
        if running and running.get("status") == ROLLOUT_RUNNING:
            print(f"registered {model} v{version}; @{CHALLENGER} stays at v{running[CHALLENGER]}: a rollout "
                  f"of it is running (start a rollout of v{version} once it ends)")
        else:
            release.move(lease, model, CHALLENGER, release.ledger.alias(model, CHALLENGER), version, "register",
                         "gate passed")
        if release.ledger.alias(model, CHAMPION) is None:
            release.move(lease, model, CHAMPION, None, version, "register", "the first version")
    log.info("registered %s version %s (sha256 %s)", model, version, digest)
    return version


__all__ = ['Downloaded', 'LineageError', 'MissingArtifact', 'TamperedArtifact', 'sha256_file', 'bundle_file', 'files_sha256', 'bundle_sha256', 'checkpoint_sha256', 'verify_bundle', 'client', 'embedded_artifact_root', 'ensure_experiment', 'keep_customer_rows', 'split_run', 'alias_version', 'version_tags', 'download_version', 'version_labels', 'find_champion', 'download_checkpoint', 'download_training_split', 'register_bundle']
