"""The family side by side: every version on the same test set, same machine, one run.

Each version is measured in a fresh process, so its peak memory is its own; the TF-IDF +
LinearSVC baseline is trained and measured in the same run. Latency includes tokenization
(as serving sees it). The figures: accuracy, macro-F1, ECE, parameters, file bytes, batch-1
latency p50/p95 in PyTorch eager and ONNX Runtime, batch-32 throughput, peak RSS and
CPU-seconds per 1,000 batch-1 requests (the energy proxy: CPU time, not wall time).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .data import LABEL, TEXT


@dataclass(frozen=True)
class CompareParams:
    latency_runs: int = 300       # batch-1 requests timed per runtime
    throughput_batches: int = 30  # batch-32 calls timed (ORT)
    threads: int = 0              # ORT intra-op threads and torch threads; 0 = library default


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.array(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def measure_version(bundle_dir: str, checkpoint_dir: str | None, test: pd.DataFrame, params: CompareParams) -> dict:
    """All figures of one registered version; meant to run in its own process (see `measure_isolated`)."""
    import torch

    from ..models.family import load_checkpoint
    from ..models.inference import OnnxClassifier
    from .evaluate import score_predictions

    if params.threads:
        torch.set_num_threads(params.threads)
    texts, y_true = test[TEXT].tolist(), test[LABEL].tolist()
    rss_before, _ = _rss_mb()
    ort = OnnxClassifier.from_dir(bundle_dir, threads=params.threads)
    probs = ort.predict_proba(texts)
    out = score_predictions(y_true, [ort.labels[i] for i in probs.argmax(1)], probs.max(1), bins=15)
    out["onnx_bytes"] = ort.onnx_path.stat().st_size
    out["provider"] = ort.providers[0]

    for t in texts[:20]:
        ort.predict_proba([t])
    times, cpu0 = [], time.process_time()
    for i in range(params.latency_runs):
        start = time.perf_counter()
        ort.predict_proba([texts[i % len(texts)]])
        times.append(time.perf_counter() - start)
    out["cpu_s_per_1k_requests"] = (time.process_time() - cpu0) * 1000 / params.latency_runs
    out["ort_latency_ms_p50_b1"], out["ort_latency_ms_p95_b1"] = _percentiles(times)
    batches = [texts[(i * 32) % len(texts):][:32] or texts[:32] for i in range(params.throughput_batches)]
    start = time.perf_counter()
    n = sum(len(ort.predict_proba(b, batch_size=32)) for b in batches)
    out["ort_throughput_b32"] = n / (time.perf_counter() - start)
    _, peak = _rss_mb()
    out["peak_rss_mb"] = peak                     # the whole process: interpreter, libraries, model, buffers
    out["model_rss_mb"] = peak - rss_before       # what loading and running the ONNX model added

    if checkpoint_dir:
        model, spec, _ = load_checkpoint(checkpoint_dir)
        out["params"] = sum(p.numel() for p in model.parameters())
        tok = ort.tokenizer
        times = []
        with torch.inference_mode():
            for i in range(params.latency_runs + 20):
                start = time.perf_counter()
                ids, mask = tok([texts[i % len(texts)]])
                model(torch.from_numpy(ids), torch.from_numpy(mask)).softmax(-1)
                if i >= 20:  # warmup
                    times.append(time.perf_counter() - start)
        out["eager_latency_ms_p50_b1"], out["eager_latency_ms_p95_b1"] = _percentiles(times)
    return out


def measure_isolated(bundle_dir: str, checkpoint_dir: str | None, test: pd.DataFrame, params: CompareParams) -> dict:
    """`measure_version` in a fresh spawned process: peak memory and thread pools are its own."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(measure_version, bundle_dir, checkpoint_dir, test, params).result()


