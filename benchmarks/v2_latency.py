"""V2 (sliding-window attention) vs V1 (dense) forward latency and peak memory on CPU.

Both models hold the same pretrained MiniLM weights with positions extended to 4096 (V1 alone
stops at 512), so the only difference is the attention. Each (variant, length, batch) point runs
in a fresh subprocess so peak RSS is its own; V1 and V2 alternate at every point, in one run.
Also measures one attention layer alone, windowed path forced, to locate the dense/windowed
crossover that sets `dense_below`.

    python benchmarks/v2_latency.py [--lengths 128 512 1024 2048 4096] [--batches 1 8]
Writes benchmarks/results/v2_latency.json and merges the speedups into family_v2_pro.json.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def build(variant: str, radius: int):
    from yanjin.models.family import ModelSpec, build_classifier
    from yanjin.models.pretrained import load_pretrained_encoder

    # V2 as shipped: dense at or below ModelSpec.dense_below tokens, windowed above
    spec = ModelSpec(variant=variant, max_positions=4096, max_length=4096, attention_radius=radius)
    model = build_classifier(spec, 77)
    load_pretrained_encoder(model.encoder)
    return model.eval()


def worker(variant: str, length: int, batch: int, radius: int, repeats: int) -> dict:
    import torch

    torch.manual_seed(0)
    model = build(variant, radius)
    ids = torch.randint(1000, 30000, (batch, length))
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    times = []
    with torch.inference_mode():
        model(ids, mask)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(ids, mask)
            times.append(time.perf_counter() - start)
    return {"ms": 1000 * statistics.median(times), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def attention_crossover(radius: int, lengths: list[int], repeats: int = 7) -> dict:
    """One attention layer alone, dense vs windowed, batch 1."""
    import torch

    from yanjin.models.attention import DenseAttention, SlidingWindowAttention

    dense = DenseAttention(384, 12, 0.0).eval()
    sparse = SlidingWindowAttention(384, 12, 0.0, radius=radius, dense_below=0).eval()
    sparse.load_state_dict(dense.state_dict())
    out = {}
    with torch.inference_mode():
        for n in lengths:
            x, m = torch.randn(1, n, 384), torch.ones(1, n, dtype=torch.bool)
            timings = {}
            for name, layer in (("dense", dense), ("windowed", sparse)):
                layer(x, m)
                ts = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    layer(x, m)
                    ts.append(time.perf_counter() - start)
                timings[name] = 1000 * statistics.median(ts)
            out[str(n)] = timings | {"speedup": timings["dense"] / timings["windowed"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024, 2048, 4096])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--radius", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--worker", nargs=3, metavar=("VARIANT", "LENGTH", "BATCH"))
    args = ap.parse_args()
    if args.worker:
        v, n, b = args.worker
        print(json.dumps(worker(v, int(n), int(b), args.radius, args.repeats)))
        return

    import torch

    points = []
    for batch in args.batches:
        for n in args.lengths:
            repeats = args.repeats if n * batch <= 8192 else 2  # the long dense points take seconds each
            row = {"length": n, "batch": batch}
            for variant in ("v1", "v2"):
                out = subprocess.run([sys.executable, __file__, "--worker", variant, str(n), str(batch),
                                      "--radius", str(args.radius), "--repeats", str(repeats)],
                                     capture_output=True, text=True, check=True)
                row[variant] = json.loads(out.stdout.strip().splitlines()[-1])
            row["speedup"] = row["v1"]["ms"] / row["v2"]["ms"]
            row["memory_ratio"] = row["v2"]["peak_rss_mb"] / row["v1"]["peak_rss_mb"]
            print(f"batch {batch} length {n:5d}: V1 {row['v1']['ms']:9.1f} ms  V2 {row['v2']['ms']:9.1f} ms  "
                  f"speedup {row['speedup']:.2f}x  peak RSS {row['v1']['peak_rss_mb']:.0f} / {row['v2']['peak_rss_mb']:.0f} MB",
                  flush=True)
            points.append(row)
    crossover = attention_crossover(args.radius, [64, 128, 192, 256, 384, 512, 1024])
    result = {"radius": args.radius, "threads": torch.get_num_threads(), "points": points,
              "attention_layer_crossover": crossover}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "v2_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    family = RESULTS / "family_v2_pro.json"
    merged = json.loads(family.read_text()) if family.is_file() else {}
    for row in points:
        if row["batch"] == 1:
            merged[f"v2_speedup_{row['length']}"] = row["speedup"]
    family.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    print(json.dumps(crossover, indent=2))


if __name__ == "__main__":
    main()
