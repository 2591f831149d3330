"""The served version's drift monitor: its features, its reference, its calibrated thresholds.

    monitor = ServedMonitor.load(client, "banking77-lite", params)   # @champion by default
    result = monitor.check(texts_of_the_latest_window)
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient

from ..registry import CHAMPION, DRIFT_THRESHOLDS, download_checkpoint, download_version
from .drift import DriftResult, MonitorParams, calibrate, check
from .features import Featurizer
from .reference import reference_and_rest, training_split

THRESHOLDS_TAG = DRIFT_THRESHOLDS   # on the model version: {"window": N, "thresholds": {...}, ...}


@dataclass
class ServedMonitor:
    model: str
    version: str
    params: MonitorParams
    featurizer: Featurizer
    reference: pd.DataFrame        # features of the reference texts
    rest: pd.DataFrame             # training rows not in the reference (text, label)
    calibrated: bool

    @classmethod
    def load(cls, client: MlflowClient, model: str, params: MonitorParams, version: str | None = None,
             alias: str = CHAMPION) -> "ServedMonitor":
        version = version or str(client.get_model_version_by_alias(model, alias).version)
        uri = client.tracking_uri
        with tempfile.TemporaryDirectory() as tmp:  # bundle, checkpoint and training split all verified
            found = download_version(model, version, Path(tmp) / "bundle", uri)
            ckpt = download_checkpoint(found, Path(tmp) / "checkpoint", uri)
            reference, rest = reference_and_rest(training_split(client, model, version), params.reference_size,
                                                 params.seed)
            featurizer = Featurizer.build(found.bundle_dir, ckpt, reference["text"].tolist(), rest["text"].tolist(),
                                          params.k)
        stored = json.loads(client.get_model_version(model, version).tags.get(THRESHOLDS_TAG, "{}"))
        calibrated = stored.get("window") == params.window
        if calibrated:
            params = replace(params, thresholds=stored["thresholds"])
        frame = featurizer.frame(reference["text"].tolist(), is_reference=True)
        return cls(model, version, params, featurizer, frame, rest, calibrated)

    def features(self, texts: list[str]) -> pd.DataFrame:
        return self.featurizer.frame(texts)

    def check(self, texts: list[str], examples: int = 8) -> DriftResult:
        """The verdict on a window, with what a reviewer reads beside it: its most novel texts and its intents."""
        current = self.features(texts) if texts else self.reference[:0]
        result = check(self.reference, current, self.params)
        top = current["novelty"].to_numpy().argsort()[::-1][:examples]
        result.examples = [{"text": texts[i], "label": current["label"].iloc[i],
                            "confidence": float(current["confidence"].iloc[i]),
                            "novelty": float(current["novelty"].iloc[i])} for i in top]
        reference = self.reference["label"].value_counts(normalize=True)
        result.labels = {name: (int(n), float(reference.get(name, 0.0)))
                         for name, n in current["label"].value_counts().items()}
        return result

    def calibrate(self, client: MlflowClient, in_distribution: list[list[str]], margin: float = 1.5) -> dict:
        """Thresholds from in-distribution windows of `params.window` texts, stored on the version."""
        thresholds = calibrate(self.reference, [self.features(w) for w in in_distribution], self.params, margin)
        client.set_model_version_tag(self.model, self.version, THRESHOLDS_TAG, json.dumps(
            {"window": self.params.window, "thresholds": thresholds, "windows": len(in_distribution),
             "margin": margin}))
        self.params = replace(self.params, thresholds=thresholds)
        self.calibrated = True
        return thresholds
