"""The pipeline graphs: one member (validate -> domain -> train -> export -> evaluate -> gate -> [register])
and the whole family in one run (validate once; a branch per member, teachers before their students).

Only wiring lives here. The same graphs compile to the YAML the Kubeflow UI uploads and run
locally under kfp.local; the image is chosen at build time.
"""

from dataclasses import dataclass
from typing import Callable, NamedTuple  # no `from __future__ import annotations`: kfp reads real types

from kfp import dsl, kubernetes

from ..config import ResourceParams, StepResources
from ..family import FAMILY
from . import steps

PIPELINE_NAME = "yanjin-member"
FAMILY_PIPELINE_NAME = "yanjin-family"
DEFAULT_IMAGE = "yanjin:0.1.0"  # what infra/Dockerfile builds; pass --image REGISTRY/yanjin:TAG for a cluster


GPU = "nvidia.com/gpu"  # the NVIDIA device plugin's resource; GPU nodes are commonly tainted with it

# The run form's fields, described once for both graphs (kfp reads the descriptions from the docstring).
FORM = {
    "train_data": "Path or URL of the labelled training CSV/Parquet file (columns text, category).",
    "test_data": "Path or URL of the labelled test CSV/Parquet file (never trained on).",
    "label_set": "Optional path or URL of a JSON list of the known labels; empty means the labels seen in training.",
    "profile": "Config profile shipped in the image: tiny (CI), demo (minutes) or full (benchmark quality).",
    "member": "Family member to build: v1 (general), v2 (long inputs), pro (domain-adapted; must beat V1) or lite "
              "(Pro distilled, INT8); empty means the profile's, v1.",
    "epochs": "Training epochs of every member; 0 keeps the profile's (and a member's recipe's: the profile's "
              "`recipes` section, e.g. the full profile's Pro).",
    "learning_rate": "Peak learning rate of fine-tuning, every member; 0 keeps the profile's (and a member's recipe's).",
    "seed": "Random seed of the split and training; -1 keeps the profile's.",
    "min_improvement": "Accuracy margin a candidate needs over each champion (e.g. 0.005); -1 keeps the profile's.",
    "trainer_workers": "Kubeflow Trainer: hand fine-tuning, adaptation and distillation to a TrainJob of this many "
                       "nodes (data-parallel, torchrun); 0 trains inside the step as the profile says.",
    "trainer_gpus": "Kubeflow Trainer: GPUs per node of that TrainJob, one rank each (NCCL); 0 means CPU nodes "
                    "(gloo, distributed.ranks processes each).",
    "overrides": "Any other config fields, e.g. data.max_per_class=40;gate.max_ece=0.1 (semicolon-separated).",
    "tracking_uri": "MLflow tracking and registry URI (http://mlflow.yanjin:5000 in the cluster guide; "
                    "sqlite:///... embedded).",
    "registered_model": "MLflow registered model name; empty means <model_name>-<member>, e.g. banking77-lite.",
    "adapt_corpus": "Comma-separated unlabeled in-domain text sources (CSV/Parquet, JSON lists, folders): Pro adapts "
                    "to it, Lite keeps its vocabulary; V1/V2 ignore it.",
    "config_json": "Advanced: a whole resolved config as JSON (what `yanjin pipeline submit` sends) used instead of "
                   "the profile; the fields above still apply on top.",
    "artifact_root": "Artifact location for a new MLflow experiment; empty uses the server default.",
    "git_commit": "Advanced: leave empty. The commit of the code that runs is recorded as lineage: the image's own "
                  "(YANJIN_GIT_COMMIT, set when it was built); a value here is recorded instead.",
    "teacher_version": "Lite: the exact teacher version to distil (e.g. 7); empty means the teacher's @champion.",
    "register": "Register the version when the gate passes; off evaluates and gates only (yanjin reproduce).",
}


