"""Kubeflow component bodies: read inputs, call one function of components/stages.py, write outputs.

These functions are shipped to Kubeflow by source, so each imports what it uses inside its
body; `pipeline.py` turns them into components with the configured image.
"""
from typing import NamedTuple

from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output


def resolve_config(
    config_json: str, profile: str, member: str, epochs: int, learning_rate: float, seed: int,
    min_improvement: float, overrides: str, registered_model: str, trainer_workers: int = 0, trainer_gpus: int = 0,
) -> NamedTuple("ResolveOutputs", [("config_json", str), ("registered_model", str), ("family_experiment", str)]):
    """The run form's fields -> one resolved config (recorded on the version), the model's name and the
    experiment of the family's runs."""
    from collections import namedtuple

    from yanjin.config import from_run_form
    from yanjin.registry import family_experiment, registered_model_name

    cfg = from_run_form(config_json, profile, member, epochs, learning_rate, seed, min_improvement, overrides,
                        trainer_workers, trainer_gpus)
    name = registered_model or registered_model_name(cfg.model_name, cfg.model.variant)
    print(f"{name}: profile {cfg.profile}, member {cfg.model.variant}, recipe {cfg.recipe.summary}")
    return namedtuple("ResolveOutputs", ["config_json", "registered_model", "family_experiment"])(
        cfg.to_json(), name, family_experiment(cfg.model_name))


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
    from yanjin.state import git_commit as running_code

    v = validate_and_split(train_data, test_data, label_set, PipelineConfig.from_json(config_json), tracking_uri,
                           experiment, artifact_root, git_commit or running_code(), train_set.path, val_set.path, test_set.path)
    with open(validation_report.path, "w") as f:
        json.dump(v.report, f, indent=2)
    return namedtuple("ValidateOutputs", ["run_id", "data_sha256", "split_sha256"])(v.run_id, v.data_sha256,
                                                                                    v.split_sha256)


def start_member_run(
    train_set: Input[Dataset], val_set: Input[Dataset], test_set: Input[Dataset], validation_report: Input[Artifact],
    config_json: str, tracking_uri: str, experiment: str, artifact_root: str, git_commit: str, train_data: str,
    test_data: str, data_sha256: str, family_run_id: str, label_set: str = "",
) -> str:
    """A family member's own MLflow run over the data the family run validated; returns its id."""
    import json

    from yanjin.components.stages import start_member_run as start
    from yanjin.config import PipelineConfig
    from yanjin.state import git_commit as running_code

    return start(train_set.path, val_set.path, test_set.path, json.load(open(validation_report.path)),
                 PipelineConfig.from_json(config_json), tracking_uri, experiment, artifact_root,
                 git_commit or running_code(),
                 train_data, test_data, data_sha256, family_run_id, label_set)


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
    config_json: str, tracking_uri: str, run_id: str, teacher_version: str, teacher_in_run: bool,
    checkpoint: Output[Model], metrics: Output[Metrics],
) -> str:
    """Fine-tune, or compress the teacher, as the recipe says; returns lineage tags as JSON. A family run
    passes the teacher version it registered (`teacher_in_run`; "" when it rejected it: the champion); a
    one-member run the version its form names ("": the champion)."""
    import json

    from yanjin.components.stages import train_member
    from yanjin.config import PipelineConfig

    cfg = PipelineConfig.from_json(config_json)
    labels = json.load(open(validation_report.path))["labels"]
    t = train_member(train_set.path, val_set.path, labels, domain.path, cfg, tracking_uri, run_id, checkpoint.path,
                     teacher_version if teacher_in_run or teacher_version else None)
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
    tracking_uri: str, registered_model: str, after: str, register: bool, decision: Output[Markdown],
) -> str:
    """Floors and champions. A family run passes in `after` its table so far (summarise_member), holding
    the members this one must also beat: the gate reads their champions once this run registered them.
    With `register` off the decision is made and logged, and "not-registered" keeps the register step off."""
    import json

    from yanjin.components.report import gate_markdown
    from yanjin.components.stages import gate_floors, gate_member
    from yanjin.config import PipelineConfig

    cfg, figures = PipelineConfig.from_json(config_json), json.loads(evaluation)
    made = gate_member(bundle.path, test_set.path, figures, json.loads(lineage or "{}"), cfg, tracking_uri,
                       registered_model)
    with open(decision.path, "w") as f:
        f.write(gate_markdown(made.to_dict(), figures, gate_floors(cfg.gate), registered_model,
                              {r["registered_model"]: r["version"] for r in json.loads(after or "{}").values()}))
    return made.verdict if register else "not-registered"


def register_model(
    bundle: Input[Model], evaluation: str, lineage: str, config_json: str, tracking_uri: str,
    registered_model: str, data_sha256: str, split_sha256: str, git_commit: str, card: Output[Markdown],
) -> str:
    """Register the bundle, then write its model card (MLflow, and this step's Markdown for the Kubeflow UI)."""
    import json
    import os

    from yanjin.components.stages import card_member, register_member
    from yanjin.config import PipelineConfig
    from yanjin.registry.ledger import LEDGER_ENV
    from yanjin.state import git_commit as running_code

    git_commit = git_commit or running_code()   # the form left it empty: the image's own commit
    # the release ledger's database and this step's MLflow credentials come from the pod (a Secret)
    version = register_member(bundle.path, json.loads(evaluation), json.loads(lineage or "{}"),
                              PipelineConfig.from_json(config_json), tracking_uri, registered_model, data_sha256,
                              split_sha256, git_commit, os.environ.get(LEDGER_ENV),
                              (os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")))
    with open(card.path, "w") as f:
        f.write(card_member(registered_model, version, tracking_uri, os.environ.get(LEDGER_ENV)))
    return version


def no_version() -> str:
    """The rejected branch's register output: no version."""
    return ""


def summarise_member(table: str, member: str, registered_model: str, gate: str, version: str, evaluation: str,
                     lineage: str) -> str:
    """The family table so far (JSON, member -> row) with this member's row added. Rows are chained from
    member to member, not gathered: the table step needs one input whatever the family's size."""
    import json

    from yanjin.components.report import family_row

    row = family_row(registered_model, gate, version, json.loads(evaluation), json.loads(lineage or "{}"))
    return json.dumps(json.loads(table) | {member: row})


def family_table(rows: str, config_json: str, tracking_uri: str, family_run_id: str, table: Output[Markdown]) -> str:
    """The family table (summarise_member's JSON) as Markdown for the Kubeflow UI, both logged to the
    family run; returns the rows."""
    import json

    from yanjin.components.stages import record_family
    from yanjin.config import PipelineConfig

    text = record_family(json.loads(rows), PipelineConfig.from_json(config_json), tracking_uri, family_run_id)
    with open(table.path, "w") as f:
        f.write(text)
    return rows
