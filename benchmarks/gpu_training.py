"""Training on the GPU, side by side: fine-tuning, domain adaptation and distillation at fp32, in
mixed precision (bf16 autocast) and with TF32 matrix products, on one banking77 slice. What it
measured on an H200 decided compute.precision=auto (yanjin/components/device.py).

For a session with a GPU (benchmarks/gpu_check.sh runs it first); needs a CUDA build of torch and
the MiniLM package in the same environment. Writes benchmarks/results/gpu_training.json.

    python benchmarks/gpu_training.py [--data DIR] [--per-class 40] [--placements cuda:fp32,cuda:bf16,cuda:fp32:tf32]
                                      [--batch-sizes 32,256] [--steps fine_tune,adapt,distil] [--set KEY=VALUE ...]

A placement is device:precision, or device:fp32:tf32 for fp32 weights and activations with TF32
matrix products (torch.set_float32_matmul_precision("high")), which autocast never uses. Every
placement runs at every batch size; the ratios compare each run with the first at its batch size.
`--set` overrides the demo profile (e.g. model.base=<folder> model.base_sha256=... model.n_layers=0 to
time another base encoder); `--steps` keeps only the steps named. `--profile N` adds, per placement,
where a 1-epoch fine-tune on N rows spends its time (torch.profiler): GPU busy against wall time,
kernel launches, the top operators.

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


LAUNCHES = {"cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx"}


def use_tf32(tf32: bool) -> None:
    """A process-wide switch: set before every run, so one run's choice never leaks into the next."""
    import torch

    torch.set_float32_matmul_precision("high" if tf32 else "highest")


def label(place, tf32: bool) -> str:
    return f"{place}{' +tf32' if tf32 else ''}"


