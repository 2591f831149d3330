"""GPU serving, measured side by side on one GPU: ONNX Runtime's TensorRT, CUDA and CPU providers and PyTorch
eager, for V1, Pro and Lite at batch 1 and 64, through OnnxClassifier and through the HTTP server; which
provider each node really ran on (ONNX Runtime's profiler); the accuracy of each on the test set.

Two halves, because the CUDA build of ONNX Runtime and the CPU one cannot share an environment:
  --part ort    in the GPU environment (yanjin[gpu,tensorrt]): providers, placements, accuracy, HTTP
  --part eager  in the project's environment with a CUDA build of torch: PyTorch eager on the same GPU
  --part merge  the two into benchmarks/results/gpu_check.json, with the ratios the issue asks about.
Run by benchmarks/gpu_check.sh, which trains the tiny family once and builds both environments.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from yanjin.models.gpu import TENSORRT  # noqa: E402
from yanjin.registry import CHAMPION  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MEMBERS = ("v1", "pro", "lite")
B1_TEXTS, B64_TEXTS = 300, 2048


def test_set(data: Path) -> tuple[list[str], list[str]]:
    import csv

    with open(data / "test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def timed(fn, texts: list[str]) -> dict:
    """p50/p95 of one text at a time, and texts per second at batch 64."""
    one = []
    for t in texts[:B1_TEXTS]:
        start = time.perf_counter()
        fn([t], 1)
        one.append(time.perf_counter() - start)
    start = time.perf_counter()
    fn(texts[:B64_TEXTS], 64)
    return {"p50_ms_b1": 1000 * statistics.median(one), "p95_ms_b1": 1000 * float(np.percentile(one, 95)),
            "texts_per_s_b64": min(B64_TEXTS, len(texts)) / (time.perf_counter() - start)}


def placements(bundle: Path, providers: list) -> dict[str, int]:
    """Nodes per provider as ONNX Runtime ran them (its profiler's node events)."""
    import onnxruntime as ort

    from yanjin.registry import ONNX_FILE

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "profile")
    session = ort.InferenceSession(str(bundle / ONNX_FILE), options, providers=providers)
    ids = np.ones((2, 16), dtype=np.int64)
    session.run(["logits"], {"input_ids": ids, "attention_mask": ids})
    events = json.loads(Path(session.end_profiling()).read_text())
    counts: dict[str, int] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            p = e.get("args", {}).get("provider", "?")
            counts[p] = counts.get(p, 0) + 1
    return counts


def ort_part(state: Path, data: Path) -> dict:
    import mlflow

    from yanjin.models import gpu
    from yanjin.config import ModelSpec
    from yanjin.models.inference import OnnxClassifier
    from yanjin.registry import CHECKPOINT_SPEC, ONNX_FILE, bundle_file, find_champion

    mlflow.set_tracking_uri(f"sqlite:///{state / 'mlflow.db'}")
    texts, truth = test_set(data)
    out = {"runtime": gpu.report(), "members": {}}
    cache = state / "trt-engines"
    for member in MEMBERS:
        found = find_champion(f"banking77-{member}", tempfile.mkdtemp())
        bundle = Path(found.bundle_dir)
        max_length = ModelSpec.from_dict(json.loads(bundle_file(bundle, CHECKPOINT_SPEC).read_text())).max_length
        rows = {}
        for name, chain in (("tensorrt", [gpu.TENSORRT, gpu.CUDA, gpu.CPU]), ("cuda", [gpu.CUDA, gpu.CPU]),
                            ("cpu", [gpu.CPU])):
            try:
                providers = [(p, gpu.tensorrt_options(bundle / ONNX_FILE, 64, max_length, cache))
                             if p == gpu.TENSORRT else (p, {"device_id": 0}) if p == gpu.CUDA else p for p in chain]
                start = time.perf_counter()
                clf = OnnxClassifier.from_dir(bundle, providers=providers)
                for size in (1, 8, 64):   # TensorRT builds (or loads) its engine here
                    clf.predict_proba(["warm up"] * size, batch_size=size)
                ready_s = time.perf_counter() - start
                predicted = clf.predict(texts, batch_size=64)
                rows[name] = {"session_providers": clf.providers, "ready_s": ready_s,
                              "nodes_by_provider": placements(bundle, providers),
                              "accuracy": float(np.mean([p == t for p, t in zip(predicted, truth)])),
                              **timed(lambda b, n: clf.predict_proba(b, batch_size=n), texts)}
            except Exception as e:   # a provider that fails is a finding, not a crash
                rows[name] = {"failed": f"{type(e).__name__}: {e}"[:600]}
        rows["http"] = http_timing(state, f"banking77-{member}", texts)
        out["members"][member] = rows
    return out


