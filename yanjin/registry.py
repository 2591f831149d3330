"""The MLflow registry's names and the operations on them, in one place.

Everything yanjin keeps in MLflow is named here: the aliases, every tag key on runs, versions and
registered models, the artifact paths and the files of a bundle or checkpoint. Pipelines, serving,
release, monitoring and benchmarks go through this module; no alias or tag literal appears
anywhere else (tests/code/test_registry_names.py checks).

Downloads are verified: a bundle against the `artifact_sha256` its registration recorded, the
PyTorch checkpoint against `checkpoint_sha256`, the logged training split against
`training_data_sha256`. A mismatch is a LineageError naming the version, and nothing is loaded.

Aliases, not stages (deprecated): `challenger` goes to every newly registered version, and the
first version of a registered model is also `champion`. Promotion beyond that is a human step
(release/promotion.py, with compare-and-set).

This module imports no other yanjin module and imports MLflow only inside the functions that call it.
"""
from __future__ import annotations

import contextvars
import getpass
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

# -- aliases -------------------------------------------------------------------------------------
CHAMPION, CHALLENGER = "champion", "challenger"

# -- files of a checkpoint and of an exported bundle ---------------------------------------------
CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_SPEC = "model_config.json"
LABELS_FILE = "labels.json"
TOKENIZER_FILE = "tokenizer.json"
ONNX_FILE = "model.onnx"
BUNDLE_FILES = (ONNX_FILE, TOKENIZER_FILE, LABELS_FILE, CHECKPOINT_SPEC)
CHECKPOINT_FILES = (CHECKPOINT_WEIGHTS, CHECKPOINT_SPEC, LABELS_FILE, TOKENIZER_FILE)

# -- artifact paths of a training run -------------------------------------------------------------
MODEL_ARTIFACT = "model"                    # the registered ONNX bundle (mlflow.onnx flavour)
CHECKPOINT_ARTIFACT = "checkpoint"          # PyTorch checkpoint: Lite's teacher weights, drift embeddings
TRAINING_DATA_ARTIFACT = "training_data"    # training split (parquet): the drift monitor's reference
TRAINING_DATA_FILE = "train_set.parquet"
VALIDATION_REPORT = "validation/report.json"
ADAPTED_ENCODER_ARTIFACT = "adapted_encoder"
DISTRIBUTED_JOB_ARTIFACT = "distributed"   # a Trainer job staged for its nodes: job.json, inputs/, result.json
EVALUATION_ARTIFACT = "evaluation"
GATE_DECISION = "gate/decision.json"
FAMILY_RESULT = "family/family.json"        # `yanjin bench family` logs its table here
FAMILY_RUN_TABLE = "family/members.json"    # a family pipeline run: what it made of each member
FAMILY_RUN_MARKDOWN = "family/members.md"
REPRODUCTION = "reproduce/comparison.json"  # a `yanjin reproduce` run: recorded vs rebuilt figures
CARD_MARKDOWN, CARD_HTML = "card/model_card.md", "card/model_card.html"   # the model card, logged at registration

# -- tags of a training run -----------------------------------------------------------------------
RUN_PIPELINE = "pipeline"                   # "yanjin" on every run the pipeline made
RUN_VALIDATION = "validation"               # passed | failed
RUN_GATE = "gate"                           # register | reject
RUN_FAMILY = "family_run_id"                # a member run of a family pipeline: the run that validated its data
RUN_PARAM_TRAIN, RUN_PARAM_TEST = "data.train", "data.test"   # run params: the data files as given
RUN_PARAM_CORPUS = "adapt.corpus"           # run param: the domain text a Pro adapted on / a Lite kept
RUN_REPRODUCES = "reproduces"               # a `yanjin reproduce` run: the <model>/<version> it rebuilt
RUN_VERDICT = "verdict"                     # a drift check's run: drift | no_drift | insufficient_data

