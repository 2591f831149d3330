#!/usr/bin/env bash
# GPU check (<= 10 minutes) for a machine with an NVIDIA GPU:
#  1. training on the GPU (benchmarks/gpu_training.py): fine-tuning, adaptation and distillation at fp32
#     and in mixed precision, side by side -> benchmarks/results/gpu_training.json. Needs a CUDA build
#     of torch in $PY's environment (this machine's pinned torch==2.13.0 is the CPU build);
#  2. installs onnxruntime-gpu (+ TensorRT wheels), confirms that the TensorRT -> CUDA -> CPU provider
#     order is honoured, and times V1 and Lite on each provider. Needs the registered bench family
#     (.yanjin-bench) or YANJIN_BENCH_STATE.
# Output: benchmarks/results/gpu_check.json (and $OUT/gpu_check.json when $OUT is set).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STATE=${YANJIN_BENCH_STATE:-.yanjin-bench}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'this torch build sees no CUDA device: install a CUDA build of torch==2.13.0')"
$PY benchmarks/gpu_training.py
# onnxruntime-gpu replaces the CPU wheel (never both); tensorrt-cu12 brings libnvinfer for the TRT provider
$PY -m pip uninstall -y onnxruntime >/dev/null 2>&1 || true
$PY -m pip install --quiet "onnxruntime-gpu==1.32.0" "tensorrt-cu12>=10,<11" "nvidia-cudnn-cu12>=9,<10"
$PY - "$STATE" <<'PY'
import json, os, sys, tempfile, time
from pathlib import Path
import numpy as np, pandas as pd, mlflow, onnxruntime as ort
ort.preload_dlls()
from yanjin.registry import find_champion
from yanjin.models.inference import OnnxClassifier, available_providers
state = Path(sys.argv[1]).resolve()
mlflow.set_tracking_uri(f"sqlite:///{state / 'mlflow.db'}")
texts = pd.read_csv(Path("..") / "shared/data/banking77/test.csv")["text"].tolist()
result = {"available": ort.get_available_providers(), "preferred_order": available_providers()}
trt_cache = tempfile.mkdtemp()
for variant in ("v1", "lite"):
    champ = find_champion(f"banking77-{variant}", tempfile.mkdtemp())
    for provider in ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"):
        if provider not in result["available"]:
            result[f"{variant}/{provider}"] = "not available"
            continue
        opts = {"trt_engine_cache_enable": True, "trt_engine_cache_path": trt_cache} if provider.startswith("Tensorrt") else {}
        try:
            clf = OnnxClassifier.from_dir(champ.bundle_dir, providers=[(provider, opts), "CPUExecutionProvider"])
            for t in texts[:50]:
                clf.predict_proba([t])      # warm-up (TensorRT builds its engines here)
            times = []
            for t in texts[:500]:
                s = time.perf_counter(); clf.predict_proba([t]); times.append(time.perf_counter() - s)
            s = time.perf_counter(); clf.predict_proba(texts[:2048], batch_size=64); b64 = 2048 / (time.perf_counter() - s)
            result[f"{variant}/{provider}"] = {"used": clf.providers[0], "p50_ms_b1": float(np.median(times) * 1000),
                                              "p95_ms_b1": float(np.percentile(times, 95) * 1000), "throughput_b64": b64}
        except Exception as e:  # report, do not hide: a provider that fails to load is a finding
            result[f"{variant}/{provider}"] = f"failed: {type(e).__name__}: {e}"[:500]
print(json.dumps(result, indent=2))
Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
Path("benchmarks/results/gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
if os.environ.get("OUT"):
    Path(os.environ["OUT"], "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
PY
