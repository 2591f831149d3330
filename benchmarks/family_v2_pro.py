"""V2 and Pro against V1, measured here; figures merged into benchmarks/results/family_v2_pro.json.

Parts (run all by default, or pick with --parts):
  pipeline  full profile through the real pipeline for --variant v2 and pro (registers them)
  fewshot   10 labelled examples per intent, 3 seeds: V1 vs Pro (same data, same seed, same recipe)
  latency   benchmarks/v2_latency.py (V2 vs V1 forward time and memory, 128..4096 tokens)

    python benchmarks/family_v2_pro.py [--parts fewshot pipeline latency]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
FAMILY = RESULTS / "family_v2_pro.json"


def merge(figures: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    current = json.loads(FAMILY.read_text()) if FAMILY.is_file() else {}
    FAMILY.write_text(json.dumps(current | figures, indent=2, sort_keys=True) + "\n")


def run_pipeline(variant: str, data: Path, state_dir: Path) -> dict:
    out = RESULTS / f"{variant}.pipeline.tmp"
    subprocess.run([sys.executable, "-m", "yanjin.cli", "pipeline", "run", "--profile", "full", "--variant", variant,
                    "--data", str(data), "--state-dir", str(state_dir), "--metrics-out", str(out)], check=True)
    figures = json.loads(out.read_text())
    out.unlink()
    return figures


def fewshot(data: Path, state_dir: Path, shots: int, seeds: list[int]) -> dict:
    import numpy as np
    import pandas as pd

    from yanjin.components.adapt import adapt_encoder, read_corpus
    from yanjin.components.data import LABEL, TEXT, read_label_set, read_table
    from yanjin.components.train import TrainParams, predict_logits, train_classifier
    from yanjin.config import load_config
    from yanjin.models.family import ModelSpec, base_tokenizer_file, load_checkpoint
    from yanjin.models.tokenizer import TextTokenizer

    cfg = load_config("full")
    train = read_table(data / "train.csv", "text", "category")
    test = read_table(data / "test.csv", "text", "category")
    labels = read_label_set(data / "categories.json", train)
    encoder = state_dir / "fewshot" / "pro_encoder.safetensors"
    encoder.parent.mkdir(parents=True, exist_ok=True)
    adapt_info = {}
    if not encoder.is_file():  # unlabeled pool: banking77 train texts + NLU++ banking, never test
        corpus = read_corpus([data / "train.csv", data.parent / "nlupp" / "banking"], "text")
        r = adapt_encoder(corpus, test[TEXT].tolist(), ModelSpec(), cfg.adapt, encoder)
        adapt_info = {"adapt_texts": r.n_texts, "adapt_seconds": r.seconds, "adapt_final_loss": r.final_loss}
    params = TrainParams(epochs=8, batch_size=16, learning_rate=2e-4, warmup_ratio=0.1)
    tokenizer = TextTokenizer(base_tokenizer_file(), 64)
    runs = {"v1": [], "pro": []}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        picked, held = [], []
        for _, group in train.groupby(LABEL):
            idx = rng.permutation(len(group))
            picked.append(group.iloc[idx[:shots]])
            held.append(group.iloc[idx[shots : shots + 3]])  # 3 per intent to pick the best epoch
        tr, va = pd.concat(picked), pd.concat(held)
        for variant in ("v1", "pro"):
            out = state_dir / "fewshot" / f"{variant}-seed{seed}"
            start = time.perf_counter()
            train_classifier(tr, va, labels, ModelSpec(variant=variant), TrainParams(**(params.__dict__ | {"seed": seed})),
                             out, progress=False, encoder_weights=encoder if variant == "pro" else None)
            model, _, _ = load_checkpoint(out)
            pred = predict_logits(model, tokenizer, test[TEXT].tolist(), 256).argmax(1)
            acc = float(np.mean([labels[i] == y for i, y in zip(pred, test[LABEL])]))
            runs[variant].append(acc)
            print(f"{shots}-shot seed {seed} {variant}: test accuracy {acc:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    figures = {"fewshot_shots": shots, "fewshot_seeds": seeds, "fewshot_recipe": params.__dict__, **adapt_info}
    for variant, accs in runs.items():
        figures[f"{variant}_{shots}shot_accuracy_mean"] = statistics.mean(accs)
        figures[f"{variant}_{shots}shot_accuracy_std"] = statistics.stdev(accs) if len(accs) > 1 else 0.0
        figures[f"{variant}_{shots}shot_accuracies"] = accs
    figures[f"pro_minus_v1_{shots}shot"] = figures[f"pro_{shots}shot_accuracy_mean"] - figures[f"v1_{shots}shot_accuracy_mean"]
    return figures


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", nargs="+", default=["fewshot", "latency", "pipeline"])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    ap.add_argument("--state-dir", type=Path, default=ROOT / ".yanjin-bench")
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = ap.parse_args()
    if "fewshot" in args.parts:
        merge(fewshot(args.data, args.state_dir, args.shots, args.seeds))
    if "latency" in args.parts:
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "v2_latency.py")], check=True)
    if "pipeline" in args.parts:
        v1 = json.loads((RESULTS / "v1.json").read_text())  # the V1 full-profile run (benchmarks/v1.py)
        figures = {"v1_accuracy": v1["accuracy"]}
        for variant in ("pro", "v2"):
            res = run_pipeline(variant, args.data, args.state_dir)
            figures |= {f"{variant}_accuracy": res["accuracy"], f"{variant}_macro_f1": res["macro_f1"],
                        f"{variant}_ece": res["ece"], f"{variant}_latency_ms_p50_b1": res["latency_ms_p50_b1"]}
            merge(figures)
    print(FAMILY.read_text())


if __name__ == "__main__":
    main()
