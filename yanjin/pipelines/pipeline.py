"""The family pipeline graph: validate -> domain -> train -> export -> evaluate -> gate -> [register].

Only wiring lives here. The same graph compiles to the YAML the Kubeflow UI uploads and runs
locally under kfp.local; the image is chosen at build time.
"""

from typing import Callable, NamedTuple  # no `from __future__ import annotations`: kfp reads real types

from kfp import dsl, kubernetes

from ..config import ResourceParams, StepResources
from . import steps

PIPELINE_NAME = "yanjin-family"
DEFAULT_IMAGE = "yanjin:0.1.0"  # what infra/Dockerfile builds; pass --image REGISTRY/yanjin:TAG for a cluster


GPU = "nvidia.com/gpu"  # the NVIDIA device plugin's resource; GPU nodes are commonly tainted with it


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


def build_pipeline(image: str = DEFAULT_IMAGE, resources: ResourceParams | None = ResourceParams(),
                   gpu: bool = False) -> Callable:
    def component(fn):
        # kfp is baked into the yanjin image, so no per-step `pip install kfp`
        return dsl.component(fn, base_image=image, install_kfp_package=False)

    resolve_op = component(steps.resolve_config)
    validate_op = component(steps.validate_data)
    adapt_op = component(steps.adapt_domain)
    train_op = component(steps.train_model)
    export_op = component(steps.export_model)
    evaluate_op = component(steps.evaluate_model)
    gate_op = component(steps.gate_candidate)
    register_op = component(steps.register_model)
    no_version_op = component(steps.no_version)

    @dsl.pipeline(name=PIPELINE_NAME, description="Train, evaluate, gate and register one version of the yanjin model family.")
    def yanjin_family(
        train_data: str,
        test_data: str,
        label_set: str = "",
        profile: str = "full",
        member: str = "",
        epochs: int = 0,
        learning_rate: float = 0.0,
        seed: int = -1,
        min_improvement: float = -1.0,
        overrides: str = "",
        tracking_uri: str = "http://mlflow.yanjin:5000",
        registered_model: str = "",
        adapt_corpus: str = "",
        config_json: str = "",
        artifact_root: str = "",
        git_commit: str = "unknown",
    ) -> NamedTuple("PipelineOutputs", [("evaluation", str), ("gate", str), ("version", str)]):
        """Train, evaluate, gate and register one version of the model family.

        Args:
            train_data: Path or URL of the labelled training CSV/Parquet file (columns text, category).
            test_data: Path or URL of the labelled test CSV/Parquet file (never trained on).
            label_set: Optional path or URL of a JSON list of the known labels; empty means the labels seen in training.
            profile: Config profile shipped in the image: tiny (CI), demo (minutes) or full (benchmark quality).
            member: Family member to build: v1 (general), v2 (long inputs), pro (domain-adapted; must beat V1) or lite (Pro distilled, INT8); empty means the profile's, v1.
            epochs: Training epochs; 0 keeps the profile's.
            learning_rate: Peak learning rate of fine-tuning; 0 keeps the profile's.
            seed: Random seed of the split and training; -1 keeps the profile's.
            min_improvement: Accuracy margin a candidate needs over each champion (e.g. 0.005); -1 keeps the profile's.
            overrides: Any other config fields, e.g. data.max_per_class=40;gate.max_ece=0.1 (semicolon-separated).
            tracking_uri: MLflow tracking and registry URI (http://mlflow.yanjin:5000 in the cluster guide; sqlite:///... embedded).
            registered_model: MLflow registered model name; empty means <model_name>-<member>, e.g. banking77-lite.
            adapt_corpus: Comma-separated unlabeled in-domain text sources (CSV/Parquet, JSON lists, folders): Pro adapts to it, Lite keeps its vocabulary; V1/V2 ignore it.
            config_json: Advanced: a whole resolved config as JSON (what `yanjin pipeline submit` sends) used instead of the profile; the fields above still apply on top.
            artifact_root: Artifact location for a new MLflow experiment; empty uses the server default.
            git_commit: Commit of the code that built this run, recorded as a lineage tag.
        """
        rc = resolve_op(config_json=config_json, profile=profile, member=member, epochs=epochs,
                        learning_rate=learning_rate, seed=seed, min_improvement=min_improvement, overrides=overrides,
                        registered_model=registered_model).set_display_name("Resolve the run's config")
        placed(rc, resources and resources.resolve, gpu)
        config_json, registered_model = rc.outputs["config_json"], rc.outputs["registered_model"]
        v = validate_op(train_data=train_data, test_data=test_data, label_set=label_set, config_json=config_json,
                        tracking_uri=tracking_uri, experiment=registered_model, artifact_root=artifact_root,
                        git_commit=git_commit).set_display_name("Validate data (Great Expectations)")
        placed(v, resources and resources.validate, gpu)
        a = adapt_op(test_set=v.outputs["test_set"], adapt_corpus=adapt_corpus, config_json=config_json,
                     tracking_uri=tracking_uri, run_id=v.outputs["run_id"]).set_display_name("Domain text: adaptation (Pro), vocabulary corpus (Lite)")
        placed(a, resources and resources.adapt, gpu)
        t = train_op(train_set=v.outputs["train_set"], val_set=v.outputs["val_set"],
                     validation_report=v.outputs["validation_report"], domain=a.outputs["domain"], config_json=config_json,
                     tracking_uri=tracking_uri, run_id=v.outputs["run_id"]).set_display_name("Fine-tune (Lite: distil + prune)")
        placed(t, resources and resources.train, gpu)
        e = export_op(checkpoint=t.outputs["checkpoint"], config_json=config_json).set_display_name("Export ONNX + parity (Lite: INT8)")
        placed(e, resources and resources.export, gpu)
        ev = evaluate_op(bundle=e.outputs["bundle"], test_set=v.outputs["test_set"], config_json=config_json,
                         tracking_uri=tracking_uri, run_id=v.outputs["run_id"]).set_display_name("Evaluate")
        placed(ev, resources and resources.evaluate, gpu)
        g = gate_op(bundle=e.outputs["bundle"], test_set=v.outputs["test_set"], evaluation=ev.outputs["Output"],
                    lineage=t.outputs["Output"], config_json=config_json, tracking_uri=tracking_uri,
                    registered_model=registered_model).set_display_name("Gate: floors and champion")
        placed(g, resources and resources.gate, gpu)
        with dsl.If(g.outputs["Output"] == "register", name="candidate-passes-gate"):
            r = register_op(bundle=e.outputs["bundle"], evaluation=ev.outputs["Output"], lineage=t.outputs["Output"],
                            config_json=config_json, tracking_uri=tracking_uri, registered_model=registered_model,
                            data_sha256=v.outputs["data_sha256"], split_sha256=v.outputs["split_sha256"],
                            git_commit=git_commit).set_display_name("Register in MLflow (alias challenger)")
            placed(r, resources and resources.register, gpu)
        with dsl.Else(name="candidate-rejected"):
            n = no_version_op().set_display_name("Rejected: nothing registered")
        Outputs = NamedTuple("PipelineOutputs", [("evaluation", str), ("gate", str), ("version", str)])
        return Outputs(evaluation=ev.outputs["Output"], gate=g.outputs["Output"], version=dsl.OneOf(r.output, n.output))

    return yanjin_family
