"""Retraining with what serving learnt: the original training data plus the labels people and
clients gave (review queue, feedback), through the same pipeline, validation and gates.

The new version registers as `@challenger` (never `@champion` directly); promoting it is an A/B
rollout or a person's decision.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

TEXT, LABEL = "text", "category"


def normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


@dataclass
class RetrainingData:
    path: Path
    original_rows: int
    added: int                     # labelled rows that made it in
    dropped: dict[str, int]        # why the others did not: unknown_label, in_test_set, duplicate


def retraining_data(train_csv: Path, test_csv: Path, labelled: list[dict], known_labels: list[str],
                    out_dir: Path) -> RetrainingData:
    """Original training rows + labelled traffic, deduplicated (by case- and space-insensitive text),
    without texts of the test set (they would leak into the gate's measurement) and without labels
    the model does not know. Written as a CSV with the original columns, for the pipeline to validate."""
    train = pd.read_csv(train_csv)
    test_texts = {normalised(t) for t in pd.read_csv(test_csv)[TEXT]}
    known, seen = set(known_labels), {normalised(t) for t in train[TEXT]}
    dropped = {"unknown_label": 0, "in_test_set": 0, "duplicate": 0}
    rows = []
    for row in labelled:
        key = normalised(row["text"])
        reason = ("unknown_label" if row["label"] not in known else "in_test_set" if key in test_texts
                  else "duplicate" if key in seen else None)
        if reason:
            dropped[reason] += 1
            continue
        seen.add(key)
        rows.append({TEXT: row["text"], LABEL: row["label"]})
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"train-with-feedback-{time.strftime('%Y%m%dT%H%M%S')}.csv"
    pd.concat([train[[TEXT, LABEL]], pd.DataFrame(rows, columns=[TEXT, LABEL])]).to_csv(path, index=False)
    return RetrainingData(path, len(train), len(rows), dropped)


def retrain(config, data_dir: Path, state, tracking_uri: str | None, labelled: list[dict], reason: str,
            git_commit: str):
    """Run the pipeline (kfp.local) on the training data plus labelled traffic; returns (outcome, data).
    A registered result is tagged with why it was trained and how many labelled rows it used."""
    import json

    from mlflow import MlflowClient

    from ..components.stages import domain_sources
    from ..pipelines.run import run_local
    from ..registry import FEEDBACK_DROPPED, FEEDBACK_ROWS, RETRAINING_REASON

    labels_file = data_dir / "categories.json"
    data = retraining_data(data_dir / "train.csv", data_dir / "test.csv", labelled,
                           json.loads(labels_file.read_text()), state.retraining)
    # the champion's own recipe, domain text included, resolved against the data folder it came from
    corpus = domain_sources(config.adapt.domain_text, data.path, data_dir) if config.recipe.uses_domain_text else []
    outcome = run_local(config, str(data.path), str(data_dir / "test.csv"), str(labels_file), state, tracking_uri,
                        git_commit, adapt_corpus=corpus)
    if outcome.version:
        client = MlflowClient(tracking_uri or state.tracking_uri)
        for key, value in {RETRAINING_REASON: reason, FEEDBACK_ROWS: str(data.added),
                           FEEDBACK_DROPPED: json.dumps(data.dropped)}.items():
            client.set_model_version_tag(outcome.registered_model, outcome.version, key, value)
    return outcome, data
