"""A training stage as a Kubeflow Trainer TrainJob: N nodes x M GPUs running the ranks' entrypoint.

The pipeline step stays small: it stages the job (the stage, its arguments, the resolved config and
its input files) as artifacts of the version's MLflow run, creates a TrainJob that references the
cluster's `torch-distributed` ClusterTrainingRuntime (which sets torchrun's PET_* rendezvous
variables in every node), streams rank 0's log, and waits. Every rank downloads the staged inputs,
trains its shard, and rank 0 logs the result where the one-machine path logs it (checkpoint or
adapted encoder, and the result JSON), so the step continues exactly as after a local torchrun.

The manifest is validated before it is sent against the Trainer's own API models
(`kubeflow-trainer-api`, generated from the CRD's OpenAPI schema): types, required fields, and a
lossless round trip, so a misspelled or misplaced field fails here, not in the operator.
"""
from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .. import registry as R
from ..config import PipelineConfig
from .launch import JOB_FILE, RESULT_FILE, torchrun_command

API_GROUP, API_VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
CLIENT_SECRET = "yanjin-clients"      # MLflow credentials of the pipeline's steps (infra/README.md)
STAGED_INPUTS = ("train_set", "val_set", "test_set", "domain_dir")   # paths a stage reads
LOCAL_OUTPUTS = ("out_dir",)                                        # folders a stage writes


class TrainJobError(RuntimeError):
    """The Trainer job could not be created, failed, or ran past its deadline; the message says which."""


class ManifestInvalid(ValueError):
    """The rendered TrainJob does not match the Trainer's schema."""


@dataclass(frozen=True)
class JobShape:
    name: str
    namespace: str
    image: str
    nodes: int
    procs_per_node: int
    gpus_per_node: int
    cpu: str
    memory: str
    deadline_s: int


def job_name(stage: str, run_id: str) -> str:
    """DNS-1035 label: lower case, at most 63 characters, one per stage and run."""
    return re.sub(r"[^a-z0-9-]", "-", f"yanjin-{stage.replace('_', '-')}-{run_id[:12]}".lower())[:63].rstrip("-")


def shape_for(stage: str, run_id: str, cfg: PipelineConfig, image: str, namespace: str) -> JobShape:
    d, res = cfg.distributed, cfg.resources.train if stage == "train_member" else cfg.resources.adapt
    return JobShape(job_name(stage, run_id), d.namespace or namespace, d.image or image, d.workers,
                    d.gpus_per_worker or d.ranks, d.gpus_per_worker, res.cpu_limit, res.memory_limit,
                    d.timeout_minutes * 60)


def render(shape: JobShape, tracking_uri: str, run_id: str, stage: str, max_restarts: int) -> dict:
    """The TrainJob: `torchrun` (rendezvous from the runtime's PET_* variables) running the ranks'
    entrypoint over the job staged in the MLflow run."""
    limits = {"cpu": shape.cpu, "memory": shape.memory}
    if shape.gpus_per_node:
        limits["nvidia.com/gpu"] = str(shape.gpus_per_node)
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "TrainJob",
        "metadata": {"name": shape.name, "namespace": shape.namespace,
                     "labels": {"app.kubernetes.io/part-of": "yanjin", "yanjin/stage": stage.replace("_", "-")}},
        "spec": {
            "runtimeRef": {"name": "torch-distributed", "kind": "ClusterTrainingRuntime",
                           "apiGroup": API_GROUP},
            "activeDeadlineSeconds": shape.deadline_s,
            "trainer": {
                "image": shape.image,
                "command": torchrun_command(["--from-run", run_id, stage], shape.procs_per_node, max_restarts,
                                            python="python3", standalone=False),
                "env": [{"name": "MLFLOW_TRACKING_URI", "value": tracking_uri},
                        {"name": "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "value": "false"},
                        # the pipeline's MLflow user (infra/README.md, secrets), never a password in the manifest
                        *({"name": f"MLFLOW_TRACKING_{var}", "valueFrom": {"secretKeyRef": {
                            "name": CLIENT_SECRET, "key": f"mlflow-{var.lower()}", "optional": True}}}
                          for var in ("USERNAME", "PASSWORD"))],
                "numNodes": shape.nodes,
                "numProcPerNode": shape.procs_per_node,
                "resourcesPerNode": {"limits": limits, "requests": limits},
            },
        },
    }


