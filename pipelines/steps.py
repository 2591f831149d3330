"""Kubeflow component bodies: read inputs, call one `components` function, write outputs.

These functions are shipped to Kubeflow by source, so each imports what it uses inside its
body; `pipeline.py` turns them into components with the configured image.
"""
from typing import NamedTuple

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output


def validate_data(
    train_data: str, test_data: str, label_set: str, config_json: str, tracking_uri: str,
    experiment: str, artifact_root: str, git_commit: str,
    train_set: Output[Dataset], val_set: Output[Dataset], test_set: Output[Dataset],
    validation_report: Output[Artifact],
) -> NamedTuple("ValidateOutputs", [("run_id", str), ("data_sha256", str)]):
    import json
    from collections import namedtuple

    import mlflow

    from yanjin.components import data as D
    from yanjin.components.register import TRAINING_DATA_ARTIFACT, ensure_experiment
    from yanjin.components.validate import DataValidationError, validate_splits
    from yanjin.config import PipelineConfig

    cfg = PipelineConfig.from_json(config_json)
    p = cfg.data
    train = D.read_table(train_data, p.text_column, p.label_column)
    test = D.read_table(test_data, p.text_column, p.label_column)
    labels = D.read_label_set(label_set or None, train)
    files = [train_data, test_data] + ([label_set] if label_set else [])
    data_sha = D.sha256_files(files)

    mlflow.set_tracking_uri(tracking_uri)
    exp_id = ensure_experiment(experiment, artifact_root or None)
    with mlflow.start_run(experiment_id=exp_id) as run:
        mlflow.set_tags({"variant": cfg.model.variant, "profile": cfg.profile, "data_sha256": data_sha,
                         "git_commit": git_commit, "pipeline": "yanjin"})
        mlflow.log_params({"data.train": train_data, "data.test": test_data})
        try:
            report = validate_splits({"train": train, "test": test}, {"train": train_data, "test": test_data},
                                     labels, cfg.validation)
            verdict = report.to_dict()
        except DataValidationError as e:
            mlflow.log_dict(e.report.to_dict(), "validation/report.json")
            mlflow.set_tag("validation", "failed")
            raise  # the run is closed as FAILED by the context manager
        mlflow.log_dict(verdict, "validation/report.json")
        mlflow.set_tag("validation", "passed")
        # the contract holds for the files as given; smoke profiles sample only afterwards
        train, labels = D.subsample(train, labels, p)
        test = test[test[D.LABEL].isin(labels)] if p.max_classes > 0 else test
        tr, va = D.split_train_val(train, p)
        mlflow.log_params({"data.n_train": len(tr), "data.n_val": len(va), "data.n_test": len(test),
                           "data.n_labels": len(labels)})

    for frame, art in ((tr, train_set), (va, val_set), (test, test_set)):
        frame.to_parquet(art.path, index=False)
        art.metadata["rows"] = len(frame)
    with mlflow.start_run(run_id=run.info.run_id):  # the drift monitor's reference: what this version learnt from
        mlflow.log_artifact(train_set.path, TRAINING_DATA_ARTIFACT)
    with open(validation_report.path, "w") as f:
        json.dump(verdict | {"labels": labels}, f, indent=2)
    return namedtuple("ValidateOutputs", ["run_id", "data_sha256"])(run.info.run_id, data_sha)


def adapt_domain(
    test_set: Input[Dataset], adapt_corpus: str, config_json: str, tracking_uri: str, run_id: str,
    domain: Output[Model],
) -> str:
    import json
    import os

    import mlflow
    import pandas as pd

    from yanjin.components.adapt import adapt_encoder, clean_corpus, read_corpus
    from yanjin.config import PipelineConfig

    cfg = PipelineConfig.from_json(config_json)
    os.makedirs(domain.path, exist_ok=True)
    if cfg.model.variant not in ("pro", "lite"):  # V1 and V2 start from MiniLM as is
        domain.metadata["adapted"] = False
        return "skipped"
    sources = [s for s in adapt_corpus.split(",") if s]
    texts = read_corpus(sources, cfg.data.text_column)
    exclude = pd.read_parquet(test_set.path)["text"].tolist()
    if cfg.model.variant == "lite":  # Lite keeps the vocabulary of this corpus (test text excluded)
        corpus, n_excluded = clean_corpus(texts, exclude)
        with open(os.path.join(domain.path, "corpus.json"), "w") as f:
            json.dump(corpus, f)
        domain.metadata.update({"texts": len(corpus), "excluded_test_texts": n_excluded})
        return "corpus"
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_params({f"adapt.{k}": v for k, v in cfg.adapt.__dict__.items()} | {"adapt.corpus": adapt_corpus})
        result = adapt_encoder(texts, exclude, cfg.model, cfg.adapt, os.path.join(domain.path, "encoder.safetensors"),
                               on_step=lambda step, loss: mlflow.log_metric("adapt_loss", loss, step=step))
        mlflow.log_metrics({"adapt_texts": result.n_texts, "adapt_excluded_test_texts": result.n_excluded_test,
                            "adapt_seconds": result.seconds})
        mlflow.log_artifact(os.path.join(domain.path, "encoder.safetensors"), "adapted_encoder")
    domain.metadata.update({"adapted": True, "texts": result.n_texts, "excluded_test_texts": result.n_excluded_test})
    print(f"adapted on {result.n_texts} texts ({result.n_excluded_test} test texts excluded), final loss {result.final_loss:.4f}")
    return "adapted"


