"""Rebuild a registered version from its record alone and compare: can an auditor get it back?

The record is what registration stored: the resolved config (recipe, seeds), the data digest, the
code commit, the teacher version and the domain text. The rebuild runs the same member pipeline
under kfp.local with registration off, in a run tagged as the reproduction of that version, and
its test figures are compared with the recorded ones.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .. import registry as R
from ..components.data import local_file, sha256_files
from ..config import PipelineConfig
from ..state import LocalState

COMPARED = ("accuracy", "macro_f1", "ece")   # what must match
SHOWN = ("onnx_bytes", "latency_ms_p50_b1")    # shown, not judged: latency is the machine's, size the exporter's
DEFAULT_TOLERANCE = 0.01                      # absolute, per compared figure


class ReproduceError(RuntimeError):
    """The version cannot be rebuilt from its record as asked: nothing was run."""


@dataclass
class Reproduction:
    model: str
    version: str
    reproduced: bool
    tolerance: float
    max_metric_delta: float
    figures: dict[str, dict]            # name -> {recorded, rebuilt, delta, judged}
    differences: list[str]              # compared figures beyond the tolerance, in words
    commit: dict                        # recorded, running, same
    data: dict                          # the files used, verified against data_sha256
    run_id: str                         # the rebuild's MLflow run
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def locate_data(recorded_sha: str, train: Path, test: Path, labels: Path | None) -> dict:
    """The data files whose digest is the recorded one: the label list given, else categories.json beside
    the training file, else none (digests cover it only when the run had one)."""
    for path in (train, test):
        if not path.is_file():
            raise ReproduceError(f"{path}: not found; pass --train/--test (or --data) with the files this version "
                                 f"was trained on (sha256 of all files {recorded_sha})")
    candidates = [labels] if labels else [train.parent / "categories.json", None]
    tried = []
    for candidate in candidates:
        if candidate is not None and not candidate.is_file():
            continue
        files = [train, test] + ([candidate] if candidate else [])
        digest = sha256_files(files)
        if digest == recorded_sha:
            return {"train": str(train), "test": str(test), "labels": str(candidate or ""), "sha256": digest}
        tried.append(f"{', '.join(str(f) for f in files)} -> {digest}")
    raise ReproduceError(f"the data differs from the version's record (data_sha256 {recorded_sha}); tried: "
                         + "; ".join(tried) + ". Nothing was run")


def compare(recorded: R.VersionTags, rebuilt: dict, tolerance: float) -> tuple[dict, list[str], float]:
    figures, differences, worst = {}, [], 0.0
    for name in COMPARED + SHOWN:
        before = getattr(recorded, name)
        if not before:
            continue
        delta = float(rebuilt[name]) - float(before)
        judged = name in COMPARED
        figures[name] = {"recorded": float(before), "rebuilt": float(rebuilt[name]), "delta": delta, "judged": judged}
        if judged:
            worst = max(worst, abs(delta))
            if abs(delta) > tolerance:
                differences.append(f"{name}: recorded {float(before):.4f}, rebuilt {float(rebuilt[name]):.4f} "
                                   f"(delta {delta:+.4f} beyond ±{tolerance})")
    return figures, differences, worst


def reproduce(model: str, version: str, state: LocalState, tracking_uri: str | None, running_commit: str,
              train: Path | None = None, test: Path | None = None, labels: Path | None = None,
              tolerance: float = DEFAULT_TOLERANCE, same_commit: bool = False, runner=None) -> Reproduction:
    """Rebuild `model` version `version` through the member pipeline without registering and compare.
    A different code commit is refused with `same_commit`, else noted; other data is always refused."""
    from .run import run_local

    uri = tracking_uri or state.tracking_uri
    client = R.client(uri)
    mv = client.get_model_version(model, version)
    tags = R.VersionTags.from_tags(dict(mv.tags))
    if not (tags.config and tags.data_sha256):
        raise ReproduceError(f"{model} v{version} has no recorded config or data digest: it cannot be rebuilt "
                             f"from its record")
    params = client.get_run(mv.run_id).data.params
    recorded = {k: local_file(params.get(k, ""), uri) if params.get(k) else "" for k in
                (R.RUN_PARAM_TRAIN, R.RUN_PARAM_TEST, R.RUN_PARAM_LABELS)}   # paths, or the store's URIs
    data = locate_data(tags.data_sha256, Path(train or recorded[R.RUN_PARAM_TRAIN]),
                       Path(test or recorded[R.RUN_PARAM_TEST]),
                       labels or (Path(recorded[R.RUN_PARAM_LABELS]) if recorded[R.RUN_PARAM_LABELS] else None))
    commit = {"recorded": tags.git_commit, "running": running_commit, "same": tags.git_commit == running_commit}
    notes = []
    if not commit["same"]:
        if same_commit:
            raise ReproduceError(f"{model} v{version} was built by commit {tags.git_commit}; this is {running_commit}. "
                                 f"Check out {tags.git_commit} (or drop --same-commit to rebuild with this code)")
        notes.append(f"code differs: built by {tags.git_commit}, rebuilt by {running_commit}")
    if tags.git_commit.endswith("-dirty"):
        notes.append("the version was built from a checkout with uncommitted changes: its code cannot be matched exactly")
    config = PipelineConfig.from_json(tags.config)
    if tags.student_init_version:  # the exact member version the student started from, not today's champion
        member, _ = config.compress.student_source
        config = replace(config, compress=replace(config.compress, student_from=f"{member}:{tags.student_init_version}"))
    corpus = params.get(R.RUN_PARAM_CORPUS)
    start = time.perf_counter()
    outcome = run_local(config, data["train"], data["test"], data["labels"], state, tracking_uri, running_commit,
                        adapt_corpus=corpus.split(",") if corpus else None, runner=runner,
                        teacher_version=tags.teacher_version, register=False)
    seconds = time.perf_counter() - start
    figures, differences, worst = compare(tags, outcome.evaluation, tolerance)
    result = Reproduction(model, version, not differences, tolerance, worst, figures, differences, commit, data,
                          outcome.evaluation["run_id"], seconds, notes)
    client.set_tag(result.run_id, R.RUN_REPRODUCES, f"{model}/{version}")
    client.log_text(result.run_id, json.dumps(result.to_dict(), indent=2), R.REPRODUCTION)
    return result
