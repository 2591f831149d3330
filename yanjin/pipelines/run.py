"""Compile the pipeline for Kubeflow, or run it here with kfp.local (in this interpreter's environment,
or with every step in the image: `runner=kfp.local.DockerRunner(...)`)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..components.stages import domain_sources
from ..config import ResourceParams
from ..registry import registered_model_name
from ..state import LocalState  # noqa: F401 - the state folder's layout, where run_local's callers find it
from .pipeline import DEFAULT_IMAGE, build_pipeline


@dataclass
class RunOutcome:
    registered_model: str
    gate: str
    evaluation: dict
    version: str | None


def compile_pipeline(package_path: str | Path, image: str = DEFAULT_IMAGE, resources: ResourceParams = ResourceParams(),
                     gpu: bool = False) -> Path:
    """The YAML the Kubeflow UI uploads; per-step resources from the profile, a GPU for training with `gpu`."""
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(image, resources, gpu), str(package_path))
    return Path(package_path)


def run_local(config, train_data: str, test_data: str, label_set: str, state: LocalState,
              tracking_uri: str | None, git_commit: str, adapt_corpus: list[str] | None = None,
              runner=None, image: str = DEFAULT_IMAGE) -> RunOutcome:
    """Run the whole graph, by default in this interpreter's environment; returns what the gate decided
    and the version the register step made. The domain text defaults to the recipe's (`adapt.domain_text`)."""
    from kfp import local

    state.root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # inherited by every step
    uri = tracking_uri or state.tracking_uri
    local.init(runner=runner or local.SubprocessRunner(use_venv=False), pipeline_root=state.pipeline_root,
               raise_on_error=True)
    name = registered_model_name(config.model_name, config.model.variant)
    run = build_pipeline(image, resources=None)(  # kfp.local ignores Kubernetes resources and deadlines
        train_data=str(train_data), test_data=str(test_data), label_set=str(label_set or ""),
        config_json=config.to_json(), tracking_uri=uri, registered_model=name,
        artifact_root="" if tracking_uri else state.artifact_root, git_commit=git_commit,
        adapt_corpus=",".join(adapt_corpus if adapt_corpus is not None
                              else domain_sources(config.adapt.domain_text, train_data)
                              if config.recipe.uses_domain_text else []),
    )
    return RunOutcome(name, run.outputs["gate"], json.loads(run.outputs["evaluation"]), run.outputs["version"] or None)