def described(summary: str, fn: Callable) -> Callable:
    """`fn` with a docstring kfp turns into the run form's descriptions."""
    names = fn.__code__.co_varnames[: fn.__code__.co_argcount]
    fn.__doc__ = summary + "\n\nArgs:\n" + "".join(f"    {n}: {FORM[n]}\n" for n in names)
    return fn


def placed(task: dsl.PipelineTask, r: StepResources | None, gpu: bool) -> dsl.PipelineTask:
    """Requests, limits, deadline, retries, caching and (compiled with --gpu) a GPU for one step; None
    (kfp.local, which ignores them all) sets nothing: each kfp setter walks the caller's whole stack
    with inspect.stack(), which takes a minute per pipeline under a deep stack such as pytest's."""
    if r is None:
        return task
    task.set_cpu_request(r.cpu).set_cpu_limit(r.cpu_limit).set_memory_request(r.memory).set_memory_limit(r.memory_limit)
    task.set_caching_options(r.cache)
    if r.retries:
        task.set_retry(num_retries=r.retries, backoff_duration="30s", backoff_factor=2.0, backoff_max_duration="600s")
    kubernetes.set_timeout(task, r.timeout_minutes * 60)
    if gpu and r.gpu:
        task.set_accelerator_type(GPU).set_accelerator_limit(1)
        kubernetes.add_toleration(task, key=GPU, operator="Exists", effect="NoSchedule")
    return task


class Ops:
    """Every step as a component on the image, each task placed with its profile's resources."""

    def __init__(self, image: str, resources: ResourceParams | None, gpu: bool):
        def component(fn):
            # kfp is baked into the yanjin image, so no per-step `pip install kfp`
            return dsl.component(fn, base_image=image, install_kfp_package=False)

        self.resources, self.gpu = resources, gpu
        self.ops = {name: component(getattr(steps, name)) for name in (
            "resolve_config", "validate_data", "start_member_run", "adapt_domain", "train_model", "export_model",
            "evaluate_model", "gate_candidate", "register_model", "no_version", "summarise_member", "family_table")}

    def __call__(self, name: str, display: str, step: str = "", **inputs) -> dsl.PipelineTask:
        task = self.ops[name](**inputs).set_display_name(display)
        return placed(task, getattr(self.resources, step) if step and self.resources else None, self.gpu)


@dataclass
class Data:
    """What the validate step made of the run's data, as channels."""
    train_set: object
    val_set: object
    test_set: object
    report: object
    data_sha256: object
    split_sha256: object


def member_branch(op: Ops, label: str, config_json, registered_model, run_id, data: Data, tracking_uri,
                  adapt_corpus, git_commit, teacher_version=None, after=None, teacher_in_run=None, register=True):
    """domain -> train -> export -> evaluate -> gate -> [register | nothing] for one member; returns the
    evaluate, gate and train tasks and the version the gate's two branches made ("" when rejected).
    `teacher_version`: a family run's teacher (the channel of its version); `after`: the family table
    so far, holding the rows of the peers the gate must wait for. A one-member run passes its form's
    `teacher_version` ("" is the champion) with `teacher_in_run` False, and its `register` switch."""
    mlflow = dict(tracking_uri=tracking_uri, config_json=config_json)
    a = op("adapt_domain", f"{label}Domain text: adaptation (Pro), vocabulary corpus (Lite)", "adapt",
           test_set=data.test_set, adapt_corpus=adapt_corpus, run_id=run_id, **mlflow)
    t = op("train_model", f"{label}Fine-tune (Lite: distil + prune)", "train", train_set=data.train_set,
           val_set=data.val_set, validation_report=data.report, domain=a.outputs["domain"], run_id=run_id,
           teacher_version="" if teacher_version is None else teacher_version,
           teacher_in_run=teacher_version is not None if teacher_in_run is None else teacher_in_run, **mlflow)
    e = op("export_model", f"{label}Export ONNX + parity (Lite: INT8)", "export", checkpoint=t.outputs["checkpoint"],
           config_json=config_json)
    ev = op("evaluate_model", f"{label}Evaluate", "evaluate", bundle=e.outputs["bundle"], test_set=data.test_set,
            run_id=run_id, **mlflow)
    g = op("gate_candidate", f"{label}Gate: floors and champions", "gate", bundle=e.outputs["bundle"],
           test_set=data.test_set, evaluation=ev.outputs["Output"], lineage=t.outputs["Output"],
           registered_model=registered_model, after=after or "{}", register=register, **mlflow)
    with dsl.If(g.outputs["Output"] == "register", name=f"{label}candidate-passes-gate".replace(": ", "-")):
        r = op("register_model", f"{label}Register in MLflow (alias challenger)", "register", bundle=e.outputs["bundle"],
               evaluation=ev.outputs["Output"], lineage=t.outputs["Output"], registered_model=registered_model,
               data_sha256=data.data_sha256, split_sha256=data.split_sha256, git_commit=git_commit, **mlflow)
    with dsl.Else(name=f"{label}candidate-rejected".replace(": ", "-")):
        n = op("no_version", f"{label}Nothing registered (gate rejected, or registration off)")
    return ev, g, t, dsl.OneOf(r.outputs["Output"], n.output)


