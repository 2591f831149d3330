"""Compile the pipeline for Kubeflow, or run it here with kfp.local (in this interpreter's environment,
or with every step in the image: `runner=kfp.local.DockerRunner(...)`)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..components.report import family_markdown
from ..components.stages import domain_sources
from ..config import ResourceParams
from ..registry import registered_model_name
from ..state import LocalState  # noqa: F401 - the state folder's layout, where run_local's callers find it
from .pipeline import DEFAULT_IMAGE, build_family_pipeline, build_pipeline


@dataclass
class RunOutcome:
    registered_model: str
    gate: str
    evaluation: dict
    version: str | None


@dataclass
class FamilyOutcome:
    members: dict[str, RunOutcome]   # in build order; evaluation is the member's row of the family table
    markdown: str


def compile_pipeline(package_path: str | Path, image: str = DEFAULT_IMAGE, resources: ResourceParams = ResourceParams(),
                     gpu: bool = False, family: bool = False) -> Path:
    """The YAML the Kubeflow UI uploads: one member per run, or the whole family (`family`); per-step
    resources from the profile, a GPU for training with `gpu`."""
    from kfp import compiler

    build = build_family_pipeline if family else build_pipeline
    compiler.Compiler().compile(build(image, resources, gpu), str(package_path))
    return Path(package_path)


def _start_local(state: LocalState, runner) -> None:
    from kfp import local

    state.root.mkdir(parents=True, exist_ok=True, mode=0o700)   # the state holds customer texts: its owner's alone
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # inherited by every step
    local.init(runner=runner or local.SubprocessRunner(use_venv=False), pipeline_root=state.pipeline_root,
               raise_on_error=True)


def _corpus(config, train_data: str, adapt_corpus: list[str] | None, family: bool = False) -> str:
    """The domain text: the caller's, else the recipe's (`adapt.domain_text`) when a member built uses it."""
    if adapt_corpus is not None:
        return ",".join(adapt_corpus)
    if family or config.recipe.uses_domain_text:
        return ",".join(domain_sources(config.adapt.domain_text, train_data))
    return ""


def run_local(config, train_data: str, test_data: str, label_set: str, state: LocalState,
              tracking_uri: str | None, git_commit: str, adapt_corpus: list[str] | None = None,
              runner=None, image: str = DEFAULT_IMAGE, teacher_version: str = "", register: bool = True) -> RunOutcome:
    """Run the whole graph, by default in this interpreter's environment; returns what the gate decided
    and the version the register step made. The domain text defaults to the recipe's (`adapt.domain_text`);
    a student distils `teacher_version` ("": the teacher's champion); `register` off registers nothing."""
    _start_local(state, runner)
    name = registered_model_name(config.model_name, config.model.variant)
    run = build_pipeline(image, resources=None)(  # kfp.local ignores Kubernetes resources and deadlines
        train_data=str(train_data), test_data=str(test_data), label_set=str(label_set or ""),
        config_json=config.to_json(), tracking_uri=tracking_uri or state.tracking_uri, registered_model=name,
        artifact_root="" if tracking_uri else state.artifact_root, git_commit=git_commit,
        adapt_corpus=_corpus(config, train_data, adapt_corpus), teacher_version=teacher_version, register=register,
    )
    return RunOutcome(name, run.outputs["gate"], json.loads(run.outputs["evaluation"]), run.outputs["version"] or None)


def run_family_local(config, train_data: str, test_data: str, label_set: str, state: LocalState,
                     tracking_uri: str | None, git_commit: str, adapt_corpus: list[str] | None = None,
                     runner=None, image: str = DEFAULT_IMAGE, members: list[str] | None = None) -> FamilyOutcome:
    """The family graph (every member of the family table in one run, or `members` of it) under kfp.local;
    `config` is any member's, each branch resolves its own member from it."""
    _start_local(state, runner)
    run = build_family_pipeline(image, resources=None, members=members)(
        train_data=str(train_data), test_data=str(test_data), label_set=str(label_set or ""),
        config_json=config.to_json(), tracking_uri=tracking_uri or state.tracking_uri,
        artifact_root="" if tracking_uri else state.artifact_root, git_commit=git_commit,
        adapt_corpus=_corpus(config, train_data, adapt_corpus, family=True),
    )
    rows = json.loads(run.outputs["family"])
    members = {m: RunOutcome(r["registered_model"], r["gate"], r, r["version"] or None) for m, r in rows.items()}
    return FamilyOutcome(members, family_markdown(rows, config.profile))