def validate(manifest: dict) -> None:
    """Against the Trainer's API models: a type error or missing field names itself; a field the
    schema does not know is lost in the round trip and named here."""
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob
    from pydantic import ValidationError

    try:
        parsed = TrainerV1alpha1TrainJob.from_dict(manifest)
    except ValidationError as e:
        raise ManifestInvalid(f"TrainJob {manifest.get('metadata', {}).get('name')}: {e}") from None
    lost = _differences(manifest, parsed.to_dict())
    if lost:
        raise ManifestInvalid(f"TrainJob {manifest['metadata']['name']}: not in the Trainer's schema: {', '.join(lost)}")


_MISSING = object()


def _differences(sent: object, kept: object, where: str = "") -> list[str]:
    if isinstance(sent, dict) and isinstance(kept, dict):
        return [p for k, v in sent.items() for p in _differences(v, kept.get(k, _MISSING), f"{where}.{k}".lstrip("."))]
    if isinstance(sent, list) and isinstance(kept, list) and len(sent) == len(kept):
        return [p for i, (a, b) in enumerate(zip(sent, kept)) for p in _differences(a, b, f"{where}[{i}]")]
    return [] if sent == kept else [where]


def job_state(status: dict | None) -> tuple[str, str]:
    """(running | complete | failed, reason) from a TrainJob's status conditions."""
    for c in (status or {}).get("conditions", []):
        if c.get("status") != "True":
            continue
        if c.get("type") == "Complete":
            return "complete", c.get("message", "")
        if c.get("type") == "Failed":
            return "failed", f"{c.get('reason', 'Failed')}: {c.get('message', '')}".strip(": ")
    return "running", ""


# -- staging through MLflow --------------------------------------------------------------------------------
def stage_job(stage: str, kwargs: dict, cfg: PipelineConfig, tracking_uri: str, run_id: str) -> None:
    """The job and its input files as artifacts of the run: what every node downloads."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)

    def stage_path(path: Path, dest: str) -> str:
        log = client.log_artifacts if path.is_dir() else client.log_artifact
        log(run_id, str(path), f"{R.DISTRIBUTED_JOB_ARTIFACT}/{dest}")
        return dest + ("" if path.is_dir() else f"/{path.name}")

    staged = dict(kwargs)
    for key in STAGED_INPUTS:
        if kwargs.get(key) and Path(kwargs[key]).exists():
            staged[key] = stage_path(Path(kwargs[key]), f"inputs/{key}")
    if kwargs.get("sources"):  # the domain text Pro adapts on: files or folders of the step's filesystem
        staged["sources"] = [stage_path(Path(src), f"inputs/sources/{i}") for i, src in enumerate(kwargs["sources"])]
    client.log_text(run_id, json.dumps({"stage": stage, "kwargs": staged, "config": cfg.to_json()}),
                    f"{R.DISTRIBUTED_JOB_ARTIFACT}/{JOB_FILE}")


def fetch_job(tracking_uri: str, run_id: str, into: Path) -> dict:
    """On a node: the staged job with its inputs downloaded under `into` and its outputs there too."""
    import mlflow

    root = Path(mlflow.MlflowClient(tracking_uri).download_artifacts(run_id, R.DISTRIBUTED_JOB_ARTIFACT, str(into)))
    job = json.loads((root / JOB_FILE).read_text())
    for key in STAGED_INPUTS:
        if key in job["kwargs"] and str(job["kwargs"][key]).startswith("inputs/"):
            job["kwargs"][key] = str(root / job["kwargs"][key])
    if "sources" in job["kwargs"]:
        job["kwargs"]["sources"] = [str(root / s) for s in job["kwargs"]["sources"]]
    for key in LOCAL_OUTPUTS:
        if key in job["kwargs"]:
            job["kwargs"][key] = str(into / "outputs" / key)
    job["kwargs"]["tracking_uri"] = tracking_uri
    return job


# -- on the cluster -----------------------------------------------------------------------------------------
def run_trainjob(stage: str, kwargs: dict, cfg: PipelineConfig) -> dict:
    """Create the TrainJob, stream rank 0's log, wait; then fetch what rank 0 logged into the step's
    own output folder. Fails naming the job's failure, or the deadline."""
    import mlflow
    from kubernetes import client as k8s, config as kube

    tracking_uri, run_id = kwargs["tracking_uri"], kwargs["run_id"]
    try:
        kube.load_incluster_config()
        namespace = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip()
        image = _own_image(k8s.CoreV1Api(), namespace)
    except kube.ConfigException:
        kube.load_kube_config()
        namespace, image = "default", ""
    shape = shape_for(stage, run_id, cfg, image, namespace)
    if not shape.image:
        raise TrainJobError("distributed.image is empty and this step is not in a pod; name the trainer image")
    manifest = render(shape, tracking_uri, run_id, stage, cfg.distributed.max_restarts)
    validate(manifest)
    stage_job(stage, kwargs, cfg, tracking_uri, run_id)
    api = k8s.CustomObjectsApi()
    try:
        api.create_namespaced_custom_object(API_GROUP, API_VERSION, shape.namespace, PLURAL, manifest)
    except k8s.ApiException as e:
        raise TrainJobError(f"cannot create TrainJob {shape.name} in {shape.namespace}: {e.status} {e.reason}; "
                            f"is Kubeflow Trainer installed, and may this step's service account create trainjobs?")
    print(f"{stage}: TrainJob {shape.namespace}/{shape.name}, {shape.nodes} node(s) x "
          f"{shape.procs_per_node} rank(s)" + (f" on {shape.gpus_per_node} GPU(s)" if shape.gpus_per_node else ""),
          flush=True)
    _wait(api, k8s.CoreV1Api(), shape)
    client = mlflow.MlflowClient(tracking_uri)
    result = json.loads(Path(client.download_artifacts(run_id, f"{R.DISTRIBUTED_JOB_ARTIFACT}/{RESULT_FILE}")).read_text())
    if kwargs.get("out_dir"):  # where the step's next lines expect it, as after a local torchrun
        artifact = R.CHECKPOINT_ARTIFACT if stage == "train_member" else R.ADAPTED_ENCODER_ARTIFACT
        shutil.copytree(client.download_artifacts(run_id, artifact), kwargs["out_dir"], dirs_exist_ok=True)
    return result