def train_model(
    train_set: Input[Dataset], val_set: Input[Dataset], validation_report: Input[Artifact], domain: Input[Model],
    config_json: str, tracking_uri: str, run_id: str,
    checkpoint: Output[Model], metrics: Output[Metrics],
) -> str:
    """Fine-tune (V1, V2, Pro) or compress the teacher champion (Lite); returns lineage tags as JSON."""
    import json
    import os
    import tempfile

    import mlflow
    import pandas as pd

    from yanjin.components.register import CHECKPOINT_ARTIFACT, download_checkpoint, find_champion, registered_model_name, verified
    from yanjin.components.train import train_classifier
    from yanjin.config import PipelineConfig

    cfg = PipelineConfig.from_json(config_json)
    labels = json.load(open(validation_report.path))["labels"]
    train, val = pd.read_parquet(train_set.path), pd.read_parquet(val_set.path)
    mlflow.set_tracking_uri(tracking_uri)
    lineage = {}
    with mlflow.start_run(run_id=run_id):
        mlflow.log_params({f"model.{k}": v for k, v in cfg.model.__dict__.items()}
                          | {f"train.{k}": v for k, v in cfg.train.__dict__.items()})

        def on_epoch(rec: dict) -> None:
            mlflow.log_metrics({k: v for k, v in rec.items() if k != "epoch"}, step=rec["epoch"])
            print(f"epoch {rec['epoch']}: train loss {rec['train_loss']:.4f}, val accuracy {rec['val_accuracy']:.4f}")

        if cfg.model.variant == "lite":
            from yanjin.components.distill import distill_classifier

            teacher_name = registered_model_name(cfg.model_name, cfg.compress.teacher)
            mlflow.log_params({f"compress.{k}": v for k, v in cfg.compress.__dict__.items()})
            with tempfile.TemporaryDirectory() as tmp:
                teacher = find_champion(teacher_name, os.path.join(tmp, "bundle"))
                if teacher is None:
                    raise RuntimeError(f"Lite distils {teacher_name}@champion, which does not exist in {tracking_uri}; "
                                       f"build it first: yanjin pipeline run --variant {cfg.compress.teacher}")
                verified(teacher, teacher_name)
                teacher_ckpt = download_checkpoint(teacher_name, teacher, os.path.join(tmp, "ckpt"))
                corpus = json.load(open(os.path.join(domain.path, "corpus.json")))
                result = distill_classifier(train, val, labels, teacher_ckpt, teacher.bundle_dir, corpus,
                                            cfg.compress, cfg.train, checkpoint.path, on_epoch=on_epoch)
            lineage = {"teacher_model": teacher_name, "teacher_version": teacher.version, "teacher_run_id": teacher.run_id}
            mlflow.set_tags(lineage)
            mlflow.log_metrics({"teacher_params": result.teacher_params, "student_params": result.student_params,
                                "student_vocab_size": result.vocab_size})
            print(f"distilled {teacher_name} v{teacher.version}: {result.teacher_params:,} -> {result.student_params:,} "
                  f"parameters, vocabulary {result.vocab_size:,}")
        else:
            adapted = os.path.join(domain.path, "encoder.safetensors")
            result = train_classifier(train, val, labels, cfg.model, cfg.train, checkpoint.path, on_epoch=on_epoch,
                                      encoder_weights=adapted if os.path.isfile(adapted) else None)
        mlflow.log_metrics({"best_val_accuracy": result.best_val_accuracy, "train_seconds": result.seconds})
        mlflow.log_artifacts(checkpoint.path, CHECKPOINT_ARTIFACT)  # a later Lite may distil this version
    checkpoint.metadata.update({"variant": cfg.model.variant, "best_epoch": result.best_epoch} | lineage)
    metrics.log_metric("best_val_accuracy", result.best_val_accuracy)
    metrics.log_metric("train_seconds", result.seconds)
    return json.dumps(lineage)


def export_model(checkpoint: Input[Model], config_json: str, bundle: Output[Model]) -> float:
    from yanjin.components.export import export_onnx, quantize_bundle
    from yanjin.config import PipelineConfig

    cfg = PipelineConfig.from_json(config_json)
    result = export_onnx(checkpoint.path, bundle.path)
    bundle.metadata.update({"onnx_bytes": result.onnx_bytes, "parity_max_abs_diff": result.max_abs_diff})
    if cfg.model.variant == "lite" and cfg.compress.quantize_int8:
        q = quantize_bundle(bundle.path)
        bundle.metadata.update({"onnx_bytes": q.int8_bytes, "fp32_onnx_bytes": q.fp32_bytes,
                                "int8_max_abs_diff_vs_fp32": q.max_abs_diff, "quantization": "int8-dynamic"})
        print(f"INT8: {q.fp32_bytes:,} -> {q.int8_bytes:,} bytes; max |logit diff| vs FP32 {q.max_abs_diff:.3f}")
    return result.max_abs_diff


