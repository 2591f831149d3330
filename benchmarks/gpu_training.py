"""Training on the GPU, side by side: fine-tuning, domain adaptation and distillation at fp32 and in
mixed precision (compute.precision=auto: bf16, or fp16 with loss scaling), on one banking77 slice.

For a session with a GPU (benchmarks/gpu_check.sh runs it first); needs a CUDA build of torch and
the MiniLM package in the same environment. Writes benchmarks/results/gpu_training.json.

    python benchmarks/gpu_training.py [--data DIR] [--per-class 40] [--placements cuda:fp32,auto:auto]

`--placements cpu:fp32,cpu:bf16 --per-class 12` runs the same code on a CPU (a dry run of the script).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    import torch

    from yanjin.components.adapt import adapt_encoder
    from yanjin.components.data import LABEL, DataParams, read_label_set, read_table, split_train_val, subsample
    from yanjin.components.device import choose
    from yanjin.components.distill import distill_classifier
    from yanjin.components.export import export_onnx
    from yanjin.components.train import train_classifier
    from yanjin.config import ComputeParams, load_config

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "banking77"))
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--placements", default="cuda:fp32,auto:auto", help="device:precision pairs, compared in order")
    args = ap.parse_args()

    places = [choose(ComputeParams(*p.split(":"))) for p in args.placements.split(",")]  # fails clearly without CUDA
    cfg = load_config("demo")
    data = Path(args.data)
    train = read_table(data / "train.csv", "text", "category")
    labels = read_label_set(data / "categories.json", train)
    train, labels = subsample(train, labels, DataParams(max_per_class=args.per_class))
    tr, va = split_train_val(train, DataParams(val_fraction=0.2))
    result: dict = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
                    "n_train": len(tr), "n_val": len(va), "n_labels": len(labels), "runs": {}}
    train_params = replace(cfg.train, epochs=2)
    with tempfile.TemporaryDirectory() as tmp:
        for place in places:
            key, out = str(place), Path(tmp, str(place).replace(", ", "-"))
            start = time.perf_counter()
            ft = train_classifier(tr, va, labels, cfg.model, train_params, out / "v1", progress=False, place=place)
            fine_tune_s = time.perf_counter() - start
            start = time.perf_counter()
            ad = adapt_encoder(tr["text"].tolist() * 2, [], cfg.model, replace(cfg.adapt, max_texts=1024),
                               out / "encoder.safetensors", progress=False, place=place)
            adapt_s = time.perf_counter() - start
            export_onnx(out / "v1", out / "bundle")
            start = time.perf_counter()
            lite = distill_classifier(tr, va, labels, out / "v1", out / "bundle", tr["text"].tolist(),
                                      replace(cfg.compress, epochs=1, recovery_epochs=1), train_params, out / "lite",
                                      progress=False, student=replace(cfg.model, variant="lite"), place=place)
            distil_s = time.perf_counter() - start
            result["runs"][key] = {"fine_tune_seconds": round(fine_tune_s, 2), "fine_tune_val_accuracy": ft.best_val_accuracy,
                                   "adapt_seconds": round(adapt_s, 2), "adapt_final_loss": ad.final_loss,
                                   "distil_seconds": round(distil_s, 2), "lite_val_accuracy": lite.best_val_accuracy}
            print(key, json.dumps(result["runs"][key]))
    first, last = (result["runs"][str(p)] for p in (places[0], places[-1]))
    result["ratios"] = {  # the last placement against the first, measured in this run
        "fine_tune_speedup": first["fine_tune_seconds"] / last["fine_tune_seconds"],
        "adapt_speedup": first["adapt_seconds"] / last["adapt_seconds"],
        "distil_speedup": first["distil_seconds"] / last["distil_seconds"],
        "fine_tune_accuracy_delta": last["fine_tune_val_accuracy"] - first["fine_tune_val_accuracy"],
        "lite_accuracy_delta": last["lite_val_accuracy"] - first["lite_val_accuracy"],
    }
    print(json.dumps(result["ratios"], indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "gpu_training.json" if any(p.device != "cpu" for p in places) else "gpu_training_cpu_dry_run.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