def _own_image(core, namespace: str) -> str:
    import socket

    pod = core.read_namespaced_pod(socket.gethostname(), namespace)
    return pod.spec.containers[0].image


def _wait(api, core, shape: JobShape, poll_s: float = 10.0, grace_s: float = 300.0) -> None:
    """Until the job completes; TrainJobError when it fails or outlives its deadline (plus `grace_s`
    for the operator to mark it failed itself)."""
    deadline, streamed = time.monotonic() + shape.deadline_s + grace_s, False
    while True:
        job = api.get_namespaced_custom_object(API_GROUP, API_VERSION, shape.namespace, PLURAL, shape.name)
        state, reason = job_state(job.get("status"))
        if state == "complete":
            return
        if state == "failed":
            raise TrainJobError(f"TrainJob {shape.namespace}/{shape.name} failed: {reason} "
                                f"(kubectl -n {shape.namespace} describe trainjob {shape.name})")
        if time.monotonic() >= deadline:
            raise TrainJobError(f"TrainJob {shape.namespace}/{shape.name} did not finish within "
                                f"{shape.deadline_s // 60} minutes (distributed.timeout_minutes)")
        if not streamed:
            streamed = _stream_rank0(core, shape)
        time.sleep(poll_s)


def _stream_rank0(core, shape: JobShape) -> bool:
    """Follow node 0's log into the step's log until it ends; False while the pod is not running yet."""
    pods = core.list_namespaced_pod(shape.namespace, label_selector=f"{JOBSET_LABEL}={shape.name},{INDEX_LABEL}=0")
    running = [p for p in pods.items if p.status.phase in ("Running", "Succeeded", "Failed")]
    if not running:
        return False
    for line in core.read_namespaced_pod_log(running[0].metadata.name, shape.namespace, follow=True,
                                             _preload_content=False).stream():
        print(line.decode(errors="replace"), end="", flush=True)
    return True
