"""The drift reference of a served version: its own training split, found through its lineage.

Versions registered since the monitor exists log their training split to their run
(`training_data/`). Older ones are rebuilt from the files their run names (`data.train`,
`data.test`), accepted only if those files still hash to the version's `data_sha256` tag, and
split with the version's own config, exactly as its pipeline did.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient

from ..registry import RUN_PARAM_LABELS, RUN_PARAM_TEST, RUN_PARAM_TRAIN, TRAINING_DATA_ARTIFACT, LineageError, download_training_split
from ..registry import VersionTags


def training_split(client: MlflowClient, model: str, version: str) -> pd.DataFrame:
    """(text, label) rows the version was trained on (the logged split, verified against its digest)."""
    with tempfile.TemporaryDirectory() as tmp:
        logged = download_training_split(client, model, version, tmp)
        if logged is not None:
            return pd.read_parquet(logged)
    return _rebuilt_from_lineage(client, model, client.get_model_version(model, version))


def _rebuilt_from_lineage(client: MlflowClient, model: str, mv) -> pd.DataFrame:
    from ..components import data as D
    from ..config import PipelineConfig

    params = client.get_run(mv.run_id).data.params
    train, test = params.get(RUN_PARAM_TRAIN), params.get(RUN_PARAM_TEST)
    if not (train and test and Path(train).is_file() and Path(test).is_file()):
        raise LineageError(f"{model} v{mv.version}: no '{TRAINING_DATA_ARTIFACT}' artifact and the files its run "
                           f"names ({train}, {test}) are not readable here; re-run its pipeline")
    labels_file = Path(params.get(RUN_PARAM_LABELS) or Path(train).with_name("categories.json"))
    candidates = [[train, test, str(labels_file)], [train, test]] if labels_file.is_file() else [[train, test]]
    tags = VersionTags.from_tags(dict(mv.tags))
    expected = tags.data_sha256
    used = next((c for c in candidates if D.sha256_files(c) == expected), None)
    if used is None:
        raise LineageError(f"{model} v{mv.version}: {train} no longer hashes to its data_sha256 {expected}; "
                           f"the training data changed since, so it cannot serve as the drift reference")
    cfg = PipelineConfig.from_json(tags.config)
    frame = D.read_table(train, cfg.data.text_column, cfg.data.label_column)
    labels = D.read_label_set(used[2] if len(used) == 3 else None, frame)
    frame, _ = D.subsample(frame, labels, cfg.data)
    trained_on, _ = D.split_train_val(frame, cfg.data)
    return trained_on


def reference_and_rest(training: pd.DataFrame, size: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded sample of `size` rows as the reference; the rest (vocabulary, and windows that were
    not part of the reference for calibration)."""
    shuffled = training.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return shuffled[:size].reset_index(drop=True), shuffled[size:].reset_index(drop=True)

