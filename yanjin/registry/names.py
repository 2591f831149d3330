"""Everything yanjin keeps in MLflow, named once: aliases, tag keys of runs, versions and registered
models, artifact paths and the files of a bundle or checkpoint (tests/code/test_registry_names.py checks
that no alias or tag literal appears anywhere else)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

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
RETRAINING_SET_ARTIFACT = "retraining"     # a retraining set: training rows + labelled traffic
ERASED_ROWS_TAG = "yanjin.erased_rows"     # a run whose logged rows an erasure or purge removed (how many)
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

# -- customer text: one experiment, so that one grant keeps it from serving -------------------------
CUSTOMER_DATA_EXPERIMENT = "yanjin-customer-data"   # every logged training split and retraining set
DATA_RUN_TAG = "yanjin.data_run"            # a training run: the customer-data run holding its training split
DATA_OF_TAG = "yanjin.data_of"              # a customer-data run: the model whose rows it holds
DATA_REASON_TAG = "yanjin.data_reason"      # ... and why it was kept (a retraining set's reason)

# -- tags of a training run -----------------------------------------------------------------------
RUN_PIPELINE = "pipeline"                   # "yanjin" on every run the pipeline made
RUN_VALIDATION = "validation"               # passed | failed
RUN_GATE = "gate"                           # register | reject
RUN_NAME_TAG = "mlflow.runName"             # MLflow's own: renamed once the version has its number
RUN_SOURCE_TAG = "mlflow.source.name"       # MLflow's own: what made the run (not kfp's executor_main.py)
RUN_FAMILY = "family_run_id"                # a member run of a family pipeline: the run that validated its data
RUN_PARAM_TRAIN, RUN_PARAM_TEST = "data.train", "data.test"   # run params: the data files as given
RUN_PARAM_LABELS = "data.labels"             # ... and the label list file ("" when the labels came from training)
RUN_PARAM_CORPUS = "adapt.corpus"           # run param: the domain text a Pro adapted on / a Lite kept
RUN_REPRODUCES = "reproduces"               # a `yanjin reproduce` run: the <model>/<version> it rebuilt
RUN_VERDICT = "verdict"                     # a drift check's run: drift | no_drift | insufficient_data

# -- tags of a registered model: mirrors of the release ledger, written by the release principal alone --
SHARE_TAG = "yanjin.challenger_share"       # the challenger's traffic share, which serving polls
SHADOW_TAG = "yanjin.shadow"                # {"share", "disagreement_p", "audit_p"} while a shadow comparison runs
ROLLOUT_TAG = "yanjin.rollout"              # the running or last rollout (JSON), for the MLflow UI
ROLLOUT_RUNNING = "running"                 # a rollout's status while it owns @challenger
ROLLOUT_SHADOW = "shadow"                   # its phase while the challenger only scores texts off the answer path
LEDGER_HEAD_TAG = "yanjin.ledger_head"      # "seq:hash" of the newest audit entry: an anchor outside the ledger
MONITOR_STATE_TAG = "yanjin.monitor_state"  # drift trigger and quarterly schedule (JSON)
# written by registries before the ledger; read once, when a model is migrated into it
AUDIT_PREFIX = "yanjin.audit."              # yanjin.audit.NNNNNN.<writer>: one alias change (JSON)
LOCK_PREFIX = "yanjin-lock--"               # a registered model of this name was a model's alias lock

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


# -- names ----------------------------------------------------------------------------------------
def registered_model_name(base: str, variant: str) -> str:
    """One registered model per family member, e.g. banking77-v1."""
    return f"{base}-{variant}"


def model_uri(model: str, version: str | None = None, alias: str = CHAMPION) -> str:
    return f"models:/{model}/{version}" if version else f"models:/{model}@{alias}"


def lock_name(model: str) -> str:
    return f"{LOCK_PREFIX}{model}"




def run_name(model: str, version: str | None, step: str) -> str:
    """What a run is called in the MLflow UI: `<model> #<version> <step>` (`#new` until registration numbers it)."""
    return f"{model} #{version or 'new'} {step}"


def rollouts_experiment(model: str) -> str:
    return f"{model}-rollouts"


def monitoring_experiment(model: str) -> str:
    return f"{model}-monitoring"


def family_experiment(base: str) -> str:
    return f"{base}-family"




__all__ = ['CHAMPION', 'CHALLENGER', 'CHECKPOINT_WEIGHTS', 'CHECKPOINT_SPEC', 'LABELS_FILE', 'TOKENIZER_FILE', 'ONNX_FILE', 'BUNDLE_FILES', 'CHECKPOINT_FILES', 'MODEL_ARTIFACT', 'CHECKPOINT_ARTIFACT', 'TRAINING_DATA_ARTIFACT', 'TRAINING_DATA_FILE', 'CUSTOMER_DATA_EXPERIMENT', 'DATA_RUN_TAG', 'DATA_OF_TAG', 'DATA_REASON_TAG', 'RETRAINING_SET_ARTIFACT', 'ERASED_ROWS_TAG', 'VALIDATION_REPORT', 'ADAPTED_ENCODER_ARTIFACT', 'DISTRIBUTED_JOB_ARTIFACT', 'EVALUATION_ARTIFACT', 'GATE_DECISION', 'FAMILY_RESULT', 'FAMILY_RUN_TABLE', 'FAMILY_RUN_MARKDOWN', 'REPRODUCTION', 'CARD_MARKDOWN', 'CARD_HTML', 'RUN_PIPELINE', 'RUN_VALIDATION', 'RUN_GATE', 'RUN_FAMILY', 'RUN_PARAM_TRAIN', 'RUN_PARAM_TEST', 'RUN_PARAM_LABELS', 'RUN_PARAM_CORPUS', 'RUN_REPRODUCES', 'RUN_VERDICT', 'SHARE_TAG', 'SHADOW_TAG', 'ROLLOUT_TAG', 'ROLLOUT_RUNNING', 'ROLLOUT_SHADOW', 'LEDGER_HEAD_TAG', 'MONITOR_STATE_TAG', 'AUDIT_PREFIX', 'LOCK_PREFIX', 'ROLLOUT_OUTCOME', 'ROLLED_BACK', 'ROLLOUT_REASON', 'DRIFT_THRESHOLDS', 'RETRAINING_REASON', 'FEEDBACK_ROWS', 'FEEDBACK_DROPPED', 'GATE_PASSED', 'METRIC_TAGS', 'VersionTags', 'registered_model_name', 'model_uri', 'run_name', 'RUN_NAME_TAG', 'RUN_SOURCE_TAG', 'lock_name', 'rollouts_experiment', 'monitoring_experiment', 'family_experiment']