def http_timing(state: Path, model: str, texts: list[str]) -> dict:
    """`yanjin serve` on this environment's providers: p50 of one text per request, texts/s at 64 per request."""
    import httpx

    port = 3901
    proc = subprocess.Popen([sys.executable, "-m", "yanjin.cli", "serve", "--model", model, "--state-dir", str(state),
                             "--port", str(port), "--set", "max_items=64", "--set", "max_batch_size=64"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 600
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                return {"failed": proc.stderr.read()[-1500:]}
            time.sleep(1)
        with httpx.Client(timeout=60) as http:
            def call(batch, _n):
                r = http.post(f"{url}/predict", json={"items": [{"text": t} for t in batch]})
                r.raise_for_status()
            result = timed(lambda b, n: [call(b[i:i + 64], n) for i in range(0, len(b), 64)], texts)
            result["provider"] = http.post(f"{url}/info", json={}).json()["arms"][CHAMPION]["provider"]
        return result
    finally:
        proc.terminate()
        proc.wait(30)


def eager_part(state: Path, data: Path) -> dict:
    import mlflow
    import torch

    from yanjin.models.family import load_checkpoint
    from yanjin.models.tokenizer import TextTokenizer
    from yanjin.registry import TOKENIZER_FILE, download_checkpoint, find_champion

    if not torch.cuda.is_available():
        return {"failed": f"torch {torch.__version__} sees no CUDA device: install its CUDA build"}
    mlflow.set_tracking_uri(f"sqlite:///{state / 'mlflow.db'}")
    texts, truth = test_set(data)
    out = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0), "members": {}}
    for member in MEMBERS:
        found = find_champion(f"banking77-{member}", tempfile.mkdtemp())
        ckpt = download_checkpoint(found, tempfile.mkdtemp())
        model, spec, labels = load_checkpoint(ckpt)
        model = model.to("cuda").eval()
        tok = TextTokenizer(Path(found.bundle_dir) / TOKENIZER_FILE, spec.max_length)

        @torch.inference_mode()
        def run(batch, n):
            rows = []
            for i in range(0, len(batch), n):
                ids, mask = tok(batch[i:i + n])
                rows.append(model(torch.from_numpy(ids).cuda(), torch.from_numpy(mask).cuda()).float().cpu())
            torch.cuda.synchronize()
            return torch.cat(rows)

        run(texts[:64], 64)
        predicted = [labels[i] for i in run(texts, 64).argmax(1).tolist()]
        out["members"][member] = {"accuracy": float(np.mean([p == t for p, t in zip(predicted, truth)])),
                                  **timed(run, texts)}
    return out


def merge(ort: dict, eager: dict) -> dict:
    """The issue's goals as ratios: TensorRT against eager and against CUDA (Pro, batch 1), accuracy against CPU."""
    out = {"ort": ort, "eager": eager, "goals": {}}
    for member, rows in ort.get("members", {}).items():
        trt, cuda, cpu = rows.get("tensorrt", {}), rows.get("cuda", {}), rows.get("cpu", {})
        torch_row = eager.get("members", {}).get(member, {})
        goal = {"tensorrt_engaged": trt.get("nodes_by_provider", {}).get(TENSORRT, 0) > 0}
        if "p50_ms_b1" in trt and "p50_ms_b1" in torch_row:
            goal["tensorrt_vs_eager_b1"] = torch_row["p50_ms_b1"] / trt["p50_ms_b1"]
            goal["tensorrt_vs_eager_b64"] = trt["texts_per_s_b64"] / torch_row["texts_per_s_b64"]
        if "p50_ms_b1" in trt and "p50_ms_b1" in cuda:
            goal["tensorrt_vs_cuda_b1"] = cuda["p50_ms_b1"] / trt["p50_ms_b1"]
        if "accuracy" in trt and "accuracy" in cpu:
            goal["accuracy_points_vs_cpu_file"] = 100 * (trt["accuracy"] - cpu["accuracy"])
        out["goals"][member] = goal
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("ort", "eager", "merge"), required=True)
    ap.add_argument("--state", type=Path, default=ROOT / ".yanjin-gpu-check")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    parts = RESULTS / "gpu_check.parts"
    parts.mkdir(exist_ok=True)
    if args.part == "merge":
        read = {p: json.loads((parts / f"{p}.json").read_text()) if (parts / f"{p}.json").is_file() else {}
                for p in ("ort", "eager")}
        result = merge(read["ort"], read["eager"])
        (RESULTS / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
        if os.environ.get("OUT"):
            Path(os.environ["OUT"], "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["goals"], indent=2))
        return
    result = ort_part(args.state, args.data) if args.part == "ort" else eager_part(args.state, args.data)
    (parts / f"{args.part}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
