"""Pro's gain over V1, attributed: every arm on the same data and seeds, merged into
benchmarks/results/family_pro.json after each run (so runs add up across sessions; the file says
which arms and seeds ran).

An arm is a recipe: a base encoder (`model.base`) and the training that follows. Arms run the
pipeline's own functions (components/train.py, components/compare.py), not a copy of them.

Parts:
  fewshot  the standard fixed 10-shot split (`train_10.csv`, 770 texts); the best epoch is picked on
           3 more texts per intent from train.csv (the same 231 for every arm and seed); full test set
  full     the whole train.csv (8% held out for the epoch), full test set
  tfidf    TF-IDF + LinearSVC on the whole train.csv: the floor Lite must clear by 1.3 points
  lite     Lite distilled from the --lite-teacher arm's full-data checkpoint, measured beside V1 and Pro
           (--lite-set: overrides of the full profile, e.g. compress.kd_copies=3; each recipe kept in lite_runs;
           the lite_* keys: the best recipe distilled from the arm reported as Pro; another teacher is an ablation)
  report   nothing run: the summary keys, family_pro.md and the printed tables again from what is recorded

    python benchmarks/family_pro.py --parts fewshot --arms v1 mpnet --seeds 1 2 3
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
OUT = RESULTS / "family_pro.json"

# arm -> (ModelSpec fields, {part: TrainParams fields}); over the full profile's train section
FEWSHOT_TRAIN = {"epochs": 10, "batch_size": 16, "learning_rate": 2e-4, "warmup_ratio": 0.1}
MPNET = {"base": "mpnet", "n_layers": 12}
MPNET_FEWSHOT = FEWSHOT_TRAIN | {"learning_rate": 5e-5}  # MPNet's usual fine-tuning rate; every MPNet arm's 10-shot
ARMS = {
    "v1": ({}, {"fewshot": FEWSHOT_TRAIN, "full": {}}),           # the shipped V1 recipe
    "mpnet": (MPNET, {"fewshot": MPNET_FEWSHOT, "full": {"epochs": 2, "learning_rate": 5e-5}}),
    # the schedule: V1's 4 full-data epochs (2 left MPNet's best epoch at 1, below V1)
    "mpnet-4ep": (MPNET, {"fewshot": MPNET_FEWSHOT, "full": {"epochs": 4, "learning_rate": 5e-5}}),
    # longer still: at 4 epochs validation rose every epoch (0.9363 -> 0.9413 at epochs 3 -> 4)
    "mpnet-5ep": (MPNET, {"fewshot": MPNET_FEWSHOT, "full": {"epochs": 5, "learning_rate": 5e-5}}),
    # one more epoch (5 left Pro 0.0006 under 0.940 over 2 seeds); declared before it ran: once it has run on
    # seeds 1 and 2, PRO_ARMS["full"] becomes it whatever it scores (mpnet-5ep stays in the ablation)
    "mpnet-6ep": (MPNET, {"fewshot": MPNET_FEWSHOT, "full": {"epochs": 6, "learning_rate": 5e-5}}),
    # the rate alone: V1's MiniLM at MPNet's rate, so the base's share of the gain is not the rate's
    "minilm-5e-5": ({}, {"fewshot": MPNET_FEWSHOT, "full": {"epochs": 2, "learning_rate": 5e-5}}),
}
# the arm whose runs the pro_* keys report, by part: mpnet-5ep's 10-shot recipe is mpnet's, run under that name;
# full-data: the 6-epoch schedule, as declared before it ran, now that seeds 1 and 2 have
PRO_ARMS = {"fewshot": "mpnet", "full": "mpnet-6ep"}
# full-data arms reported as Pro before, the latest last: until a Lite distilled from PRO_ARMS["full"] has run,
# the lite_* keys are the latest of these arms' Lite, and lite_teacher_is_pro says so
EARLIER_PRO = ["mpnet-5ep"]


def ablation_table(r: dict) -> str:
    """One row per arm: what it changes against V1, then each part's mean, spread and seeds."""
    lines = ["| arm | base | fine-tuning (10-shot; full) | " + " | ".join(f"{p} mean (seeds)" for p in ("fewshot", "full")) + " |",
             "|---|---|---|---|---|"]
    for arm, (spec, train) in ARMS.items():
        cells = []
        for part in ("fewshot", "full"):
            runs = r.get("runs", {}).get(part, {}).get(arm, {})
            spread = f" ± {statistics.stdev(runs.values()):.4f}" if len(runs) > 1 else ""
            cells.append(f"{statistics.mean(runs.values()):.4f}{spread} ({', '.join(sorted(runs))})" if runs else "–")
        lines.append(f"| {arm} | {spec.get('base', 'minilm')} | {train['fewshot'] or 'V1 recipe'}; {train['full'] or 'full profile'} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def lite_table(r: dict) -> str:
    """One row per Lite recipe measured (teacher arm + its teacher-only text fields + other overrides)."""
    lines = ["| Lite recipe (teacher+fields):seed | accuracy | / teacher | file / Pro | latency / V1 eager | distil s | gate |",
             "|---|---|---|---|---|---|---|"]
    for name, f in r.get("lite_runs", {}).items():
        gate = f.get("lite_gate", {}).get("verdict", "not run")  # recorded since the gate was applied here
        lines.append(f"| {name} | {f['lite_accuracy']:.4f} | {f['lite_accuracy_ratio_vs_pro']:.3f} | "
                     f"{f['lite_size_ratio_vs_pro']:.4f} | {f['lite_latency_ratio_vs_v1_eager']:.3f} | "
                     f"{f['lite_distil_seconds']:.0f}{' (resumed: last part)' if f.get('lite_distil_resumed') else ''} | {gate} |")
    return "\n".join(lines) + "\n"


def merge(update) -> dict:
    RESULTS.mkdir(parents=True, exist_ok=True)
    current = json.loads(OUT.read_text()) if OUT.is_file() else {}
    update(current)
    summarise(current)
    OUT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    return current


def summarise(r: dict) -> None:
    """The keys the issue asks for, from the per-seed runs recorded so far."""
    def mean(part: str, arm: str):
        runs = r.get("runs", {}).get(part, {}).get(arm, {})
        return (statistics.mean(runs.values()), sorted(int(s) for s in runs)) if runs else (None, [])
    r["pro_arm"] = PRO_ARMS
    r["pro_is"] = (f"the Pro recipe measured here (model.base=mpnet; arms by part: {PRO_ARMS}); the full profile's "
                   f"recipes.pro ships the full-data arm (tests/code/test_config.py holds them together)")
    for part, key in (("full", "accuracy"), ("fewshot", "10shot")):
        v1, _ = mean(part, "v1")
        p, seeds = mean(part, PRO_ARMS[part])
        r[f"v1_{key}_mean"] = v1
        r[f"pro_{key}_mean"] = p
        r[f"pro_{key}_seeds"] = [r["runs"][part][PRO_ARMS[part]][str(s)] for s in seeds] if seeds else []
        r[f"pro_{key}_seed_ids"] = seeds
    r["ablation"] = {f"{part}:{arm}": statistics.mean(runs.values())
                     for part, arms in r.get("runs", {}).items() for arm, runs in arms.items() if runs}
    r["ablation"] |= {f"lite:{name}": f["lite_accuracy"] for name, f in r.get("lite_runs", {}).items()}
    # the Lite is one distilled from the arm reported as Pro: the best such recipe (all are in lite_runs);
    # none yet (Pro's arm just changed): the Lite of the arm reported before it, flagged
    for key in [k for k in r if k.startswith("lite_") and k != "lite_runs"] + ["side_by_side"]:
        r.pop(key, None)
    # a recipe the gate registers (on every seed) before one it rejects; then by its mean over the
    # seeds it ran, not by its luckiest seed
    from_pro: dict[str, list[dict]] = {}
    for teacher in [PRO_ARMS["full"], *reversed(EARLIER_PRO)]:
        for f in r.get("lite_runs", {}).values():
            if f["lite_teacher"].split(":")[1] == teacher:
                from_pro.setdefault(f["lite_recipe"], []).append(f)
        if from_pro:
            break
    if from_pro:
        r["lite_teacher_is_pro"] = teacher == PRO_ARMS["full"]
        runs = max(from_pro.values(), key=lambda fs: (all(f.get("lite_gate", {}).get("register") for f in fs),
                                                      statistics.mean(f["lite_accuracy"] for f in fs)))
        # accuracy is the mean over seeds; the other lite_* figures (size, latency, gate, side by side) are one
        # run's, the lowest teacher seed's (not the first in the file: it is written with sorted keys), named
        # by lite_figures_from
        runs = sorted(runs, key=lambda f: int(f["lite_teacher"].rsplit(":seed", 1)[1]))
        r.update(runs[0])
        r["lite_figures_from"] = runs[0]["lite_teacher"]
        r["lite_accuracy_seeds"] = {f["lite_teacher"].rsplit(":", 1)[1]: f["lite_accuracy"] for f in runs}
        r["lite_accuracy"] = statistics.mean(r["lite_accuracy_seeds"].values())
    r["lite_from_pro_recipes"] = len(from_pro)
    for key in ("lite_accuracy", "tfidf_accuracy", "lite_size_ratio_vs_pro", "lite_latency_ratio_vs_v1_eager"):
        r.setdefault(key, None)


def run_arm(arm: str, part: str, seed: int, tr, va, test, labels, state_dir: Path) -> tuple[float, dict]:
    import numpy as np

    from yanjin.components.data import LABEL, TEXT
    from yanjin.components.resume import Resume
    from yanjin.components.train import predict_logits, train_classifier
    from yanjin.config import load_config
    from yanjin.models.family import load_checkpoint
    from yanjin.models.tokenizer import TextTokenizer

    cfg = load_config("full")
    spec_fields, train_fields = ARMS[arm]
    params = replace(cfg.train, **(train_fields[part] | {"seed": seed}))
    out = checkpoint_dir(state_dir, part, arm, seed)
    start = time.perf_counter()
    # a run cut short (a session's end) continues from its last checkpoint when started again
    resume = Resume(out.with_name(out.name + "-resume"), every=100)
    fitted = train_classifier(tr, va, labels, replace(cfg.model, **spec_fields), params, out, progress=False,
                              resume=resume, on_epoch=epoch_line(f"{part} {arm} seed {seed}"))
    shutil.rmtree(resume.directory, ignore_errors=True)  # done: the best epoch is in `out`
    if params.calibrate:  # as the pipeline's train step does; no prediction changes
        from yanjin.components.calibrate import calibrate_checkpoint

        calibrate_checkpoint(out, va)
    model, spec, _ = load_checkpoint(out)
    tokenizer = TextTokenizer(out / "tokenizer.json", spec.max_length)
    pred = predict_logits(model, tokenizer, test[TEXT].tolist(), 128).argmax(1)
    acc = float(np.mean([labels[i] == y for i, y in zip(pred, test[LABEL])]))
    curve = [round(h["val_accuracy"], 4) for h in fitted.history]
    print(f"{part} {arm} seed {seed}: test accuracy {acc:.4f} ({time.perf_counter() - start:.0f} s); "
          f"val accuracy by epoch {curve}, best epoch {fitted.best_epoch}", flush=True)
    return acc, {"val_accuracy_by_epoch": curve, "best_epoch": fitted.best_epoch}


def epoch_line(what: str):
    """on_epoch for runs of hours: a line per epoch in the log, the only sign of progress (progress=False)."""
    return lambda rec: print(f"{time.strftime('%H:%M:%S')} {what} epoch {rec['epoch']}: train loss "
                             f"{rec['train_loss']:.4f}, val accuracy {rec['val_accuracy']:.4f}", flush=True)


def checkpoint_dir(state_dir: Path, part: str, arm: str, seed: int) -> Path:
    return state_dir / "family_pro" / f"{part}-{arm}-seed{seed}"


def lite(teacher_arm: str, seed: int, data: Path, state_dir: Path, sets: list[str]) -> dict:
    """Lite as the pipeline makes it (full profile's compress section, with the `sets` overrides),
    distilled from the full-data checkpoint of `teacher_arm`, then Pro, V1 and Lite measured side by
    side (compare.measure_isolated: accuracy, file size, PyTorch eager and ONNX Runtime latency at
    batch 1, each in a fresh process). `compress.student_from=ARM` starts the student from that arm's
    full-data checkpoint of the same seed, as the pipeline starts it from a member's champion."""
    from yanjin.components.adapt import clean_corpus, read_corpus
    from yanjin.components.calibrate import calibrate_checkpoint
    from yanjin.components.compare import CompareParams, measure_isolated
    from yanjin.components.data import TEXT
    from yanjin.components.distill import distill_classifier
    from yanjin.components.export import INT8_OPSET, export_onnx, quantize_bundle
    from yanjin.components.gate import TeacherScore, decide
    from yanjin.components.resume import Resume
    from yanjin.config import load_config

    cfg = load_config("full", ["model.variant=lite", *sets])
    name = lite_recipe(teacher_arm, cfg.compress, cfg.train.calibrate, sets)
    tr, va, test, labels = splits("full", data)
    student_arm = cfg.compress.student_source[0]
    bundles, temperatures = {}, {}
    for arm in dict.fromkeys(("v1", teacher_arm)):
        ckpt = checkpoint_dir(state_dir, "full", arm, seed)
        if cfg.train.calibrate:  # as the pipeline's train step does (a checkpoint trained before it was: now)
            temperatures[arm] = calibrate_checkpoint(ckpt, va)
        bundles[arm] = (ckpt.with_name(ckpt.name + "-bundle"), ckpt)
        onnx = bundles[arm][0] / "model.onnx"
        if not onnx.is_file() or onnx.stat().st_mtime < (ckpt / "model.safetensors").stat().st_mtime:
            export_onnx(ckpt, bundles[arm][0])  # none yet, or from an earlier run of this checkpoint
    teacher_bundle, teacher_ckpt = bundles[teacher_arm]
    out = checkpoint_dir(state_dir, "lite", name, seed)
    # the domain text as the pipeline's domain step gives it: test texts removed
    corpus, _ = clean_corpus(read_corpus([data / "train.csv", data.parent / "nlupp" / "banking"], "text"),
                             test[TEXT].tolist())
    # a distillation cut short (a session's end) continues from its last checkpoint when started again
    resume = Resume(out.with_name(out.name + "-resume"), every=100)
    resumed = resume.directory.is_dir() and any(resume.directory.iterdir())
    start = time.perf_counter()
    result = distill_classifier(tr, va, labels, teacher_ckpt, teacher_bundle, corpus, cfg.compress, cfg.train, out,
                                progress=False, student=cfg.model, on_epoch=epoch_line(f"lite {name} seed {seed}"),
                                student_checkpoint=checkpoint_dir(state_dir, "full", student_arm, seed) if student_arm else None,
                                resume=resume)
    seconds = time.perf_counter() - start  # this process's share when resumed
    shutil.rmtree(resume.directory, ignore_errors=True)  # done: the best epoch is in `out`
    if cfg.train.calibrate:
        temperatures["lite"] = calibrate_checkpoint(out, va)
    lite_bundle = out.with_name(out.name + "-bundle")
    export_onnx(out, lite_bundle, opset=INT8_OPSET)  # as the pipeline's export step does for an INT8 member
    quantize_bundle(lite_bundle)
    params = CompareParams(latency_runs=300, throughput_batches=10)
    # each model once: a V1-taught Lite's "pro" row is V1's
    measured = {arm: measure_isolated(str(b), str(c), test, params) for arm, (b, c) in bundles.items()}
    rows = {"v1": measured["v1"], "pro": measured[teacher_arm], "lite": measure_isolated(str(lite_bundle), str(out), test, params)}
    # the registration gate the pipeline applies to Lite, against this teacher (no Lite champion here)
    gate = decide(rows["lite"], cfg.gate, teacher=TeacherScore(f"benchmark pro (full:{teacher_arm})", f"seed{seed}",
                                                               rows["pro"]["accuracy"], rows["pro"]["onnx_bytes"]))
    figures = {"lite_accuracy": rows["lite"]["accuracy"], "lite_gate": gate.to_dict(),
               "lite_size_ratio_vs_pro": rows["lite"]["onnx_bytes"] / rows["pro"]["onnx_bytes"],
               "lite_latency_ratio_vs_v1_eager": rows["lite"]["ort_latency_ms_p50_b1"] / rows["v1"]["eager_latency_ms_p50_b1"],
               "lite_accuracy_ratio_vs_pro": rows["lite"]["accuracy"] / rows["pro"]["accuracy"] if rows["pro"]["accuracy"] else None,
               "lite_teacher": f"full:{teacher_arm}:seed{seed}", "lite_sets": sets, "lite_recipe": name,
               "lite_distil_seconds": seconds, "lite_distil_resumed": resumed, "lite_student_start": result.student_start,
               "lite_student_params": result.student_params, "lite_teacher_params": result.teacher_params,
               "lite_val_accuracy_by_epoch": [round(h["val_accuracy"], 4) for h in result.history],  # distil, then recover
               "lite_best_epoch": result.best_epoch,
               "calibration_temperatures": temperatures,  # by arm, "lite": each fitted on the validation rows
               "side_by_side": {k: {m: r[m] for m in ("accuracy", "macro_f1", "ece", "onnx_bytes", "params",
                                                      "eager_latency_ms_p50_b1", "ort_latency_ms_p50_b1") if m in r}
                                for k, r in rows.items()}}
    print(json.dumps(figures, indent=2), flush=True)
    if teacher_arm != PRO_ARMS["full"]:  # an ablation (e.g. teacher strength): kept in lite_runs only
        return figures
    # family-shaped, for the version advisor (benchmarks/select_seed_example.py): V1, this Pro and Lite
    # measured here side by side; V2 as `yanjin bench family` last measured it (benchmarks/results/family.json)
    family = json.loads((RESULTS / "family.json").read_text())
    versions = {k: r | {"registered_model": f"benchmark {k} ({'full:' + teacher_arm if k == 'pro' else k})",
                        "version": f"seed{seed}"} for k, r in rows.items()}
    versions["v2"] = family["versions"]["v2"] | {"measured_in": "benchmarks/results/family.json (another run)"}
    # one file per teacher seed: a later seed's run never replaces the figures the lite_* keys name
    (RESULTS / f"family_pro_side_by_side_seed{seed}.json").write_text(json.dumps(
        {"versions": versions, "n_test": len(test), "tfidf_accuracy": None}, indent=2, sort_keys=True) + "\n")
    return figures


def lite_recipe(teacher_arm: str, compress, calibrate: bool, sets: list[str]) -> str:
    """A Lite recipe's name: the teacher arm, the teacher-only text fields and calibration as the profile
    and overrides leave them (the full profile turns them on), then every other override."""
    named = {"compress.kd_corpus": str(compress.kd_corpus).lower(), "compress.kd_copies": str(compress.kd_copies),
             "train.calibrate": str(calibrate).lower()}
    named |= {k: v for k, v in (s.split("=", 1) for s in sets) if k not in named}
    return "+".join([teacher_arm, *(f"{k}={v}" for k, v in named.items())])


def record_run(r: dict, part: str, arm: str, seed: int, acc: float, curve: dict) -> None:
    """One run's test accuracy and validation curve, under its part, arm and seed; the arm's recipe beside them."""
    r.setdefault("runs", {}).setdefault(part, {}).setdefault(arm, {})[str(seed)] = acc
    r.setdefault("curves", {}).setdefault(part, {}).setdefault(arm, {})[str(seed)] = curve
    r.setdefault("recipes", {})[arm] = {"model": ARMS[arm][0], "train": ARMS[arm][1]}


def record_lite(r: dict, figures: dict) -> None:
    """Every Lite run's figures under lite_runs, by recipe and teacher seed (summarise picks the issue's
    lite_* keys from them)."""
    seed = figures["lite_teacher"].rsplit(":", 1)[1]  # full:<arm>:seed<N>
    r.setdefault("lite_runs", {})[f"{figures['lite_recipe']}:{seed}"] = figures


def splits(part: str, data: Path):
    import pandas as pd

    from yanjin.components.data import LABEL, TEXT, read_label_set, read_table, split_train_val
    from yanjin.config import load_config

    train = read_table(data / "train.csv", "text", "category")
    test = read_table(data / "test.csv", "text", "category")
    labels = read_label_set(data / "categories.json", train)
    if part == "full":
        tr, va = split_train_val(train, load_config("full").data)
        return tr, va, test, labels
    tr = read_table(data / "train_10.csv", "text", "category")
    rest = train[~train[TEXT].isin(set(tr[TEXT]))]
    va = pd.concat(g.sample(3, random_state=0) for _, g in rest.groupby(LABEL))
    return tr, va, test, labels


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", nargs="+", default=["tfidf", "fewshot"])
    ap.add_argument("--arms", nargs="+", default=list(ARMS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    ap.add_argument("--state-dir", type=Path, default=ROOT / ".yanjin-bench")
    ap.add_argument("--lite-teacher", default=PRO_ARMS["full"], help="the arm whose full-data checkpoint (first seed) Lite distils")
    ap.add_argument("--lite-set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="overrides of the full profile for Lite, e.g. compress.kd_corpus=true compress.kd_copies=1")
    args = ap.parse_args()
    if "tfidf" in args.parts:
        from yanjin.components.compare import tfidf_baseline

        from yanjin.components.data import read_table

        tr, _, test, _ = splits("fewshot", args.data)
        full = read_table(args.data / "train.csv", "text", "category")
        merge(lambda r: r.update(tfidf_accuracy=tfidf_baseline(full, test)["accuracy"],
                                 tfidf_10shot_accuracy=tfidf_baseline(tr, test)["accuracy"]))
    for part in ("fewshot", "full"):
        if part not in args.parts:
            continue
        tr, va, test, labels = splits(part, args.data)
        for seed in args.seeds:
            for arm in args.arms:
                acc, curve = run_arm(arm, part, seed, tr, va, test, labels, args.state_dir)
                merge(lambda r: record_run(r, part, arm, seed, acc, curve))
    if "lite" in args.parts:
        figures = lite(args.lite_teacher, args.seeds[0], args.data, args.state_dir, args.lite_set)
        merge(lambda r: record_lite(r, figures))
    if "report" in args.parts:  # the summary keys and tables again, from the runs recorded so far
        merge(lambda r: None)
    final = json.loads(OUT.read_text())
    (RESULTS / "family_pro.md").write_text(ablation_table(final) + "\n" + lite_table(final))
    # the advisor's input (select_seed_example.py): the side by side of the run the lite_* figures come from
    if final.get("lite_teacher_is_pro"):
        chosen = RESULTS / f"family_pro_side_by_side_{final['lite_figures_from'].rsplit(':', 1)[1]}.json"
        if chosen.is_file():
            (RESULTS / "family_pro_side_by_side.json").write_text(chosen.read_text())
    print(json.dumps({k: v for k, v in final.items() if k not in ("runs", "curves", "recipes", "side_by_side", "lite_runs")}, indent=2))
    print(ablation_table(final))
    print(lite_table(final))


if __name__ == "__main__":
    main()
