"""Can a Pro be visibly better than V1 inside `make demo` (77 intents x 40 examples, 25 minutes on 2 cores)?

Every arm trains on the demo profile's own split (`subsample` + `split_train_val`, seed 13) with the
demo's fine-tuning settings, and is measured on the full banking77 test set beside V1, which is the
demo's V1 exactly (the first arm). Results merge into benchmarks/results/demo_pro.json.

Parts:
  cost       one fine-tuning step and one forward pass on a batch of 32 demo texts, MiniLM then MPNet
             in one process: what an MPNet Pro would add to the demo, as a ratio to V1's fine-tune
  selftrain  self-training on the unlabeled rest of train.csv (the 6,928 texts outside the demo's
             sample; never test text): V1 labels them, the --per-class most confident per intent are
             kept, and a fresh MiniLM is fine-tuned on labelled + pseudo-labelled rows
  nlupp      intermediate training on NLU++ banking's own labels (48 intents, multi-label; its
             test-set texts removed), then the demo's fine-tune from that encoder
  probe      the demo's Pro as `make demo` builds it (all-mpnet-base-v2, frozen, a head fitted by logistic
             regression: `train.probe`), and the same probe on V1's MiniLM (the base's share of the gain)

A checkpoint already in --state-dir is measured, not retrained (runs of a quarter of an hour add up
across sessions).

    python benchmarks/demo_pro.py --parts cost selftrain nlupp probe
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "demo_pro.json"


def demo_splits(data: Path):
    from yanjin.components.data import TEXT, read_label_set, read_table, split_train_val, subsample
    from yanjin.config import load_config

    cfg = load_config("demo")
    train = read_table(data / "train.csv", "text", "category")
    test = read_table(data / "test.csv", "text", "category")
    sample, labels = subsample(train, read_label_set(data / "categories.json", train), cfg.data)
    tr, va = split_train_val(sample, cfg.data)
    rest = train[~train[TEXT].isin(set(sample[TEXT]))].drop_duplicates(TEXT)  # the demo never sees these labels
    return cfg, tr, va, test, labels, rest


def load(ckpt: Path):
    from yanjin.models.family import load_checkpoint
    from yanjin.models.tokenizer import TextTokenizer

    model, spec, _ = load_checkpoint(ckpt)
    return model, TextTokenizer(ckpt / "tokenizer.json", spec.max_length)


def test_accuracy(ckpt: Path, test, labels) -> float:
    import numpy as np

    from yanjin.components.data import LABEL, TEXT
    from yanjin.components.train import predict_logits

    pred = predict_logits(*load(ckpt), test[TEXT].tolist(), 128).argmax(1)
    return float(np.mean(pred == np.array([labels.index(y) for y in test[LABEL]])))


def trained(ckpt: Path, train_fn) -> float:
    """Train into `ckpt` unless a finished checkpoint is there; the seconds it took (0: measured only)."""
    if (ckpt / "model.safetensors").is_file():
        return 0.0
    start = time.perf_counter()
    train_fn()
    return time.perf_counter() - start


def v1(cfg, tr, va, test, labels, state: Path) -> dict:
    from yanjin.components.train import train_classifier

    ckpt = state / "v1"
    seconds = trained(ckpt, lambda: train_classifier(tr, va, labels, cfg.model, cfg.train, ckpt, progress=False))
    return {"accuracy": test_accuracy(ckpt, test, labels), "train_seconds": seconds or None}


def selftrain(cfg, tr, va, test, labels, rest, state: Path, per_class: int, epochs: int) -> dict:
    import numpy as np
    import pandas as pd
    import torch

    from yanjin.components.data import LABEL, TEXT
    from yanjin.components.train import predict_logits, train_classifier

    model, tokenizer = load(state / "v1")
    pool = rest[TEXT].tolist()
    p = torch.softmax(torch.as_tensor(predict_logits(model, tokenizer, pool, 128)), 1).numpy()
    pred, conf = p.argmax(1), p.max(1)
    keep = np.concatenate([np.flatnonzero(pred == c)[np.argsort(-conf[pred == c])][:per_class]
                           for c in range(len(labels))])
    truth = rest[LABEL].map(labels.index).to_numpy()  # only to report how right the pseudo-labels are
    pseudo = pd.DataFrame({TEXT: [pool[i] for i in keep], LABEL: [labels[pred[i]] for i in keep]})
    ckpt = state / f"selftrain-{per_class}-{epochs}"
    seconds = trained(ckpt, lambda: train_classifier(pd.concat([tr, pseudo], ignore_index=True), va, labels, cfg.model,
                                                     replace(cfg.train, epochs=epochs), ckpt, progress=False))
    return {"accuracy": test_accuracy(ckpt, test, labels), "pool": len(pool), "kept": len(keep),
            "pseudo_label_accuracy_pool": float(np.mean(pred == truth)),
            "pseudo_label_accuracy_kept": float(np.mean(pred[keep] == truth[keep])),
            "per_class": per_class, "epochs": epochs, "train_seconds": seconds or None}


def nlupp(cfg, tr, va, test, labels, data: Path, state: Path, epochs: int, learning_rate: float) -> dict:
    import torch

    from yanjin.components.adapt import clean_corpus
    from yanjin.components.data import TEXT
    from yanjin.components.train import param_groups, seed_everything, train_classifier, warmup_linear_decay
    from yanjin.models.family import pretrained_classifier
    from yanjin.models.pretrained import save_encoder_weights
    from yanjin.models.tokenizer import TextTokenizer

    rows = [r for f in sorted((data.parent / "nlupp" / "banking").glob("*.json")) for r in json.loads(f.read_text())]
    kept = set(clean_corpus([r["text"] for r in rows], test[TEXT].tolist())[0])
    rows = [r for r in rows if r["text"] in kept]
    intents = sorted({i for r in rows for i in r.get("intents", [])})
    y = torch.zeros(len(rows), len(intents))  # (N, intents): multi-label targets
    for k, r in enumerate(rows):
        y[k, [intents.index(i) for i in r.get("intents", [])]] = 1.0
    name = f"nlupp-{epochs}-{learning_rate:g}"
    encoder, ckpt = state / f"{name}.safetensors", state / name

    def intermediate() -> None:
        seed_everything(cfg.train.seed)
        model, spec, tokenizer_file = pretrained_classifier(cfg.model, len(intents))
        tokenizer = TextTokenizer(tokenizer_file, spec.max_length)
        texts, batch = [r["text"] for r in rows], cfg.train.batch_size
        steps = (len(texts) + batch - 1) // batch
        optimizer = torch.optim.AdamW(param_groups(model, cfg.train.weight_decay), lr=learning_rate)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear_decay(steps * epochs, int(0.1 * steps * epochs)))
        for epoch in range(epochs):
            model.train()
            order, total = torch.randperm(len(texts)), 0.0
            for s in range(steps):
                idx = order[s * batch:(s + 1) * batch]
                ids, mask = (torch.from_numpy(a) for a in tokenizer([texts[i] for i in idx]))
                loss = torch.nn.functional.binary_cross_entropy_with_logits(model(ids, mask), y[idx])
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                total += loss.item()
            print(f"{time.strftime('%H:%M:%S')} nlupp epoch {epoch + 1}: loss {total / steps:.4f}", flush=True)
        save_encoder_weights(model.encoder, encoder)
        train_classifier(tr, va, labels, replace(cfg.model, variant="pro"), cfg.train, ckpt, progress=False,
                         encoder_weights=encoder)

    seconds = trained(ckpt, intermediate)
    return {"accuracy": test_accuracy(ckpt, test, labels), "texts": len(rows), "intents": len(intents),
            "epochs": epochs, "learning_rate": learning_rate, "train_seconds": seconds or None}


def probe(cfg, tr, va, test, labels, state: Path) -> dict:
    """The demo's Pro (all-mpnet-base-v2 frozen, a fitted head: `recipes.pro` of the demo profile) and the probe
    alone on V1's MiniLM, so the gain splits into the base's and the probe's."""
    from dataclasses import replace

    from yanjin.components.train import train_classifier
    from yanjin.config import with_variant

    pro = with_variant(cfg, "pro")
    out = {}
    for name, c in (("minilm", replace(cfg, train=replace(cfg.train, probe=True))), ("mpnet", pro)):
        ckpt, record = state / f"probe-{name}", []
        seconds = trained(ckpt, lambda: record.extend(train_classifier(
            tr, va, labels, c.model, c.train, ckpt, progress=False, recipe_start=c.recipe.start).history))
        out[name] = {"accuracy": test_accuracy(ckpt, test, labels), "train_seconds": seconds or None,
                     "base": c.model.base} | (record[0] if record else {})
    return out