# -- tags of a registered model (state every replica and controller shares) ------------------------
SHARE_TAG = "yanjin.challenger_share"       # the challenger's traffic share, written by a rollout
ROLLOUT_TAG = "yanjin.rollout"              # the running or last rollout (JSON)
MONITOR_STATE_TAG = "yanjin.monitor_state"  # drift trigger and quarterly schedule (JSON)
AUDIT_PREFIX = "yanjin.audit."              # yanjin.audit.NNNNNN: one alias change (JSON)
LOCK_PREFIX = "yanjin-lock--"               # a registered model of this name is a model's alias lock
LOCK_OWNER, LOCK_ACQUIRED = "owner", "acquired_at"

# -- tags of a model version, beyond VersionTags ----------------------------------------------------
ROLLOUT_OUTCOME = "rollout_outcome"         # "rolled_back" when an A/B rollout rejected the version
ROLLED_BACK = "rolled_back"
ROLLOUT_REASON = "rollout_reason"
DRIFT_THRESHOLDS = "drift_thresholds"       # calibrated per-column thresholds (JSON)
RETRAINING_REASON, FEEDBACK_ROWS, FEEDBACK_DROPPED = "retraining_reason", "feedback_rows", "feedback_dropped"
GATE_PASSED = "passed"

METRIC_TAGS = ("accuracy", "macro_f1", "ece", "latency_ms_p50_b1", "onnx_bytes")


@dataclass(frozen=True)
class VersionTags:
    """What a registered version records about itself: lineage, recipe, gate, figures, digests."""
    variant: str = ""
    profile: str = ""
    config: str = ""             # the resolved PipelineConfig as JSON, recipe included
    data_sha256: str = ""        # the data files as given (train, test, label list)
    git_commit: str = ""
    gate: str = GATE_PASSED
    artifact_sha256: str = ""    # the stored ONNX bundle (set at registration, from what was stored)
    checkpoint_sha256: str = ""  # the logged PyTorch checkpoint
    training_data_sha256: str = ""  # the logged training split
    test_sha256: str = ""        # the test rows its figures were measured on (data.frame_sha256)
    accuracy: str = ""
    macro_f1: str = ""
    ece: str = ""
    latency_ms_p50_b1: str = ""
    onnx_bytes: str = ""
    teacher_model: str = ""      # compressed members: the exact teacher version they learnt from
    teacher_version: str = ""
    teacher_run_id: str = ""
    student_init_model: str = ""    # a student started from another member's checkpoint (compress.student_from)
    student_init_version: str = ""

    def to_tags(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items() if v != ""}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> "VersionTags":
        known = {f.name for f in fields(cls)}
        return cls(**{k: tags.get(k, "") for k in known})  # absent is "", never a default like gate=passed


@dataclass(frozen=True)
class Downloaded:
    """One registered version on local disk, its bundle verified."""
    model: str
    version: str
    bundle_dir: Path
    tags: VersionTags
    run_id: str = ""


class LineageError(RuntimeError):
    """A registered version lacks what a later step needs, or its stored bytes were altered."""


class MissingArtifact(LineageError):
    """The version's run logged no such artifact (registered before it existed): nothing to verify or load."""


class TamperedArtifact(LineageError):
    """Stored bytes that no longer hash to the digest recorded at registration: never loaded."""


