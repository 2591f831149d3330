"""Compile the pipeline for Kubeflow, or run it here with kfp.local's SubprocessRunner."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..components.register import registered_model_name
from .pipeline import DEFAULT_IMAGE, build_pipeline


@dataclass(frozen=True)
class LocalState:
    """Everything the embedded mode keeps lives under one folder (default ./.yanjin)."""

    root: Path

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{(self.root / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> str:
        return str((self.root / "mlartifacts").resolve())

    @property
    def pipeline_root(self) -> str:
        return str((self.root / "kfp").resolve())


@dataclass
class RunOutcome:
    registered_model: str
    gate: str
    evaluation: dict
    version: str | None


def compile_pipeline(package_path: str | Path, image: str = DEFAULT_IMAGE) -> Path:
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(image), str(package_path))
    return Path(package_path)


def run_local(config, train_data: str, test_data: str, label_set: str, state: LocalState,
              tracking_uri: str | None, git_commit: str, adapt_corpus: list[str] | None = None) -> RunOutcome:
    """Run the whole graph in this interpreter's environment; returns what the gate decided."""
    import mlflow
    from kfp import local

    state.root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # inherited by every step
    uri = tracking_uri or state.tracking_uri
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=state.pipeline_root,
               raise_on_error=True)
    name = registered_model_name(config.model_name, config.model.variant)
    run = build_pipeline()(
        train_data=str(train_data), test_data=str(test_data), label_set=str(label_set or ""),
        config_json=config.to_json(), tracking_uri=uri, registered_model=name,
        artifact_root="" if tracking_uri else state.artifact_root, git_commit=git_commit,
        adapt_corpus=",".join(str(c) for c in (adapt_corpus if adapt_corpus is not None else [train_data])),
    )
    evaluation = json.loads(run.outputs["evaluation"])
    gate = run.outputs["gate"]
    version = None
    if gate == "register":
        mlflow.set_tracking_uri(uri)
        versions = mlflow.MlflowClient().search_model_versions(f"run_id='{evaluation['run_id']}'")
        version = str(versions[0].version) if versions else None
    return RunOutcome(name, gate, evaluation, version)


def git_commit(cwd: str | Path | None = None) -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("YANJIN_GIT_COMMIT", "unknown")
