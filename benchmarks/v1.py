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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def tfidf_baseline(data_dir: Path) -> dict:
    from yanjin.components.compare import tfidf_baseline as fit_and_score
    from yanjin.components.data import read_table

    train, test = (read_table(data_dir / f, "text", "category") for f in ("train.csv", "test.csv"))
    return fit_and_score(train, test)


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