# -- digests --------------------------------------------------------------------------------------
def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def bundle_file(bundle_dir: str | Path, name: str) -> Path:
    """A bundle file, found at the top level or under MLflow's `extra_files/` when downloaded."""
    root = Path(bundle_dir)
    for candidate in (root / name, root / "extra_files" / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{root}: bundle has no {name}")


def files_sha256(folder: str | Path, names: tuple[str, ...]) -> str:
    """One digest over named files, so tampering with any of them is detected."""
    lines = [f"{name} {sha256_file(bundle_file(folder, name))}" for name in names]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def bundle_sha256(bundle_dir: str | Path) -> str:
    return files_sha256(bundle_dir, BUNDLE_FILES)


def checkpoint_sha256(ckpt_dir: str | Path) -> str:
    return files_sha256(ckpt_dir, CHECKPOINT_FILES)


def verify_bundle(found: Downloaded) -> Downloaded:
    """Re-check a downloaded bundle on disk (e.g. after it sat in a cache) against its registered digest."""
    actual = bundle_sha256(found.bundle_dir)
    if actual != found.tags.artifact_sha256:
        raise TamperedArtifact(f"{found.model} version {found.version}: artifact sha256 {actual} does not match the "
                           f"registered {found.tags.artifact_sha256 or '(none)'}; the stored model was altered")
    return found


def _check(what: str, model: str, version: str, expected: str, actual: str, tag: str) -> None:
    if not expected:
        log.warning("%s v%s: no %s tag (registered before it existed); its %s is not verified",
                    model, version, tag, what)
    elif expected != actual:
        raise TamperedArtifact(f"{model} version {version}: {what} sha256 {actual} does not match the registered "
                           f"{expected}; the stored {what} was altered")


# -- names ----------------------------------------------------------------------------------------
def registered_model_name(base: str, variant: str) -> str:
    """One registered model per family member, e.g. banking77-v1."""
    return f"{base}-{variant}"


def model_uri(model: str, version: str | None = None, alias: str = CHAMPION) -> str:
    return f"models:/{model}/{version}" if version else f"models:/{model}@{alias}"


def lock_name(model: str) -> str:
    return f"{LOCK_PREFIX}{model}"


def audit_tag(seq: int, writer: str) -> str:
    """yanjin.audit.000042.<writer>: the writer's own suffix, so two entries can never share a key."""
    return f"{AUDIT_PREFIX}{seq:06d}.{writer}"


def rollouts_experiment(model: str) -> str:
    return f"{model}-rollouts"


def monitoring_experiment(model: str) -> str:
    return f"{model}-monitoring"


def family_experiment(base: str) -> str:
    return f"{base}-family"


# -- client operations ----------------------------------------------------------------------------
def client(tracking_uri: str | None = None):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri) if tracking_uri else MlflowClient()


def ensure_experiment(name: str, artifact_root: str | None = None, tracking_uri: str | None = None) -> str:
    """Experiment id, created with artifacts under `artifact_root` (embedded mode) if new."""
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = Path(artifact_root).resolve().as_uri() if artifact_root else None
    return c.create_experiment(name, artifact_location=location)


def alias_version(mlflow_client, model: str, alias: str) -> str | None:
    """The version `model@alias` points at, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow_client.get_model_version_by_alias(model, alias).version)
    except MlflowException:
        return None


def version_tags(mlflow_client, model: str, version: str) -> VersionTags:
    return VersionTags.from_tags(dict(mlflow_client.get_model_version(model, version).tags))


def download_version(model: str, version: str, download_to: str | Path, tracking_uri: str | None = None) -> Downloaded:
    """One registered version's ONNX bundle, refused unless it hashes to its `artifact_sha256`."""
    import mlflow

    c = client(tracking_uri)
    mv = c.get_model_version(model, version)
    tags = VersionTags.from_tags(dict(mv.tags))
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts(model_uri(model, str(mv.version)), dst_path=str(download_to)))
    return verify_bundle(Downloaded(model, str(mv.version), local, tags, mv.run_id))


def find_champion(model: str, download_to: str | Path, alias: str = CHAMPION,
                  tracking_uri: str | None = None) -> Downloaded | None:
    """The version behind `model@alias`, downloaded and verified; None when there is none."""
    version = alias_version(client(tracking_uri), model, alias)
    return None if version is None else download_version(model, version, download_to, tracking_uri)