def _validate(op: Ops, rc: dsl.PipelineTask, experiment, train_data, test_data, label_set, tracking_uri,
              artifact_root, git_commit) -> tuple[dsl.PipelineTask, Data]:
    v = op("validate_data", "Validate data (Great Expectations)", "validate", train_data=train_data, test_data=test_data,
           label_set=label_set, config_json=rc.outputs["config_json"], tracking_uri=tracking_uri, experiment=experiment,
           artifact_root=artifact_root, git_commit=git_commit)
    return v, Data(v.outputs["train_set"], v.outputs["val_set"], v.outputs["test_set"], v.outputs["validation_report"],
                   v.outputs["data_sha256"], v.outputs["split_sha256"])


def build_pipeline(image: str = DEFAULT_IMAGE, resources: ResourceParams | None = ResourceParams(),
                   gpu: bool = False) -> Callable:
    """One member per run: the member is a field of the run form."""
    op = Ops(image, resources, gpu)

    def yanjin_member(
        train_data: str, test_data: str, label_set: str = "", profile: str = "full", member: str = "",
        epochs: int = 0, learning_rate: float = 0.0, seed: int = -1, min_improvement: float = -1.0,
        overrides: str = "", tracking_uri: str = "http://mlflow.yanjin:5000", registered_model: str = "",
        adapt_corpus: str = "", config_json: str = "", artifact_root: str = "", git_commit: str = "",
        teacher_version: str = "", register: bool = True, trainer_workers: int = 0, trainer_gpus: int = 0,
    ) -> NamedTuple("PipelineOutputs", [("evaluation", str), ("gate", str), ("version", str)]):
        rc = op("resolve_config", "Resolve the run's config", "resolve", config_json=config_json, profile=profile,
                member=member, epochs=epochs, learning_rate=learning_rate, seed=seed, min_improvement=min_improvement,
                overrides=overrides, registered_model=registered_model, trainer_workers=trainer_workers,
                trainer_gpus=trainer_gpus)
        name = rc.outputs["registered_model"]
        v, data = _validate(op, rc, name, train_data, test_data, label_set, tracking_uri, artifact_root, git_commit)
        ev, g, _, version = member_branch(op, "", rc.outputs["config_json"], name, v.outputs["run_id"], data,
                                          tracking_uri, adapt_corpus, git_commit, teacher_version=teacher_version,
                                          teacher_in_run=False, register=register)
        Outputs = NamedTuple("PipelineOutputs", [("evaluation", str), ("gate", str), ("version", str)])
        return Outputs(evaluation=ev.outputs["Output"], gate=g.outputs["Output"], version=version)

    return dsl.pipeline(name=PIPELINE_NAME, description="Train, evaluate, gate and register one version of a member "
                        "of the yanjin model family.")(described(
                            "Train, evaluate, gate and register one version of a member of the model family.",
                            yanjin_member))


