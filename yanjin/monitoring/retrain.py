"""Retraining with what serving learnt: the original training data plus the labels people and
clients gave (review queue, feedback), through the same pipeline, validation and gates.

The new version registers as `@challenger` (never `@champion` directly); promoting it is an A/B
rollout or a person's decision.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from ..components.data import LABEL, TEXT, DataSource
from ..traffic.store import normalised


@dataclass
class RetrainingData:
    path: Path
    original_rows: int
    added: int                     # labelled rows that made it in
    dropped: dict[str, int]        # why the others did not: unknown_label, in_test_set, duplicate
    source: DataSource | None = None   # the champion's data with this training file in its place


def retraining_data(source: DataSource, labelled: list[dict], out_dir: Path,
                    tracking_uri: str | None = None) -> RetrainingData:
    """The source's training rows + labelled traffic, deduplicated (by case- and space-insensitive text),
    without texts of the test set (they would leak into the gate's measurement) and without labels the
    model does not know. Written as the source's training file is (format, column names), so the pipeline
    validates it as it did the original."""
    train = source.read("train", tracking_uri)   # a retrained champion's own set may sit in the store
    test_texts = {normalised(t) for t in source.read("test", tracking_uri)[TEXT]}
    known = set(source.label_set(train, tracking_uri))
    seen = {normalised(t) for t in train[TEXT]}
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
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)   # customer texts: the owner's alone
    merged = pd.concat([train[[TEXT, LABEL]], pd.DataFrame(rows, columns=[TEXT, LABEL])], ignore_index=True)
    path = source.write_like_train(merged, out_dir / f"train-with-feedback-{time.strftime('%Y%m%dT%H%M%S')}")
    path.chmod(0o600)
    return RetrainingData(path, len(train), len(rows), dropped, replace(source, train=str(path)))


def store_retraining_set(client, model: str, data: RetrainingData, reason: str, artifact_root: str | None = None) -> str:
    """Keep the retraining set in the registry's store, as a customer-data run (apart from the models, denied
    to serving) with what went into it; returns its artifact URI, which a cluster run reads as its training data."""
    from ..registry import DATA_OF_TAG, DATA_REASON_TAG, RETRAINING_SET_ARTIFACT, keep_customer_rows

    run_id = keep_customer_rows(client, data.path, RETRAINING_SET_ARTIFACT, f"{model} retraining set: {reason}",
                                {DATA_OF_TAG: model, DATA_REASON_TAG: reason[:4000]}, artifact_root)
    client.log_param(run_id, "original_rows", data.original_rows)
    client.log_param(run_id, "added_rows", data.added)
    client.log_param(run_id, "dropped", json.dumps(data.dropped))
    return f"runs:/{run_id}/{RETRAINING_SET_ARTIFACT}/{data.path.name}"


UNCHANGED = "unchanged"  # the outcome's gate when a retraining had nothing new to learn from


@dataclass(frozen=True)
class Champion:
    """The version a retraining would replace, as its record says it was made."""
    version: str
    config_json: str
    git_commit: str
    data_given: bool = False    # --data named files of the user's own: new data, whatever their rows


def nothing_new(data: RetrainingData, config, commit: str, champion: Champion) -> str:
    """Why retraining would reproduce the champion ("" when something changed): no new trusted labels, the
    champion's own training rows, its recipe and its code. Training is deterministic on the CPU: the same
    inputs give the same bytes, which the gate would refuse anyway, after an hour of training."""
    if data.added or champion.data_given:
        return ""
    if config.to_json() != champion.config_json or commit != champion.git_commit:
        return ""
    dropped = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in data.dropped.items() if n) or "none offered"
    return (f"nothing changed since v{champion.version}: no new trusted labels (dropped: {dropped}), the same "
            f"training rows, recipe and code ({commit[:12]}); not retrained")


def retrain(config, source: DataSource, state, tracking_uri: str | None, labelled: list[dict], reason: str,
            git_commit: str, champion: Champion | None = None):
    """Run the pipeline (kfp.local) on the champion's data plus labelled traffic; returns (outcome, data).
    A registered result is tagged with why it was trained and how many labelled rows it used. With the
    `champion` it would replace, a retraining that has nothing new (nothing_new) does not run: its outcome's
    gate is UNCHANGED and its evaluation holds the reason."""
    from mlflow import MlflowClient

    from ..components.stages import domain_sources
    from ..pipelines.run import RunOutcome, run_local
    from ..registry import FEEDBACK_DROPPED, FEEDBACK_ROWS, RETRAINING_REASON, registered_model_name

    data = retraining_data(source, labelled, state.retraining, tracking_uri or state.tracking_uri)
    why = nothing_new(data, config, git_commit, champion) if champion else ""
    if why:
        data.path.unlink(missing_ok=True)  # a copy of the champion's rows: nothing to keep
        return RunOutcome(registered_model_name(config.model_name, config.model.variant), UNCHANGED,
                          {"reason": why}, None), data
    # the champion's own recipe, domain text included, resolved against the data folder it came from
    corpus = domain_sources(config.adapt.domain_text, data.path, Path(source.train).parent) \
        if config.recipe.uses_domain_text else []
    outcome = run_local(config, str(data.path), source.test, source.labels, state, tracking_uri, git_commit,
                        adapt_corpus=corpus)
    if outcome.version:
        client = MlflowClient(tracking_uri or state.tracking_uri)
        for key, value in {RETRAINING_REASON: reason, FEEDBACK_ROWS: str(data.added),
                           FEEDBACK_DROPPED: json.dumps(data.dropped)}.items():
            client.set_model_version_tag(outcome.registered_model, outcome.version, key, value)
    return outcome, data