def download_checkpoint(found: Downloaded, download_to: str | Path, tracking_uri: str | None = None) -> Path:
    """The PyTorch checkpoint the version's training run logged, refused unless it hashes to its tag."""
    from mlflow.exceptions import MlflowException

    try:
        path = Path(client(tracking_uri).download_artifacts(found.run_id, CHECKPOINT_ARTIFACT, str(download_to)))
    except (MlflowException, OSError) as e:
        raise MissingArtifact(f"{found.model} version {found.version} (run {found.run_id}) has no "
                           f"'{CHECKPOINT_ARTIFACT}' artifact to start from; re-run its pipeline: {e}") from e
    _check("checkpoint", found.model, found.version, found.tags.checkpoint_sha256, checkpoint_sha256(path),
           "checkpoint_sha256")
    return path


def download_training_split(mlflow_client, model: str, version: str, download_to: str | Path) -> Path | None:
    """The training split the version's run logged (parquet), verified; None when none was logged."""
    from mlflow.exceptions import MlflowException

    mv = mlflow_client.get_model_version(model, version)
    try:
        folder = Path(mlflow_client.download_artifacts(mv.run_id, TRAINING_DATA_ARTIFACT, str(download_to)))
    except (MlflowException, OSError):
        return None
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if not files:
        return None
    _check("training split", model, version, VersionTags.from_tags(dict(mv.tags)).training_data_sha256,
           sha256_file(files[0]), "training_data_sha256")
    return files[0]


def register_bundle(bundle_dir: str | Path, model: str, run_id: str, tags: VersionTags) -> str:
    """Log the ONNX bundle to the run, register it with its tags and set the aliases; returns the version."""
    import tempfile

    import mlflow
    import numpy as np
    import onnx
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    c = client()
    labels = json.loads(bundle_file(bundle_dir, LABELS_FILE).read_text())
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("int64"), (-1, -1), "input_ids"),
                       TensorSpec(np.dtype("int64"), (-1, -1), "attention_mask")]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, len(labels)), "logits")]),
    )
    extra = [str(bundle_file(bundle_dir, n)) for n in BUNDLE_FILES if n != ONNX_FILE]
    with mlflow.start_run(run_id=run_id):
        info = mlflow.onnx.log_model(
            onnx.load(str(bundle_file(bundle_dir, ONNX_FILE))), name=MODEL_ARTIFACT, signature=signature,
            extra_files=extra, save_as_external_data=False,
            onnx_execution_providers=["CPUExecutionProvider"],
        )
    # hash what was stored, not what we meant to store: serving re-checks exactly these bytes
    with tempfile.TemporaryDirectory() as tmp:
        stored = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=tmp)
        digest = bundle_sha256(stored)
    all_tags = VersionTags(**asdict(tags) | {"artifact_sha256": digest}).to_tags()
    mv = mlflow.register_model(info.model_uri, model, tags=all_tags)
    version = str(mv.version)
    with model_lock(c, model):  # aliases move under the lock, with an audit entry, never under a rollout
        if running := rollout_running(c, model):
            print(f"registered {model} v{version}; @{CHALLENGER} stays at v{running['challenger']}: a rollout of it is "
                  f"running (start a rollout of v{version} once it ends)")
        else:
            previous = alias_version(c, model, CHALLENGER)
            set_alias(c, model, CHALLENGER, version)
            record(c, model, "register", CHALLENGER, previous, version, "gate passed", who=current_user())
        if alias_version(c, model, CHAMPION) is None:
            set_alias(c, model, CHAMPION, version)
            record(c, model, "register", CHAMPION, None, version, "the first version", who=current_user())
    log.info("registered %s version %s (sha256 %s)", model, version, digest)
    return version


# -- the alias lock and the audit trail ------------------------------------------------------------------
# MLflow aliases have no compare-and-set: every alias change (promotion, rollout, registration) takes
# the model's lock, and is appended to the model's tags as yanjin.audit.NNNNNN (release/promotion.py).
LOCK_TTL_S = 120.0          # a lock not renewed for this long (registry clock) was left by a crashed holder
ROLLOUT_RUNNING = "running"  # ROLLOUT_TAG's status while a rollout owns @challenger


