"""MLflow model registry: find the champion, register a candidate with its lineage.

Aliases, not stages (deprecated): `challenger` goes to every newly registered version, and the
first version of a registered model is also `champion`. Promotion beyond that is a human step.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..models.inference import BUNDLE_FILES, ONNX_FILE, bundle_file, bundle_sha256

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"


CHECKPOINT_ARTIFACT = "checkpoint"  # each training run logs its PyTorch checkpoint here (Lite's teacher weights)
TRAINING_DATA_ARTIFACT = "training_data"  # ... and its training split (parquet): the drift monitor's reference


@dataclass(frozen=True)
class Champion:
    version: str
    bundle_dir: Path
    tags: dict
    run_id: str = ""


class LineageError(RuntimeError):
    """A registered version lacks what a later step needs (its checkpoint, an intact artifact)."""


def registered_model_name(base: str, variant: str) -> str:
    """One registered model per family member, e.g. banking77-v1."""
    return f"{base}-{variant}"


def ensure_experiment(name: str, artifact_root: str | None) -> str:
    """Experiment id, created with artifacts under `artifact_root` (embedded mode) if new."""
    import mlflow

    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = Path(artifact_root).resolve().as_uri() if artifact_root else None
    return mlflow.create_experiment(name, artifact_location=location)


def find_champion(model_name: str, download_to: str | Path, alias: str = CHAMPION) -> Champion | None:
    """The version behind `@alias`, downloaded; None when the model or alias does not exist."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        mv = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    return download_version(model_name, str(mv.version), download_to)


def download_version(model_name: str, version: str, download_to: str | Path) -> Champion:
    import mlflow

    mv = mlflow.MlflowClient().get_model_version(model_name, version)
    local = mlflow.artifacts.download_artifacts(f"models:/{model_name}/{version}", dst_path=str(download_to))
    return Champion(str(mv.version), Path(local), dict(mv.tags), mv.run_id)


def verified(champion: Champion, model_name: str) -> Champion:
    """Refuse a downloaded bundle whose bytes differ from the digest recorded at registration."""
    expected = champion.tags.get("artifact_sha256")
    actual = bundle_sha256(champion.bundle_dir)
    if expected != actual:
        raise LineageError(f"{model_name} version {champion.version}: artifact sha256 {actual} does not match "
                           f"the registered {expected}; the stored model was altered")
    return champion


def download_checkpoint(model_name: str, champion: Champion, download_to: str | Path) -> Path:
    """The PyTorch checkpoint the version's training run logged (safetensors + spec + tokenizer)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=champion.run_id, artifact_path=CHECKPOINT_ARTIFACT,
                                                        dst_path=str(download_to)))
    except (MlflowException, OSError) as e:
        raise LineageError(f"{model_name} version {champion.version} (run {champion.run_id}) has no "
                           f"'{CHECKPOINT_ARTIFACT}' artifact to start from; re-run its pipeline: {e}") from e


def register_bundle(bundle_dir: str | Path, model_name: str, run_id: str, tags: dict[str, str]) -> str:
    """Log the ONNX bundle to the run, register it with lineage tags and set aliases; returns the version."""
    import tempfile

    import mlflow
    import numpy as np
    import onnx
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    client = mlflow.MlflowClient()
    labels = json.loads(bundle_file(bundle_dir, "labels.json").read_text())
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("int64"), (-1, -1), "input_ids"),
                       TensorSpec(np.dtype("int64"), (-1, -1), "attention_mask")]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, len(labels)), "logits")]),
    )
    extra = [str(bundle_file(bundle_dir, n)) for n in BUNDLE_FILES if n != ONNX_FILE]
    with mlflow.start_run(run_id=run_id):
        info = mlflow.onnx.log_model(
            onnx.load(str(bundle_file(bundle_dir, ONNX_FILE))), name="model", signature=signature,
            extra_files=extra, save_as_external_data=False,
            onnx_execution_providers=["CPUExecutionProvider"],
        )
    # hash what was stored, not what we meant to store: serving re-checks exactly these bytes
    with tempfile.TemporaryDirectory() as tmp:
        stored = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=tmp)
        digest = bundle_sha256(stored)
    all_tags = {**tags, "artifact_sha256": digest}
    mv = mlflow.register_model(info.model_uri, model_name, tags=all_tags)
    client.set_registered_model_alias(model_name, CHALLENGER, mv.version)
    if CHAMPION not in client.get_registered_model(model_name).aliases:
        client.set_registered_model_alias(model_name, CHAMPION, mv.version)
    log.info("registered %s version %s (sha256 %s)", model_name, mv.version, digest)
    return str(mv.version)
