"""V1 at benchmark quality: the full profile through the real pipeline, beside a TF-IDF baseline.

Writes benchmarks/results/v1.json with the pipeline's own evaluation figures (accuracy, macro_f1,
ece, latency_ms_p50_b1, throughput_b32, onnx_bytes, ...) and the baseline measured in the same run.

    python benchmarks/v1.py [--state-dir .yanjin-bench] [--data DIR]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def tfidf_baseline(data_dir: Path) -> dict:
    import pandas as pd
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline, make_union
    from sklearn.svm import LinearSVC

    train, test = pd.read_csv(data_dir / "train.csv"), pd.read_csv(data_dir / "test.csv")
    start = time.perf_counter()
    clf = make_pipeline(
        make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                   TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)),
        LinearSVC(C=1.0),
    ).fit(train["text"], train["category"])
    fit_s = time.perf_counter() - start
    pred = clf.predict(test["text"])
    return {"accuracy": float(accuracy_score(test["category"], pred)),
            "macro_f1": float(f1_score(test["category"], pred, average="macro")), "fit_seconds": fit_s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--state-dir", default=str(ROOT / ".yanjin-bench"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "banking77"))
    ap.add_argument("--profile", default="full")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    raw = RESULTS / "v1.pipeline.tmp"
    subprocess.run([sys.executable, "-m", "yanjin.cli", "pipeline", "run", "--profile", args.profile,
                    "--data", args.data, "--state-dir", args.state_dir, "--metrics-out", str(raw)], check=True)
    v1 = json.loads(raw.read_text())
    raw.unlink()
    baseline = tfidf_baseline(Path(args.data))
    result = v1 | {"baseline_tfidf_linearsvc": baseline,
                   "accuracy_minus_baseline": v1["accuracy"] - baseline["accuracy"]}
    (RESULTS / "v1.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
