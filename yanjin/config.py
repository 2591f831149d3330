"""Pipeline configuration: one YAML profile, read once at the entry point.

Everything below the entry point receives plain dataclasses (or their JSON, across the
Kubeflow boundary); nothing else reads YAML or environment variables.
"""
from __future__ import annotations

import json
from importlib import resources
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from pathlib import Path

import yaml

from .components.adapt import AdaptParams
from .components.data import DataParams
from .components.distill import CompressParams
from .components.evaluate import EvalParams
from .components.gate import GateParams
from .components.validate import ValidationParams
from .components.train import TrainParams
from .models.family import ModelSpec
from .monitoring.drift import MonitorParams
from .release.policy import CostParams, RolloutPolicy

CONFIG_DIR = Path(str(resources.files("yanjin.configs")))  # configs/ ships inside the package


@dataclass(frozen=True)
class PipelineConfig:
    profile: str = "custom"
    model_name: str = "banking77"     # registered models are named <model_name>-<variant>
    data: DataParams = DataParams()
    validation: ValidationParams = ValidationParams()
    model: ModelSpec = ModelSpec()
    adapt: AdaptParams = AdaptParams()
    compress: CompressParams = CompressParams()
    train: TrainParams = TrainParams()
    evaluate: EvalParams = EvalParams()
    gate: GateParams = GateParams()
    rollout: RolloutPolicy = RolloutPolicy()   # A/B rollout guardrails (yanjin rollout)
    costs: CostParams = CostParams()           # prices for the version advisor (yanjin select)
    monitor: MonitorParams = MonitorParams()   # drift check and retraining trigger (yanjin monitor)

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


def from_dict(values: dict) -> PipelineConfig:
    return build(PipelineConfig, values, "config")


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


def load_config(profile: str, overrides: list[str] | None = None) -> PipelineConfig:
    path = profile_path(profile)
    values = yaml.safe_load(path.read_text()) or {}
    values.setdefault("profile", path.stem)
    for assignment in overrides or []:
        apply_override(values, assignment)
    return from_dict(values)


# what a variant changes in any profile: V2 reads long inputs; Pro must also beat the general model
VARIANT_MODEL_DEFAULTS = {"v2": {"max_positions": 4096, "max_length": 4096}}
FAMILY = ("v1", "v2", "pro", "lite")  # build order: Pro is gated against V1, Lite distils a Pro champion
VARIANT_GATE_DEFAULTS = {"pro": {"also_beat": "v1"}}


def with_variant(config: PipelineConfig, variant: str) -> PipelineConfig:
    model = replace(config.model, variant=variant, **VARIANT_MODEL_DEFAULTS.get(variant, {}))
    gate = replace(config.gate, **VARIANT_GATE_DEFAULTS.get(variant, {}))
    return replace(config, model=model, gate=gate)