def cost(cfg, tr) -> dict:
    """Seconds per fine-tuning step and per forward pass (batch of 32 demo texts), MiniLM then MPNet."""
    import statistics

    import torch

    from yanjin.components.train import param_groups
    from yanjin.models.family import pretrained_classifier
    from yanjin.models.tokenizer import TextTokenizer

    texts = tr["text"].sample(32 * 8, random_state=0).tolist()
    out = {}
    for base, fields in (("minilm", {}), ("mpnet", {"base": "mpnet", "n_layers": 12})):
        torch.manual_seed(0)
        model, spec, tokenizer_file = pretrained_classifier(replace(cfg.model, **fields), 77)
        tokenizer = TextTokenizer(tokenizer_file, spec.max_length)
        optimizer = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-5)
        batches = [[torch.from_numpy(a) for a in tokenizer(texts[i:i + 32])] for i in range(0, len(texts), 32)]
        step, forward = [], []
        model.train()
        for ids, mask in batches:
            start = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(ids, mask), torch.zeros(len(ids), dtype=torch.long))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            step.append(time.perf_counter() - start)
        model.eval()
        with torch.no_grad():
            for ids, mask in batches:
                start = time.perf_counter()
                model(ids, mask)
                forward.append(time.perf_counter() - start)
        out[base] = {"step_seconds_median": statistics.median(step[1:]), "forward_seconds_median": statistics.median(forward[1:])}
    out["mpnet_step_ratio"] = out["mpnet"]["step_seconds_median"] / out["minilm"]["step_seconds_median"]
    out["mpnet_forward_ratio"] = out["mpnet"]["forward_seconds_median"] / out["minilm"]["forward_seconds_median"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", nargs="+", default=["cost", "selftrain", "nlupp"])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    ap.add_argument("--state-dir", type=Path, default=ROOT / ".yanjin-bench" / "demo_pro")
    ap.add_argument("--per-class", type=int, default=60, help="selftrain: pseudo-labelled texts kept per intent")
    ap.add_argument("--epochs", type=int, default=3, help="selftrain: fine-tuning epochs; nlupp: intermediate epochs")
    ap.add_argument("--learning-rate", type=float, default=5e-5, help="nlupp: intermediate training's peak rate")
    args = ap.parse_args()
    cfg, tr, va, test, labels, rest = demo_splits(args.data)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    result = json.loads(OUT.read_text()) if OUT.is_file() else {}
    if set(args.parts) - {"cost"}:  # every arm is measured beside the demo's V1
        result["v1"] = v1(cfg, tr, va, test, labels, args.state_dir)
    if "cost" in args.parts:
        result["cost"] = cost(cfg, tr) | {"batch": 32, "demo_train_rows": len(tr), "demo_epochs": cfg.train.epochs}
    if "selftrain" in args.parts:
        result.setdefault("selftrain", {})[f"{args.per_class}-{args.epochs}"] = selftrain(
            cfg, tr, va, test, labels, rest, args.state_dir, args.per_class, args.epochs)
    if "probe" in args.parts:
        result["probe"] = probe(cfg, tr, va, test, labels, args.state_dir)
    if "nlupp" in args.parts:
        result.setdefault("nlupp", {})[f"{args.epochs}-{args.learning_rate:g}"] = nlupp(
            cfg, tr, va, test, labels, args.data, args.state_dir, args.epochs, args.learning_rate)
    result["n_test"] = len(test)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
