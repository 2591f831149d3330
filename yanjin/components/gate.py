"""The registration gate: a candidate registers only when it meets the floors and beats the champions."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..config import GateParams


RESCORED, RECORDED = "re-scored", "recorded"


@dataclass(frozen=True)
class ChampionScore:
    model: str          # registered model name, e.g. banking77-v1
    version: str
    accuracy: float     # on the candidate's test set
    source: str = RESCORED  # or RECORDED: the version's own figure, measured on these very rows


@dataclass(frozen=True)
class TeacherScore:
    model: str
    version: str
    accuracy: float     # on the candidate's test set
    onnx_bytes: int
    source: str = RESCORED


@dataclass
class GateDecision:
    register: bool
    reasons: list[str] = field(default_factory=list)
    champions: list[ChampionScore] = field(default_factory=list)
    teacher: TeacherScore | None = None

    @property
    def verdict(self) -> str:
        return "register" if self.register else "reject"

    def to_dict(self) -> dict:
        return asdict(self) | {"verdict": self.verdict}


def decide(metrics: dict, params: GateParams, champions: list[ChampionScore] = (),
           teacher: TeacherScore | None = None, identical_to: str = "") -> GateDecision:
    """Every failed condition becomes a reason; no reasons means register. `identical_to`: the registered
    version whose weights or ONNX file the candidate's equal byte for byte (a retraining that changed nothing)."""
    reasons = [f"identical to {identical_to}: nothing changed, nothing to register"] if identical_to else []
    if metrics["accuracy"] < params.min_accuracy:
        reasons.append(f"accuracy {metrics['accuracy']:.4f} < floor {params.min_accuracy:.4f}")
    if metrics["macro_f1"] < params.min_macro_f1:
        reasons.append(f"macro_f1 {metrics['macro_f1']:.4f} < floor {params.min_macro_f1:.4f}")
    if metrics["ece"] > params.max_ece:
        reasons.append(f"ece {metrics['ece']:.4f} > ceiling {params.max_ece:.4f}")
    for champ in champions:
        if not metrics["accuracy"] > champ.accuracy + params.min_improvement:
            reasons.append(
                f"accuracy {metrics['accuracy']:.4f} does not beat {champ.model} champion v{champ.version} "
                f"({champ.accuracy:.4f} + margin {params.min_improvement:.4f}) on the same test set"
            )
    if teacher is not None:
        accuracy_ratio = metrics["accuracy"] / teacher.accuracy
        if accuracy_ratio < params.min_teacher_accuracy_ratio:
            reasons.append(f"accuracy {metrics['accuracy']:.4f} is {accuracy_ratio:.1%} of teacher {teacher.model} "
                           f"v{teacher.version} ({teacher.accuracy:.4f}) < floor {params.min_teacher_accuracy_ratio:.1%}")
        size_ratio = metrics["onnx_bytes"] / teacher.onnx_bytes
        if params.max_teacher_size_ratio and size_ratio > params.max_teacher_size_ratio:
            reasons.append(f"ONNX file {metrics['onnx_bytes']:,} bytes is {size_ratio:.1%} of teacher's "
                           f"{teacher.onnx_bytes:,} > ceiling {params.max_teacher_size_ratio:.1%}")
    return GateDecision(not reasons, reasons, list(champions), teacher)
