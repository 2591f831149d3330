"""The drift check: Evidently's column drift on the traffic features, with thresholds calibrated on
in-distribution windows instead of Evidently's defaults.

Evidently's defaults (K-S / chi-square p < 0.05 per column; a domain classifier's ROC AUC > 0.55
for raw text) flag a good share of same-distribution windows on 1,000-row references: the
training texts the reference comes from are not exactly like live traffic (banking77's test set
is balanced across intents, its training set is not; the model is more confident on texts it
was trained on). So every column uses a distance whose size we can calibrate (Wasserstein
normalised by the reference's spread for numbers, Jensen-Shannon for the predicted label), and
`calibrate` sets each column's threshold just above what in-distribution windows reach. A window
drifts when any column crosses its threshold.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..config import MonitorParams
from .features import CATEGORICAL, NUMERICAL

COLUMNS = NUMERICAL + CATEGORICAL


@dataclass
class DriftResult:
    verdict: str                        # drift | no_drift | insufficient_data
    window: int
    drifted_columns: list[str]
    scores: dict[str, float]            # column -> distance
    thresholds: dict[str, float]
    low_confidence_share: float
    snapshot: object = None             # the Evidently snapshot (HTML / JSON / workspace)
    examples: list = field(default_factory=list)  # the window's most novel texts: text, label, confidence, novelty
    labels: dict = field(default_factory=dict)    # intent -> (texts in the window, share of the reference)

    @property
    def drift_share(self) -> float:
        return len(self.drifted_columns) / len(self.scores) if self.scores else 0.0

    def summary(self) -> dict:
        return {"verdict": self.verdict, "window": self.window, "drift_share": self.drift_share,
                "drifted_columns": self.drifted_columns, "scores": self.scores, "thresholds": self.thresholds,
                "low_confidence_share": self.low_confidence_share}


def _definition():
    from evidently import DataDefinition

    return DataDefinition(numerical_columns=NUMERICAL, categorical_columns=CATEGORICAL)


def column_scores(reference: pd.DataFrame, current: pd.DataFrame, params: MonitorParams,
                  thresholds: dict | None = None):
    """Evidently's drift distance per column, and the snapshot it came from."""
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    limits = thresholds if thresholds is not None else params.thresholds
    missing = [c for c in COLUMNS if c not in limits]
    if missing:
        raise ValueError(f"monitor.thresholds has no threshold for {missing}; give all of {COLUMNS}")
    preset = DataDriftPreset(columns=COLUMNS, per_column_method=dict(params.methods),
                             per_column_threshold={c: float(limits[c]) for c in COLUMNS},
                             drift_share=round(1.0 / len(COLUMNS) - 0.005, 2))  # any drifted column is dataset drift
    snapshot = Report([preset], include_tests=True).run(
        current_data=Dataset.from_pandas(current[COLUMNS], data_definition=_definition()),
        reference_data=Dataset.from_pandas(reference[COLUMNS], data_definition=_definition()))
    scores = {}
    for m in snapshot.dict()["metrics"]:
        column = m.get("config", {}).get("column")
        if m["metric_name"].startswith("ValueDrift") and column in COLUMNS:
            scores[column] = float(m["value"])
    return scores, snapshot


def check(reference: pd.DataFrame, current: pd.DataFrame, params: MonitorParams) -> DriftResult:
    low = float((current["confidence"] < params.low_confidence).mean()) if len(current) else 0.0
    if len(current) < params.min_window:
        return DriftResult("insufficient_data", len(current), [], {}, dict(params.thresholds), low)
    scores, snapshot = column_scores(reference, current, params)
    drifted = [c for c in COLUMNS if scores[c] > params.thresholds[c]]
    return DriftResult("drift" if drifted else "no_drift", len(current), drifted, scores,
                       dict(params.thresholds), low, snapshot)


def calibrate(reference: pd.DataFrame, in_distribution: list[pd.DataFrame], params: MonitorParams,
              margin: float = 1.5) -> dict[str, float]:
    """Per column: the highest distance any in-distribution window reached, times `margin`."""
    never = {c: 1e9 for c in COLUMNS}
    highest = {c: 0.0 for c in COLUMNS}
    for window in in_distribution:
        scores, _ = column_scores(reference, window, params, never)
        highest = {c: max(highest[c], scores[c]) for c in COLUMNS}
    return {c: float(np.round(highest[c] * margin, 4)) for c in COLUMNS}