class AliasConflict(RuntimeError):
    """The alias (or its lock) moved between the caller's read and its write; nothing was changed."""


_HELD: contextvars.ContextVar[dict] = contextvars.ContextVar("yanjin_locks_held", default={})  # model -> owner token


def confirm_lock(client, model: str) -> None:
    """Before each write under the lock: is it still ours? A holder stalled past the TTL may have had it
    broken by a waiter, who now writes too; the stalled holder must then stop writing."""
    from mlflow.exceptions import MlflowException

    token = _HELD.get().get(model)
    if token is None:
        raise AliasConflict(f"{model}: a write to its aliases or rollout state without holding its lock")
    try:
        owner = client.get_registered_model(lock_name(model)).tags.get(LOCK_OWNER)
    except MlflowException:
        owner = None
    if owner != token:
        raise AliasConflict(f"{model}: this process lost the alias lock (not renewed for {LOCK_TTL_S:.0f} s, so "
                            f"another waiter broke it); it wrote nothing more; re-read and decide again")


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: float           # unix seconds
    who: str
    action: str         # register | promote | rollback | rollout-start | rollout-advance | rollout-rollback | rollout-promote
    alias: str
    from_version: str | None
    to_version: str | None
    reason: str
    forced: bool = False

    @property
    def when(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.at)) + "Z"


def current_user() -> str:
    """Who acts: $YANJIN_USER (set by a CI job or a UI wrapper), else the OS user at this host."""
    return os.environ.get("YANJIN_USER") or f"{getpass.getuser()}@{socket.gethostname()}"


@contextmanager
def model_lock(client, model: str, wait_s: float = 30.0, ttl_s: float = LOCK_TTL_S) -> Iterator[None]:
    """Hold the model's alias lock; waits up to wait_s for another holder, breaking only a stale lock.

    The holder renews the lock every ttl_s / 4 (the registry stamps each renewal with its own clock);
    a lock whose last renewal is older than ttl_s by the registry's clock was left by a crashed
    holder. Breaking it renames it to a tombstone named after its owner: the registry lets exactly one
    rename to that name succeed, so of two waiters that both find the lock stale only one breaks it.
    """
    from mlflow.exceptions import MlflowException

    name, token = lock_name(model), uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    clock = None  # the waiter's ticket: a registered model whose updates read the registry's clock
    try:
        while True:
            try:
                client.create_registered_model(name, tags={LOCK_OWNER: token, LOCK_ACQUIRED: str(time.time())},
                                               description=f"yanjin: alias lock for {model}; deleted when released")
                break
            except MlflowException:
                clock = clock or _ticket(client, name, token)
                if clock:
                    _break_if_stale(client, name, clock, ttl_s)
                if time.monotonic() > deadline:
                    raise AliasConflict(f"{model}: another promotion holds the lock ({name}) for over "
                                        f"{wait_s:.0f} s; try again, or delete that registered model if its "
                                        f"holder crashed") from None
                time.sleep(0.05 + 0.1 * (uuid.uuid4().int % 10) / 10)  # jitter: waiters do not retry in lockstep
    finally:
        if clock:
            _delete(client, clock)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(client, name, ttl_s / 4, stop), daemon=True,
                               name=f"renew {name}")
    renewer.start()
    held = _HELD.set(_HELD.get() | {model: token})
    try:
        yield
    finally:
        _HELD.reset(held)
        stop.set()
        renewer.join()
        try:
            if client.get_registered_model(name).tags.get(LOCK_OWNER) == token:
                client.delete_registered_model(name)
        except MlflowException:
            pass