def evaluate_model(
    bundle: Input[Model], test_set: Input[Dataset], config_json: str, tracking_uri: str, run_id: str,
    metrics: Output[Metrics], report: Output[HTML],
) -> str:
    import base64
    import json
    import os

    import mlflow
    import pandas as pd

    from yanjin.components.evaluate import evaluate_bundle
    from yanjin.config import PipelineConfig

    cfg = PipelineConfig.from_json(config_json)
    out_dir = os.path.join(os.path.dirname(report.path), "evaluation")
    result = evaluate_bundle(bundle.path, pd.read_parquet(test_set.path), cfg.evaluate, out_dir)
    numbers = {k: v for k, v in result.items() if isinstance(v, (int, float))}
    for k, v in numbers.items():
        metrics.log_metric(k, v)
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"test_{k}": v for k, v in numbers.items()})
        mlflow.log_artifacts(out_dir, "evaluation")
    png = base64.b64encode(open(os.path.join(out_dir, "confusion_matrix.png"), "rb").read()).decode()
    rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in result.items())
    with open(report.path, "w") as f:
        f.write(f"<h2>Evaluation</h2><table>{rows}</table><img src='data:image/png;base64,{png}'/>")
    return json.dumps(result | {"run_id": run_id})


def gate_candidate(
    bundle: Input[Model], test_set: Input[Dataset], evaluation: str, lineage: str, config_json: str,
    tracking_uri: str, registered_model: str,
) -> str:
    import json
    import tempfile

    import mlflow
    import pandas as pd

    from yanjin.components.evaluate import accuracy_on
    from yanjin.components.gate import ChampionScore, TeacherScore, decide
    from yanjin.components.register import download_version, find_champion, registered_model_name
    from yanjin.models.inference import ONNX_FILE, bundle_file
    from yanjin.config import PipelineConfig

    cfg = PipelineConfig.from_json(config_json)
    metrics = json.loads(evaluation)
    test = pd.read_parquet(test_set.path)
    others = [registered_model_name(cfg.model_name, v) for v in cfg.gate.also_beat.split(",") if v.strip()]
    mlflow.set_tracking_uri(tracking_uri)
    champions = []
    for name in [registered_model] + others:  # every champion re-scored on this candidate's test set
        with tempfile.TemporaryDirectory() as tmp:
            champion = find_champion(name, tmp)
            if champion:
                champions.append(ChampionScore(name, champion.version, accuracy_on(champion.bundle_dir, test)))
    teacher = None
    parent = json.loads(lineage or "{}")
    if parent:  # Lite: held to the exact teacher version it was distilled from
        with tempfile.TemporaryDirectory() as tmp:
            t = download_version(parent["teacher_model"], parent["teacher_version"], tmp)
            teacher = TeacherScore(parent["teacher_model"], t.version, accuracy_on(t.bundle_dir, test),
                                   bundle_file(t.bundle_dir, ONNX_FILE).stat().st_size)
    decision = decide(metrics, cfg.gate, champions, teacher)
    with mlflow.start_run(run_id=metrics["run_id"]):
        mlflow.set_tag("gate", decision.verdict)
        mlflow.log_dict(decision.to_dict(), "gate/decision.json")
        for c in champions:
            mlflow.log_metric(f"champion_test_accuracy.{c.model}", c.accuracy)
        if teacher:
            mlflow.log_metrics({"teacher_test_accuracy": teacher.accuracy,
                                "accuracy_ratio_vs_teacher": metrics["accuracy"] / teacher.accuracy,
                                "size_ratio_vs_teacher": metrics["onnx_bytes"] / teacher.onnx_bytes})
    print(f"gate: {decision.verdict}" + "".join(f"\n  - {r}" for r in decision.reasons))
    return decision.verdict


def register_model(
    bundle: Input[Model], evaluation: str, lineage: str, config_json: str, tracking_uri: str,
    registered_model: str, data_sha256: str, git_commit: str,
) -> str:
    import json

    import mlflow

    from yanjin.components.register import register_bundle
    from yanjin.config import PipelineConfig

    cfg = PipelineConfig.from_json(config_json)
    metrics = json.loads(evaluation)
    tags = {"variant": cfg.model.variant, "data_sha256": data_sha256, "git_commit": git_commit,
            "config": config_json, "profile": cfg.profile, "gate": "passed"}
    tags |= {k: str(metrics[k]) for k in ("accuracy", "macro_f1", "ece", "latency_ms_p50_b1", "onnx_bytes")}
    tags |= json.loads(lineage or "{}")  # Lite: teacher_model, teacher_version, teacher_run_id
    mlflow.set_tracking_uri(tracking_uri)
    return register_bundle(bundle.path, registered_model, metrics["run_id"], tags)