def tfidf_baseline(train: pd.DataFrame, test: pd.DataFrame, params: CompareParams | None = None) -> dict:
    """Word 1-2-grams + character 2-5-grams, TF-IDF, LinearSVC: the classic strong baseline."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline, make_union
    from sklearn.svm import LinearSVC

    start = time.perf_counter()
    clf = make_pipeline(
        make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                   TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)),
        LinearSVC(C=1.0),
    ).fit(train[TEXT], train[LABEL])
    out = {"fit_seconds": time.perf_counter() - start, "n_train": len(train)}
    pred = clf.predict(test[TEXT])
    out["accuracy"] = float(accuracy_score(test[LABEL], pred))
    out["macro_f1"] = float(f1_score(test[LABEL], pred, average="macro"))
    out["params"] = int(clf[-1].coef_.size + clf[-1].intercept_.size)
    runs = (params or CompareParams()).latency_runs
    texts = test[TEXT].tolist()
    times = []
    for i in range(runs):
        start = time.perf_counter()
        clf.predict([texts[i % len(texts)]])
        times.append(time.perf_counter() - start)
    out["sklearn_latency_ms_p50_b1"], out["sklearn_latency_ms_p95_b1"] = _percentiles(times)
    return out


COLUMNS = [  # (key, header, format)
    ("accuracy", "accuracy", "{:.4f}"), ("macro_f1", "macro-F1", "{:.4f}"), ("ece", "ECE", "{:.4f}"),
    ("params", "params", "{:,}"), ("onnx_bytes", "file MB", "{:.1f}"),
    ("eager_latency_ms_p50_b1", "eager p50 ms", "{:.2f}"), ("eager_latency_ms_p95_b1", "eager p95 ms", "{:.2f}"),
    ("ort_latency_ms_p50_b1", "ORT p50 ms", "{:.2f}"), ("ort_latency_ms_p95_b1", "ORT p95 ms", "{:.2f}"),
    ("ort_throughput_b32", "ORT b32 texts/s", "{:.0f}"), ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
    ("cpu_s_per_1k_requests", "CPU-s / 1k req", "{:.2f}"),
]


def markdown_table(rows: dict[str, dict]) -> str:
    def cell(row: dict, key: str, fmt: str) -> str:
        if key not in row:
            return "–"
        return fmt.format(row[key] / 1e6 if key == "onnx_bytes" else row[key])

    lines = ["| version | " + " | ".join(h for _, h, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(row, k, f) for k, _, f in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def pareto_plot(rows: dict[str, dict], path: str | Path, baseline: dict | None = None) -> Path:
    """Accuracy vs ORT batch-1 latency; marker area proportional to the file size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    biggest = max(r["onnx_bytes"] for r in rows.values())
    for name, r in rows.items():
        ax.scatter(r["ort_latency_ms_p50_b1"], r["accuracy"], s=40 + 1200 * r["onnx_bytes"] / biggest, alpha=0.6)
        ax.annotate(f"{name}\n{r['onnx_bytes'] / 1e6:.1f} MB", (r["ort_latency_ms_p50_b1"], r["accuracy"]),
                    textcoords="offset points", xytext=(8, 6), fontsize=8)
    if baseline:
        ax.axhline(baseline["accuracy"], ls="--", c="grey", lw=1)
        ax.text(0.01, baseline["accuracy"], f" TF-IDF + LinearSVC {baseline['accuracy']:.4f}", fontsize=8,
                color="grey", va="bottom", transform=ax.get_yaxis_transform())  # x in axes units, y in data
    ax.set_xscale("log")
    ax.set_xlabel("ONNX Runtime latency, batch 1, p50 (ms, log scale; tokenization included)")
    ax.set_ylabel("test accuracy")
    ax.set_title("yanjin family: accuracy vs latency (marker area ~ file size)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


GOALS = {  # issue 4: Lite against its teacher and V1, all measured in this run
    "lite_size_ratio_vs_pro": ("<=", 0.10),
    "lite_accuracy_ratio_vs_pro": (">=", 0.97),
    "lite_minus_tfidf_accuracy": (">", 0.0),
    "lite_latency_ratio_vs_v1_eager": ("<=", 0.10),
    "lite_latency_ratio_vs_v1_ort": ("<=", 1 / 3),
}


def goals_for(lite_config: str) -> dict[str, tuple]:
    """GOALS, with Lite's two ratios to its teacher as strict as the gate that registered it (its recorded
    config): the full profile's gate asks what the goals do, the demo's lets Lite keep 90% of a demo Pro."""
    if not lite_config:
        return GOALS
    recorded = json.loads(lite_config)
    gate, where = recorded.get("gate", {}), f"Lite's gate, profile {recorded.get('profile', '?')}"
    own = {"lite_size_ratio_vs_pro": ("<=", gate.get("max_teacher_size_ratio")),
           "lite_accuracy_ratio_vs_pro": (">=", gate.get("min_teacher_accuracy_ratio"))}
    return GOALS | {k: (op, target, where) for k, (op, target) in own.items() if target is not None}


def summarise(rows: dict[str, dict], baseline: dict, goals: dict[str, tuple] = GOALS) -> dict:
    """The headline ratios. Lite runs as shipped (ONNX Runtime, INT8); "vs V1 eager" divides by V1
    in PyTorch eager, "vs V1 ORT" by V1's FP32 ONNX file in ONNX Runtime; batch 1, p50. `goals`:
    key -> (op, target[, where the target comes from])."""
    out: dict = {"tfidf_accuracy": baseline["accuracy"]}
    for v, r in rows.items():
        out[f"{v}_accuracy"] = r["accuracy"]
    lite, pro, v1 = rows.get("lite"), rows.get("pro"), rows.get("v1")
    if lite and pro:
        out["lite_size_ratio_vs_pro"] = lite["onnx_bytes"] / pro["onnx_bytes"]
        if pro["accuracy"] > 0:  # a Pro that gets nothing right (the wrong test set) has no ratio to keep
            out["lite_accuracy_ratio_vs_pro"] = lite["accuracy"] / pro["accuracy"]
    if lite:
        out["lite_minus_tfidf_accuracy"] = lite["accuracy"] - baseline["accuracy"]
    if lite and v1:
        out["lite_latency_ratio_vs_v1_ort"] = lite["ort_latency_ms_p50_b1"] / v1["ort_latency_ms_p50_b1"]
        if "eager_latency_ms_p50_b1" in v1:
            out["lite_latency_ratio_vs_v1_eager"] = lite["ort_latency_ms_p50_b1"] / v1["eager_latency_ms_p50_b1"]
        if "eager_latency_ms_p50_b1" in lite and "eager_latency_ms_p50_b1" in v1:
            out["lite_eager_latency_ratio_vs_v1_eager"] = lite["eager_latency_ms_p50_b1"] / v1["eager_latency_ms_p50_b1"]
    out["goals"] = {k: {"value": out[k], "goal": f"{op} {target:.3g}" + "".join(f" ({w})" for w in where),
                        "met": out[k] <= target if op == "<=" else out[k] >= target if op == ">=" else out[k] > target}
                    for k, (op, target, *where) in goals.items() if k in out}
    return out


def baseline_training_set(champions: dict, given: pd.DataFrame, download_to: Path) -> tuple[pd.DataFrame, str]:
    """The baseline learns from what the versions learned from: the training split their runs logged
    when they share one (a demo's 40 texts per intent, say), else the given file, and the label says which."""
    from .. import registry as R

    splits = {c.tags.training_data_sha256 for c in champions.values()}
    if len(splits) == 1 and "" not in splits:
        champ = next(iter(champions.values()))
        path = R.download_training_split(R.client(), champ.model, champ.version, download_to)
        if path is not None:
            frame = pd.read_parquet(path)
            return frame, (f"the versions' own training split ({len(frame):,} texts, as {champ.model} "
                           f"v{champ.version} logged it)")
    return given, (f"the whole given training file ({len(given):,} texts): the versions did not log one shared "
                   f"training split, so this row is not like with like")


def compare_family(model_name: str, variants: list[str], train: pd.DataFrame, test: pd.DataFrame,
                   params: CompareParams, out_dir: str | Path) -> dict:
    """Measure every `<model_name>-<variant>@champion` and the baseline; write family.json/.md/.png
    to `out_dir` and log them to MLflow (the tracking URI must be set). Returns the results."""
    import platform
    import tempfile

    import mlflow

    from .. import registry as R

    rows, missing, champions = {}, [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in variants:
            name = R.registered_model_name(model_name, v)
            champ = R.find_champion(name, Path(tmp) / v)  # verified: measure exactly what was registered
            if champ is None:
                missing.append(name)
                continue
            champions[v] = champ
            try:
                ckpt = str(R.download_checkpoint(champ, Path(tmp) / v / "ckpt"))
            except R.MissingArtifact:
                ckpt = None  # registered before checkpoints were logged: no eager figures (a tampered one stops here)
            rows[v] = {"registered_model": name, "version": champ.version,
                       **measure_isolated(str(champ.bundle_dir), ckpt, test, params)}
        if not rows:
            return {"versions": {}, "missing": missing}
        train, fit_on = baseline_training_set(champions, train, Path(tmp) / "baseline")
    baseline = tfidf_baseline(train, test, params) | {"fit_on": fit_on}
    result = summarise(rows, baseline, goals_for(champions["lite"].tags.config if "lite" in champions else "")) | {
        "versions": rows, "tfidf_linearsvc": baseline, "missing": missing, "n_test": len(test),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "params": params.__dict__,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows | {"tfidf+linearsvc": {
        "accuracy": baseline["accuracy"], "macro_f1": baseline["macro_f1"], "params": baseline["params"],
        "eager_latency_ms_p50_b1": baseline["sklearn_latency_ms_p50_b1"],
        "eager_latency_ms_p95_b1": baseline["sklearn_latency_ms_p95_b1"]}})
    (out / "family.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    (out / "family.md").write_text(table + f"\nTF-IDF row: fit on {fit_on}; latency is scikit-learn's `predict` on "
                                   "one text (under eager). Lite runs as shipped: INT8 ONNX (file MB, ORT); "
                                   "its eager figures are the FP32 PyTorch model.\n")
    pareto_plot(rows, out / "family.png", baseline)
    with mlflow.start_run(experiment_id=R.ensure_experiment(R.family_experiment(model_name)), run_name="family benchmark"):
        mlflow.set_tags({f"{v}_version": r["version"] for v, r in rows.items()})
        mlflow.log_metrics({k: float(v) for k, v in result.items() if isinstance(v, (int, float))})
        for name in ("family.json", "family.md", "family.png"):
            if (out / name).is_file():
                mlflow.log_artifact(str(out / name), str(Path(R.FAMILY_RESULT).parent))
    return result
