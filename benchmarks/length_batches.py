"""Batches of similar length: what they save in `make demo`, measured side by side in one process.

A batch pads to its longest text, and banking queries are short with a long tail (median 13 tokens,
95th percentile 37, cut at 64), so random batches hold ~3x the real tokens.

Parts:
  inference  the full banking77 test set (3,080 texts) through V1's demo checkpoint, eager and as its ONNX
             file, and through the frozen MPNet encoder (the demo's Pro), in the old order (consecutive
             batches) and in batches of similar length (what every bulk prediction now does):
             seconds of each and the largest difference between the two outputs
  train      the demo's V1 fine-tune (its split, 3 epochs) with `train.group_by_length` off and on, for each
             --seeds: training seconds and test accuracy (does grouping cost accuracy?)

    python benchmarks/length_batches.py --parts inference train --seeds 13 14
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from demo_pro import demo_splits, test_accuracy

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "length_batches.json"


def consecutive(run, tokenize, texts: list[str], batch_size: int) -> np.ndarray:
    """The old order: batches of consecutive texts, as given."""
    return np.concatenate([run(*tokenize(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)])


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def side_by_side(name: str, old, new) -> dict:
    a, old_s = timed(old)
    b, new_s = timed(new)
    row = {"old_seconds": round(old_s, 2), "grouped_seconds": round(new_s, 2), "speedup": round(old_s / new_s, 2),
           "max_abs_diff": float(np.abs(a - b).max()), "same_argmax": float((a.argmax(1) == b.argmax(1)).mean())}
    print(f"{name:<14} old {old_s:7.1f} s   grouped {new_s:7.1f} s   x{row['speedup']:.2f}   "
          f"max |diff| {row['max_abs_diff']:.1e}   same argmax {row['same_argmax']:.4f}", flush=True)
    return row


def inference(cfg, tr, va, test, labels, state: Path) -> dict:
    import torch

    from yanjin.components.data import TEXT
    from yanjin.components.export import export_onnx
    from yanjin.components.train import pooled_embeddings, predict_logits, train_classifier
    from yanjin.models.family import ModelSpec, pretrained_classifier
    from yanjin.models.inference import OnnxClassifier
    from yanjin.models.tokenizer import TextTokenizer

    from demo_pro import load

    texts = test[TEXT].tolist()
    ckpt = state / "v1-seed13-off"
    if not (ckpt / "model.safetensors").is_file():
        train_classifier(tr, va, labels, cfg.model, cfg.train, ckpt, progress=False)
    model, tok = load(ckpt)
    model.eval()
    eager = lambda ids, mask: model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()  # noqa: E731
    rows = {}
    with torch.no_grad():
        rows["v1_eager"] = side_by_side("V1 eager", lambda: consecutive(eager, tok, texts, 128),
                                        lambda: predict_logits(model, tok, texts, 128))
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(ckpt, tmp)
        ort = OnnxClassifier.from_dir(tmp)
        rows["v1_onnx"] = side_by_side("V1 ONNX", lambda: consecutive(ort.logits, ort.tokenizer, texts, 64),
                                       lambda: ort.text_logits(texts, 64))
    pro, spec, tokenizer_file = pretrained_classifier(ModelSpec(base="mpnet", n_layers=12, max_length=64), len(labels))
    pro.eval()
    ptok = TextTokenizer(tokenizer_file, spec.max_length)
    embed = lambda ids, mask: pro.embed(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()  # noqa: E731
    with torch.no_grad():
        rows["mpnet_embed"] = side_by_side("MPNet embed", lambda: consecutive(embed, ptok, texts, 128),
                                           lambda: pooled_embeddings(pro, ptok, texts, 128))
    return rows


def train(cfg, tr, va, test, labels, state: Path, seeds: list[int], rows: dict) -> dict:
    """`rows`: the runs recorded before (kept; a seed already there is not run again)."""
    from yanjin.components.train import train_classifier

    for seed in seeds:
        for grouped in (False, True):
            name = f"v1-seed{seed}-{'on' if grouped else 'off'}"
            if name in rows:
                continue
            params = replace(cfg.train, seed=seed, group_by_length=grouped)
            result, seconds = timed(lambda: train_classifier(tr, va, labels, cfg.model, params, state / name,
                                                             progress=False))
            rows[name] = {"seed": seed, "group_by_length": grouped, "train_seconds": round(seconds, 1),
                          "best_val_accuracy": result.best_val_accuracy,
                          "test_accuracy": test_accuracy(state / name, test, labels)}
            print(f"{name:<16} {seconds:6.1f} s   val {result.best_val_accuracy:.4f}   "
                  f"test {rows[name]['test_accuracy']:.4f}", flush=True)
    off = [r for r in rows.values() if not r["group_by_length"]]
    on = [r for r in rows.values() if r["group_by_length"]]
    summary = {"seeds": sorted({r["seed"] for r in rows.values()}),
               "speedup": round(sum(r["train_seconds"] for r in off) / sum(r["train_seconds"] for r in on), 2),
               "test_accuracy_off_mean": float(np.mean([r["test_accuracy"] for r in off])),
               "test_accuracy_on_mean": float(np.mean([r["test_accuracy"] for r in on]))}
    print(json.dumps(summary))
    return {"runs": rows, "summary": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["inference", "train"], choices=["inference", "train"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[13])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    ap.add_argument("--state-dir", type=Path, default=ROOT / ".yanjin-bench" / "length_batches")
    args = ap.parse_args()
    import torch

    cfg, tr, va, test, labels, _ = demo_splits(args.data)
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    results |= {"cores": torch.get_num_threads(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if "train" in args.parts:  # first: the inference part reuses seed 13's checkpoint without grouping
        results["train"] = train(cfg, tr, va, test, labels, args.state_dir, args.seeds,
                                 results.get("train", {}).get("runs", {}))
    if "inference" in args.parts:
        results["inference"] = inference(cfg, tr, va, test, labels, args.state_dir)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