def profile_fine_tune(tr, va, labels, cfg, places, tmp: Path) -> dict:
    """Where a fine-tune's time goes, per placement: wall time, time the GPU was busy, kernels launched, and
    the operators that took most GPU and CPU time. A GPU busy for a small part of the wall time is waiting
    for the CPU (Python, launches, tokenising), and no precision changes that."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from yanjin.components.train import train_classifier

    out = {}
    for place, tf32 in places:
        use_tf32(tf32)
        key = label(place, tf32)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            start = time.perf_counter()
            train_classifier(tr, va, labels, cfg.model, replace(cfg.train, epochs=1), tmp / "profile", progress=False,
                             place=place)
            wall = time.perf_counter() - start
        events = prof.key_averages()
        # the GPU's own events (kernels, copies): an operator's device time repeats its kernels' (as torch's table)
        on_gpu = [e for e in events if e.device_type != DeviceType.CPU and not e.is_user_annotation]

        def top(rows, attr: str) -> list[dict]:
            return [{"op": e.key[:80], "ms": round(getattr(e, attr) / 1000, 2), "calls": e.count}
                    for e in sorted(rows, key=lambda e: -getattr(e, attr))[:12]]

        out[key] = {"rows": len(tr), "wall_ms": round(wall * 1000, 1),
                    "gpu_busy_ms": round(sum(e.self_device_time_total for e in on_gpu) / 1000, 1),
                    "kernel_launches": sum(e.count for e in events if e.key in LAUNCHES),
                    "top_gpu": top(on_gpu, "self_device_time_total"), "top_cpu": top(events, "self_cpu_time_total")}
        print(key, "profile", json.dumps({k: v for k, v in out[key].items() if not k.startswith("top")}), flush=True)
        print(events.table(sort_by="self_device_time_total", row_limit=12), flush=True)
    return out


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
    ap.add_argument("--placements", default="cuda:fp32,cuda:bf16,cuda:fp32:tf32", help="device:precision[:tf32], compared in order")
    ap.add_argument("--batch-sizes", default="", help="train and distil batch sizes to compare (default: the demo's)")
    ap.add_argument("--steps", default="fine_tune,adapt,distil", help="the steps to time (distil needs fine_tune)")
    ap.add_argument("--set", nargs="*", default=[], dest="sets", help="overrides of the demo profile")
    ap.add_argument("--profile", type=int, default=0, help="also profile a 1-epoch fine-tune on this many rows per placement")
    ap.add_argument("--name", default="", help="the results file's name (default: gpu_training.json, or *_cpu_dry_run.json)")
    args = ap.parse_args()

    specs = [p.split(":") for p in args.placements.split(",")]
    places = [(choose(ComputeParams(*s[:2])), s[2:] == ["tf32"]) for s in specs]  # fails clearly without CUDA
    cfg = load_config("demo", args.sets)
    steps = set(args.steps.split(","))
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else [cfg.train.batch_size]
    data = Path(args.data)
    train = read_table(data / "train.csv", "text", "category")
    labels = read_label_set(data / "categories.json", train)
    train, labels = subsample(train, labels, DataParams(max_per_class=args.per_class))
    tr, va = split_train_val(train, DataParams(val_fraction=0.2))
    result: dict = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
                    "n_train": len(tr), "n_val": len(va), "n_labels": len(labels), "sets": args.sets, "runs": {}, "ratios": {}}
    with tempfile.TemporaryDirectory() as tmp:
        # an untimed short fine-tune per placement first: CUDA's context, allocator and each precision's kernels
        # (loaded lazily, on first use) warm up outside every timing, so no placement pays for being first
        for place, tf32 in places:
            use_tf32(tf32)
            train_classifier(tr.head(256), va.head(64), labels, cfg.model, replace(cfg.train, epochs=1),
                             Path(tmp, "warm-up"), progress=False, place=place)
        if args.profile:
            result["profiles"] = profile_fine_tune(tr.head(args.profile), va.head(64), labels, cfg, places, Path(tmp))
        for batch in batch_sizes:
            train_params = replace(cfg.train, epochs=2, batch_size=batch)
            first: dict | None = None   # the first placement's run at this batch size: the ratios' reference
            for place, tf32 in places:
                use_tf32(tf32)
                key = f"{label(place, tf32)}, batch {batch}"
                out = Path(tmp, key.replace(", ", "-").replace(" ", ""))
                run: dict = {}
                if "fine_tune" in steps:
                    start = time.perf_counter()
                    ft = train_classifier(tr, va, labels, cfg.model, train_params, out / "v1", progress=False, place=place)
                    run |= {"fine_tune_seconds": round(time.perf_counter() - start, 2), "fine_tune_val_accuracy": ft.best_val_accuracy}
                if "adapt" in steps:
                    start = time.perf_counter()
                    ad = adapt_encoder(tr["text"].tolist() * 2, [], cfg.model, replace(cfg.adapt, max_texts=1024),
                                       out / "encoder.safetensors", progress=False, place=place)
                    run |= {"adapt_seconds": round(time.perf_counter() - start, 2), "adapt_final_loss": ad.final_loss}
                if "distil" in steps:
                    export_onnx(out / "v1", out / "bundle")
                    start = time.perf_counter()
                    lite = distill_classifier(tr, va, labels, out / "v1", out / "bundle", tr["text"].tolist(),
                                              replace(cfg.compress, epochs=1, recovery_epochs=1, batch_size=batch), train_params,
                                              out / "lite", progress=False, student=replace(cfg.model, variant="lite"), place=place)
                    run |= {"distil_seconds": round(time.perf_counter() - start, 2), "lite_val_accuracy": lite.best_val_accuracy}
                result["runs"][key] = run
                print(key, json.dumps(result["runs"][key]), flush=True)
                if first is None:
                    first = run
                else:  # against the first placement at this batch size, measured in this run
                    result["ratios"][key] = {
                        **{f"{s}_speedup": first[f"{s}_seconds"] / run[f"{s}_seconds"] for s in ("fine_tune", "adapt", "distil")
                           if f"{s}_seconds" in run},
                        **{f"{m}_delta": run[m] - first[m] for m in ("fine_tune_val_accuracy", "lite_val_accuracy") if m in run}}
    print(json.dumps(result["ratios"], indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = args.name or ("gpu_training.json" if any(p.device != "cpu" for p, _ in places) else "gpu_training_cpu_dry_run.json")
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
