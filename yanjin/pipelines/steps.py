"""Kubeflow component bodies: read inputs, call one function of components/stages.py, write outputs.

These functions are shipped to Kubeflow by source, so each imports what it uses inside its
body; `pipeline.py` turns them into components with the configured image.
"""
from typing import NamedTuple

from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output


def resolve_config(
    config_json: str, profile: str, member: str, epochs: int, learning_rate: float, seed: int,
    min_improvement: float, overrides: str, registered_model: str,
) -> NamedTuple("ResolveOutputs", [("config_json", str), ("registered_model", str)]):
    """The run form's fields -> one resolved config (recorded on the version) and the model's name."""
    from collections import namedtuple

    from yanjin.config import from_run_form
    from yanjin.registry import registered_model_name

    cfg = from_run_form(config_json, profile, member, epochs, learning_rate, seed, min_improvement, overrides)
    name = registered_model or registered_model_name(cfg.model_name, cfg.model.variant)
    print(f"{name}: profile {cfg.profile}, member {cfg.model.variant}, recipe {cfg.recipe.summary}")
    return namedtuple("ResolveOutputs", ["config_json", "registered_model"])(cfg.to_json(), name)


def validate_data(
    train_data: str, test_data: str, label_set: str, config_json: str, tracking_uri: str,
    experiment: str, artifact_root: str, git_commit: str,
    train_set: Output[Dataset], val_set: Output[Dataset], test_set: Output[Dataset],
    validation_report: Output[Artifact],
) -> NamedTuple("ValidateOutputs", [("run_id", str), ("data_sha256", str), ("split_sha256", str)]):
    import json
    from collections import namedtuple

    from yanjin.components.stages import validate_and_split
    from yanjin.config import PipelineConfig

    v = validate_and_split(train_data, test_data, label_set, PipelineConfig.from_json(config_json), tracking_uri,
                           experiment, artifact_root, git_commit, train_set.path, val_set.path, test_set.path)
    with open(validation_report.path, "w") as f:
        json.dump(v.report, f, indent=2)
    return namedtuple("ValidateOutputs", ["run_id", "data_sha256", "split_sha256"])(v.run_id, v.data_sha256,
                                                                                    v.split_sha256)


def adapt_domain(
    test_set: Input[Dataset], adapt_corpus: str, config_json: str, tracking_uri: str, run_id: str,
    domain: Output[Model],
) -> str:
    from yanjin.components.stages import prepare_domain
    from yanjin.config import PipelineConfig

    result = prepare_domain(test_set.path, [s for s in adapt_corpus.split(",") if s],
                            PipelineConfig.from_json(config_json), tracking_uri, run_id, domain.path)
    domain.metadata.update(result.metadata)
    return result.kind


def train_model(
    train_set: Input[Dataset], val_set: Input[Dataset], validation_report: Input[Artifact], domain: Input[Model],
    config_json: str, tracking_uri: str, run_id: str,
    checkpoint: Output[Model], metrics: Output[Metrics],
) -> str:
    """Fine-tune, or compress the teacher's champion, as the recipe says; returns lineage tags as JSON."""
    import json

    from yanjin.components.stages import train_member
    from yanjin.config import PipelineConfig

    cfg = PipelineConfig.from_json(config_json)
    labels = json.load(open(validation_report.path))["labels"]
    t = train_member(train_set.path, val_set.path, labels, domain.path, cfg, tracking_uri, run_id, checkpoint.path)
    checkpoint.metadata.update({"variant": cfg.model.variant, "best_epoch": t.best_epoch} | t.lineage)
    metrics.log_metric("best_val_accuracy", t.best_val_accuracy)
    metrics.log_metric("train_seconds", t.seconds)
    return json.dumps(t.lineage)


def export_model(checkpoint: Input[Model], config_json: str, bundle: Output[Model]) -> float:
    from yanjin.components.stages import export_member
    from yanjin.config import PipelineConfig

    meta = export_member(checkpoint.path, PipelineConfig.from_json(config_json), bundle.path)
    bundle.metadata.update(meta)
    return meta["parity_max_abs_diff"]


def evaluate_model(
    bundle: Input[Model], test_set: Input[Dataset], config_json: str, tracking_uri: str, run_id: str,
    metrics: Output[Metrics], confusion: Output[ClassificationMetrics], report: Output[HTML], summary: Output[Markdown],
) -> str:
    import json
    import os

    from yanjin.components.report import evaluation_html, evaluation_markdown
    from yanjin.components.stages import evaluate_member, numbers
    from yanjin.config import PipelineConfig

    cfg, out_dir = PipelineConfig.from_json(config_json), os.path.join(os.path.dirname(report.path), "evaluation")
    result = evaluate_member(bundle.path, test_set.path, cfg, tracking_uri, run_id, out_dir)
    for k, v in numbers(result).items():
        metrics.log_metric(k, v)
    cm = json.load(open(os.path.join(out_dir, "confusion_matrix.json")))
    confusion.log_confusion_matrix(cm["labels"], cm["matrix"])
    with open(report.path, "w") as f:
        f.write(evaluation_html(result, os.path.join(out_dir, "confusion_matrix.png")))
    with open(summary.path, "w") as f:
        f.write(evaluation_markdown(result, cfg.model.variant))
    return json.dumps(result)


def gate_candidate(
    bundle: Input[Model], test_set: Input[Dataset], evaluation: str, lineage: str, config_json: str,
    tracking_uri: str, registered_model: str, decision: Output[Markdown],
) -> str:
    import json

    from yanjin.components.report import gate_markdown
    from yanjin.components.stages import gate_floors, gate_member
    from yanjin.config import PipelineConfig

    cfg, figures = PipelineConfig.from_json(config_json), json.loads(evaluation)
    made = gate_member(bundle.path, test_set.path, figures, json.loads(lineage or "{}"), cfg, tracking_uri,
                       registered_model)
    with open(decision.path, "w") as f:
        f.write(gate_markdown(made.to_dict(), figures, gate_floors(cfg.gate), registered_model))
    return made.verdict


def register_model(
    bundle: Input[Model], evaluation: str, lineage: str, config_json: str, tracking_uri: str,
    registered_model: str, data_sha256: str, split_sha256: str, git_commit: str,
) -> str:
    import json

    from yanjin.components.stages import register_member
    from yanjin.config import PipelineConfig

    return register_member(bundle.path, json.loads(evaluation), json.loads(lineage or "{}"),
                           PipelineConfig.from_json(config_json), tracking_uri, registered_model, data_sha256,
                           split_sha256, git_commit)


def no_version() -> str:
    """The rejected branch's register output: no version."""
    return ""
