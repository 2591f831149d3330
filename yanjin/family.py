"""The family table: what each member of the model line is, in one place.

A member is a `Recipe`: the builder that makes its network (models/family.py, or an installed
`yanjin.builders` entry point), where its weights start (the pretrained encoder, the encoder after
domain adaptation, or a trained teacher it is compressed from), whether its ONNX file is
quantized, and the champions it must beat besides its own. Every step reads the recipe from the
run's config, so a version's recorded config says completely how it was made.

Adding a member is one recipe here (or `register_member`) plus, when its network is new, one
builder. Nothing else in the code branches on a member's name. This module imports nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

PRETRAINED, ADAPTED, TEACHER = "pretrained", "adapted", "teacher"  # where a member's weights start


@dataclass(frozen=True)
class Recipe:
    builder: str = "v1"         # the network: a builder name (dense v1, sliding-window v2, or a plugin's)
    start: str = PRETRAINED     # pretrained: fine-tune MiniLM; adapted: domain-adapt it, then fine-tune;
                                # teacher: compress the teacher's champion (distil + prune)
    teacher: str = ""           # start=teacher: the member whose @champion teaches
    int8: bool = False          # export: quantize the FP32 ONNX to INT8 with ONNX Runtime
    also_beat: str = ""         # comma-separated members whose champions a candidate must also beat
    model: dict = field(default_factory=dict)  # ModelSpec fields the member sets in every profile
    train: dict = field(default_factory=dict)  # TrainParams fields the member sets (e.g. a profile's probe Pro)
    summary: str = ""           # one line for people: the UI, the docs

    @property
    def uses_domain_text(self) -> bool:
        """Adaptation trains on the domain text; compression keeps its vocabulary."""
        return self.start in (ADAPTED, TEACHER)

    def check(self, name: str) -> None:
        if self.start not in (PRETRAINED, ADAPTED, TEACHER):
            raise ValueError(f"member {name!r}: start {self.start!r} is none of {PRETRAINED}, {ADAPTED}, {TEACHER}")
        if (self.start == TEACHER) != bool(self.teacher):
            raise ValueError(f"member {name!r}: a teacher is named exactly when start is {TEACHER!r}")


# Build order matters to the family pipeline: Pro is gated against V1's champion, Lite distils Pro.
FAMILY: dict[str, Recipe] = {
    "v1": Recipe(summary="general: pretrained MiniLM fine-tuned on the task"),
    "v2": Recipe(builder="v2", model={"max_positions": 4096, "max_length": 4096},
                 summary="fast: V1's weights with sliding-window attention, inputs up to 4096 tokens"),
    "pro": Recipe(start=ADAPTED, also_beat="v1",
                  summary="domain: contrastive adaptation on in-domain text, then fine-tuning; must beat V1"),
    "lite": Recipe(start=TEACHER, teacher="pro", int8=True,
                   summary="edge: Pro distilled, pruned (layers, heads, FFN, vocabulary) and INT8-quantized"),
}


def recipe_for(name: str) -> Recipe:
    if name not in FAMILY:
        raise ValueError(f"unknown family member {name!r}; known: {list(FAMILY)}")
    return FAMILY[name]


def register_member(name: str, recipe: Recipe) -> None:
    """Add a member (e.g. from a plugin or a test); it then builds like the four shipped ones."""
    recipe.check(name)
    if recipe.teacher and recipe.teacher not in FAMILY:
        raise ValueError(f"member {name!r}: teacher {recipe.teacher!r} is not a member")
    FAMILY[name] = recipe


for _name, _recipe in FAMILY.items():
    _recipe.check(_name)
