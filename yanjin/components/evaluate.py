"""Evaluating an ONNX bundle on held-out data: quality, calibration, speed and size.

Speed is measured through ONNX Runtime end to end (tokenize + run), as serving will see it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from ..config import EvalParams
from ..models.inference import OnnxClassifier
from .data import LABEL, TEXT, frame_sha256


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int) -> float:
    """Sum over bins of |accuracy - mean confidence|, weighted by the bin's share of samples."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - confidence[sel].mean())
    return float(ece)


def score_predictions(y_true: list[str], y_pred: list[str], confidence: np.ndarray, bins: int) -> dict:
    correct = np.array([t == p for t, p in zip(y_true, y_pred)], dtype=float)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "ece": expected_calibration_error(confidence, correct, bins),
    }


LENGTH_BINS = ((1, 5), (6, 10), (11, 20), (21, None))  # words: short commands to long complaints


def _slice(correct: np.ndarray, confidence: np.ndarray, sel: np.ndarray) -> dict:
    n = int(sel.sum())
    return {"n": n, "accuracy": float(correct[sel].mean()) if n else None,
            "mean_confidence": float(confidence[sel].mean()) if n else None}


def slice_metrics(texts: list[str], y_true: list[str], y_pred: list[str], confidence: np.ndarray, bins: int,
                  review_threshold: float) -> dict:
    """Where the model is good and where not: accuracy by text length and by confidence bin (the
    reliability table behind the ECE), and what the serving review threshold would send to people."""
    correct = np.array([t == p for t, p in zip(y_true, y_pred)], dtype=float)
    words = np.array([len(t.split()) for t in texts])
    by_length = {f"{lo}-{hi}" if hi else f"{lo}+": _slice(correct, confidence, (words >= lo) & (words <= (hi or words.max())))
                 for lo, hi in LENGTH_BINS}
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    by_confidence = {f"{edges[b]:.2f}-{edges[b + 1]:.2f}": _slice(correct, confidence, which == b)
                     for b in range(bins) if (which == b).any()}
    low = confidence < review_threshold
    review = {"threshold": review_threshold, "share": float(low.mean()),
              "accuracy_reviewed": _slice(correct, confidence, low)["accuracy"],
              "accuracy_automatic": _slice(correct, confidence, ~low)["accuracy"]}
    return {"by_length_words": by_length, "by_confidence": by_confidence, "review": review}


def measure_speed(model: OnnxClassifier, texts: list[str], params: EvalParams) -> dict:
    for t in texts[:10]:  # warm up allocations and thread pools
        model.predict_proba([t])
    times = []
    for i in range(params.latency_runs):
        start = time.perf_counter()
        model.predict_proba([texts[i % len(texts)]])
        times.append(time.perf_counter() - start)
    batches = [texts[(i * 32) % len(texts):][:32] or texts[:32] for i in range(params.throughput_batches)]
    start = time.perf_counter()
    n = sum(len(model.predict_proba(b, batch_size=32)) for b in batches)
    elapsed = time.perf_counter() - start
    ms = np.array(times) * 1000
    return {
        "latency_ms_p50_b1": float(np.percentile(ms, 50)),
        "latency_ms_p95_b1": float(np.percentile(ms, 95)),
        "throughput_b32": float(n / elapsed),
    }


def plot_confusion(cm: np.ndarray, labels: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(6, len(labels) * 0.22)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (test)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate_bundle(bundle_dir: str | Path, test_df: pd.DataFrame, params: EvalParams,
                    out_dir: str | Path | None = None) -> dict:
    """Metrics of the bundle on `test_df`; with `out_dir`, also per-class report and confusion PNG."""
    model = OnnxClassifier.from_dir(bundle_dir, threads=params.threads)
    texts, y_true = test_df[TEXT].tolist(), test_df[LABEL].tolist()
    probs = model.predict_proba(texts)
    y_pred = [model.labels[i] for i in probs.argmax(1)]
    metrics = score_predictions(y_true, y_pred, probs.max(1), params.ece_bins)
    metrics.update(measure_speed(model, texts, params))
    metrics["onnx_bytes"] = model.onnx_path.stat().st_size
    metrics["n_test"] = len(texts)
    metrics["test_sha256"] = frame_sha256(test_df)  # the rows these figures hold for (the gate reuses them)
    metrics["provider"] = model.providers[0]
    metrics["review_share"] = float((probs.max(1) < params.review_threshold).mean())
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        report = classification_report(y_true, y_pred, labels=model.labels, output_dict=True, zero_division=0)
        (out / "per_class.json").write_text(json.dumps(report, indent=2))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        slices = slice_metrics(texts, y_true, y_pred, probs.max(1), params.ece_bins, params.review_threshold)
        (out / "slices.json").write_text(json.dumps(slices, indent=2))
        cm = confusion_matrix(y_true, y_pred, labels=model.labels)
        plot_confusion(cm, model.labels, out / "confusion_matrix.png")
        (out / "confusion_matrix.json").write_text(json.dumps({"labels": model.labels, "matrix": cm.tolist()}))
    return metrics


def accuracy_on(bundle_dir: str | Path, test_df: pd.DataFrame) -> float:
    """Accuracy only: how the gate scores the current champion on the candidate's test set."""
    model = OnnxClassifier.from_dir(bundle_dir)
    return float(accuracy_score(test_df[LABEL].tolist(), model.predict(test_df[TEXT].tolist())))