def build_family_pipeline(image: str = DEFAULT_IMAGE, resources: ResourceParams | None = ResourceParams(),
                          gpu: bool = False, members: list[str] | None = None) -> Callable:
    """The whole family per run: the data validated once (the family run), then a branch per member of the
    family table, in parallel except where a recipe orders them: a member gated against another's
    champion waits for that member's register step, a student distils the version its teacher's branch
    registered (the teacher's champion when that branch rejected it). Last, the family table."""
    op = Ops(image, resources, gpu)
    members = members or list(FAMILY)

    def yanjin_family(
        train_data: str, test_data: str, label_set: str = "", profile: str = "full", epochs: int = 0,
        learning_rate: float = 0.0, seed: int = -1, min_improvement: float = -1.0, overrides: str = "",
        tracking_uri: str = "http://mlflow.yanjin:5000", adapt_corpus: str = "", config_json: str = "",
        artifact_root: str = "", git_commit: str = "", trainer_workers: int = 0, trainer_gpus: int = 0,
    ) -> NamedTuple("FamilyOutputs", [("family", str)]):
        form = dict(config_json=config_json, profile=profile, epochs=epochs, learning_rate=learning_rate, seed=seed,
                    min_improvement=min_improvement, overrides=overrides, registered_model="",
                    trainer_workers=trainer_workers, trainer_gpus=trainer_gpus)
        resolved = {m: op("resolve_config", f"{m}: Resolve the run's config", "resolve", member=m, **form)
                    for m in members}
        first = resolved[members[0]]  # every member shares the data and validation sections of the profile
        v, data = _validate(op, first, first.outputs["family_experiment"], train_data, test_data, label_set,
                            tracking_uri, artifact_root, git_commit)
        versions, links, table = {}, {}, "{}"  # links: member -> the family table up to its row
        for m in members:
            recipe, rc = FAMILY[m], resolved[m]
            run = op("start_member_run", f"{m}: Open its MLflow run", "record", train_set=data.train_set,
                     val_set=data.val_set, test_set=data.test_set, validation_report=data.report,
                     config_json=rc.outputs["config_json"], tracking_uri=tracking_uri,
                     experiment=rc.outputs["registered_model"], artifact_root=artifact_root, git_commit=git_commit,
                     train_data=train_data, test_data=test_data, data_sha256=data.data_sha256,
                     family_run_id=v.outputs["run_id"], label_set=label_set)
            # the latest peer's link holds every earlier row: waiting for it waits for them all
            peers = [p.strip() for p in recipe.also_beat.split(",") if p.strip() in links]
            ev, g, t, versions[m] = member_branch(
                op, f"{m}: ", rc.outputs["config_json"], rc.outputs["registered_model"], run.output, data,
                tracking_uri, adapt_corpus, git_commit, teacher_version=versions.get(recipe.teacher),
                after=links[max(peers, key=members.index)] if peers else None)
            table = op("summarise_member", f"{m}: Row of the family table", "record", table=table, member=m,
                       registered_model=rc.outputs["registered_model"], gate=g.outputs["Output"],
                       version=versions[m], evaluation=ev.outputs["Output"], lineage=t.outputs["Output"]).output
            links[m] = table
        t = op("family_table", "The family table", "record", rows=table, config_json=first.outputs["config_json"],
               tracking_uri=tracking_uri, family_run_id=v.outputs["run_id"])
        return NamedTuple("FamilyOutputs", [("family", str)])(family=t.outputs["Output"])

    return dsl.pipeline(name=FAMILY_PIPELINE_NAME, description="Train, evaluate, gate and register every member of "
                        "the yanjin model family in one run.")(described(
                            "Train, evaluate, gate and register every member of the model family in one run.",
                            yanjin_family))
