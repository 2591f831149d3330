#!/usr/bin/env bash
# GPU check (about 10 minutes from a clean checkout) for a machine with one NVIDIA GPU, a driver >= 525
# (CUDA 12; `nvidia-smi` shows it), Python 3.11, PyPI and NVIDIA's index (https://pypi.nvidia.com) reachable:
#  1. the project's environment (`make install`) trains the tiny family once on the CPU (V1, Pro, Lite:
#     a few minutes) into $STATE; nothing large is trained;
#  2. a second environment, .venv-gpu, gets what the GPU image has: yanjin[gpu,tensorrt] (ONNX Runtime 1.26
#     on CUDA 12 with cuDNN 9 and TensorRT 10, all wheels); `python -m yanjin.models.gpu` shows which
#     providers really load and which libraries would be missing;
#  3. benchmarks/gpu_serving.py times TensorRT, CUDA and CPU side by side for V1, Pro and Lite at batch 1 and
#     64, through OnnxClassifier and through `yanjin serve`, with the nodes each provider ran and each one's
#     test-set accuracy; then PyTorch eager on the same GPU (a CUDA build of torch==2.13.0 in .venv-torch);
#  4. the results and ratios: benchmarks/results/gpu_check.json (and $OUT/gpu_check.json when $OUT is set).
# GPU_TRAINING=1 also runs benchmarks/gpu_training.py (training at fp32 and in mixed precision) in .venv-torch.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${YANJIN_GPU_STATE:-.yanjin-gpu-check}
DATA=${YANJIN_DATA:-../shared/data/banking77}
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cu126}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
[ -x .venv/bin/python ] || make install
if [ ! -f "$STATE/mlflow.db" ]; then
  .venv/bin/yanjin pipeline run --variant all --profile tiny --data "$DATA" --state-dir "$STATE" \
    --set gate.min_improvement=-0.5    # every member registers at tiny scale: the check needs all three
fi
if [ ! -x .venv-gpu/bin/python ]; then
  python3.11 -m venv .venv-gpu
  .venv-gpu/bin/pip install --quiet --extra-index-url https://pypi.nvidia.com -e ".[gpu,tensorrt]"
fi
.venv-gpu/bin/python -m yanjin.models.gpu
.venv-gpu/bin/python benchmarks/gpu_serving.py --part ort --state "$STATE" --data "$DATA"
if [ ! -x .venv-torch/bin/python ]; then
  python3.11 -m venv .venv-torch
  .venv-torch/bin/pip install --quiet --index-url "$TORCH_INDEX" "torch==2.13.0"
  .venv-torch/bin/pip install --quiet -e ".[pipeline]"
fi
.venv-torch/bin/python benchmarks/gpu_serving.py --part eager --state "$STATE" --data "$DATA"
[ "${GPU_TRAINING:-0}" = 1 ] && .venv-torch/bin/python benchmarks/gpu_training.py
.venv-gpu/bin/python benchmarks/gpu_serving.py --part merge