def _renew(client, name: str, every_s: float, stop: threading.Event) -> None:
    from mlflow.exceptions import MlflowException

    beat = 0
    while not stop.wait(every_s):
        beat += 1
        try:  # an update (not a tag) makes the registry stamp last_updated_timestamp with its clock
            client.update_registered_model(name, description=f"yanjin: alias lock, held; renewal {beat}")
        except MlflowException:
            return  # broken or released: the holder's next compare-and-set notices


def _ticket(client, name: str, token: str) -> str | None:
    from mlflow.exceptions import MlflowException

    ticket = f"{name}.waiter.{token}"
    try:
        client.create_registered_model(ticket, description="yanjin: a lock waiter's clock; deleted when it stops waiting")
    except MlflowException:
        return None  # the registry is busy: try again at the next poll
    return ticket


def _registry_now(client, ticket: str) -> int:
    return client.update_registered_model(ticket, description=f"clock {uuid.uuid4().hex}").last_updated_timestamp


def _break_if_stale(client, name: str, ticket: str, ttl_s: float) -> None:
    from mlflow.exceptions import MlflowException

    try:
        held = client.get_registered_model(name)
        if _registry_now(client, ticket) - held.last_updated_timestamp <= ttl_s * 1000:
            return
        again = client.get_registered_model(name)  # a waiter that stalled since its read must not break a newer lock
        if (again.tags.get(LOCK_OWNER), again.last_updated_timestamp) != (held.tags.get(LOCK_OWNER),
                                                                         held.last_updated_timestamp):
            return
    except MlflowException:
        return  # released meanwhile, or the registry is busy: look again at the next poll
    try:  # exactly one waiter wins this rename; the tombstone stays as the record of a crashed holder
        client.rename_registered_model(name, f"{name}.broken.{held.tags.get(LOCK_OWNER, 'unknown')}")
    except MlflowException:
        pass


def _delete(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.delete_registered_model(name)
    except MlflowException:
        pass


def history(client, model: str) -> list[AuditEntry]:
    """Every recorded alias change of `model`, oldest first."""
    tags = client.get_registered_model(model).tags
    entries = [json.loads(v) | {"seq": int(k[len(AUDIT_PREFIX):].split(".")[0])}
               for k, v in tags.items() if k.startswith(AUDIT_PREFIX)]
    return sorted((AuditEntry(**e) for e in entries), key=lambda e: (e.seq, e.at))


def record(client, model: str, action: str, alias: str, from_version: str | None,
           to_version: str | None, reason: str, forced: bool = False, who: str | None = None) -> AuditEntry:
    """Append one audit entry, under the model lock (checked). The key carries a suffix of this writer's
    own, so even a writer that bypassed the lock could not overwrite another's entry."""
    confirm_lock(client, model)
    seq = max((e.seq for e in history(client, model)), default=0) + 1
    entry = AuditEntry(seq, time.time(), who or current_user(), action, alias, from_version, to_version, reason, forced)
    body = {k: v for k, v in asdict(entry).items() if k != "seq"}
    client.set_registered_model_tag(model, audit_tag(seq, uuid.uuid4().hex[:8]), json.dumps(body))
    return entry


def set_alias(client, model: str, alias: str, version: str | None) -> None:
    """Move (or, with None, remove) an alias; only while holding the model's lock (checked just before)."""
    confirm_lock(client, model)
    if version is None:
        client.delete_registered_model_alias(model, alias)
    else:
        client.set_registered_model_alias(model, alias, version)


def set_model_tag(client, model: str, key: str, value: str) -> None:
    """Write release state (rollout, share) on the registered model; only while holding its lock (checked)."""
    confirm_lock(client, model)
    client.set_registered_model_tag(model, key, value)


def rollout_running(mlflow_client, model: str) -> dict | None:
    """The running rollout of `model` (its ROLLOUT_TAG state), if one is running."""
    raw = mlflow_client.get_registered_model(model).tags.get(ROLLOUT_TAG)
    state = json.loads(raw) if raw else None
    return state if state and state.get("status") == ROLLOUT_RUNNING else None
