"""Builders of the family's networks and the checkpoint format they share.

A builder is a named function `(spec, num_labels) -> Classifier`: which attention goes into the
blocks and how big the encoder is, untrained. Where the weights come from (MiniLM, an adapted
encoder, a teacher) is the member's recipe (yanjin/family.py), carried out by components/.
Compressed versions are produced by steps from a trained model, not by new classes.

Builders beyond these two come from installed packages through the `yanjin.builders` entry-point
group (`name = "package.module:function"`), so a new member's network needs no change here.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

from safetensors.torch import load_file, save_file

from ..config import ModelSpec
from ..family import ADAPTED, FAMILY, TEACHER
from ..registry import CHECKPOINT_SPEC, CHECKPOINT_WEIGHTS, LABELS_FILE, TOKENIZER_FILE
from .attention import SlidingWindowAttention
from .encoder import Classifier, Encoder, EncoderConfig, dense_attention
from .pretrained import load_encoder_weights, load_pretrained_encoder, verified_base_file

Builder = Callable[[ModelSpec, int], Classifier]
BUILDER_GROUP = "yanjin.builders"


def encoder_config(spec: ModelSpec) -> EncoderConfig:
    return EncoderConfig(n_layers=spec.n_layers, dropout=spec.dropout, max_positions=spec.max_positions,
                         vocab_size=spec.vocab_size, n_heads=spec.n_heads, d_ff=spec.d_ff)


def v1(spec: ModelSpec, num_labels: int) -> Classifier:
    """Dense attention: V1 "general", Pro (adapted weights) and Lite (pruned sizes) share it."""
    return Classifier(Encoder(encoder_config(spec), attention=dense_attention), num_labels, dropout=spec.dropout)


def v2(spec: ModelSpec, num_labels: int) -> Classifier:
    """V2 "fast": sliding-window attention with a global [CLS], dense below `spec.dense_below` tokens."""
    def attention(cfg: EncoderConfig) -> SlidingWindowAttention:
        return SlidingWindowAttention(cfg.d_model, cfg.n_heads, cfg.dropout, radius=spec.attention_radius,
                                      dense_below=spec.dense_below)
    return Classifier(Encoder(encoder_config(spec), attention=attention), num_labels, dropout=spec.dropout)


BUILDERS: dict[str, Builder] = {"v1": v1, "v2": v2}


def builder(name: str) -> Builder:
    """A shipped builder, else the installed `yanjin.builders` entry point of that name."""
    if name in BUILDERS:
        return BUILDERS[name]
    found = [ep for ep in entry_points(group=BUILDER_GROUP) if ep.name == name]
    if not found:
        plugins = sorted(ep.name for ep in entry_points(group=BUILDER_GROUP))
        raise ValueError(f"unknown builder {name!r}; shipped: {sorted(BUILDERS)}, installed ({BUILDER_GROUP}): {plugins}")
    return found[0].load()


def build_classifier(spec: ModelSpec, num_labels: int) -> Classifier:
    """An untrained classifier of the spec's network (weights to be loaded by the caller)."""
    return builder(spec.network)(spec, num_labels)


def pretrained_classifier(spec: ModelSpec, num_labels: int, encoder_weights: Path | None = None) -> Classifier:
    """The network with the verified MiniLM weights, or with an adapted encoder's, and a fresh head."""
    recipe = FAMILY.get(spec.variant)
    if recipe and recipe.start == TEACHER:
        raise ValueError(f"{spec.variant} is not fine-tuned from MiniLM: it is compressed from a trained teacher "
                         f"(components/distill.py)")
    if recipe and recipe.start == ADAPTED and encoder_weights is None:
        raise ValueError(f"the {spec.variant} variant needs the adapted encoder from the adapt step")
    model = build_classifier(spec, num_labels)
    if encoder_weights is None:
        load_pretrained_encoder(model.encoder)
    else:
        load_encoder_weights(model.encoder, encoder_weights)
    return model


def base_tokenizer_file() -> Path:
    return verified_base_file(TOKENIZER_FILE)


def save_checkpoint(model: Classifier, spec: ModelSpec, labels: list[str], out_dir: str | Path,
                    tokenizer_file: str | Path | None = None) -> Path:
    """Weights as safetensors (no pickle) next to everything needed to rebuild and tokenize
    (MiniLM's tokenizer unless given, e.g. Lite's pruned vocabulary)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}  # trained on a GPU too
    save_file(state, str(out / CHECKPOINT_WEIGHTS))
    (out / CHECKPOINT_SPEC).write_text(json.dumps(asdict(spec), indent=2))
    (out / LABELS_FILE).write_text(json.dumps(labels, indent=2))
    source = Path(tokenizer_file) if tokenizer_file else base_tokenizer_file()
    if source.resolve() != (out / TOKENIZER_FILE).resolve():
        shutil.copyfile(source, out / TOKENIZER_FILE)
    return out


def load_checkpoint(ckpt_dir: str | Path) -> tuple[Classifier, ModelSpec, list[str]]:
    ckpt = Path(ckpt_dir)
    spec = ModelSpec.from_dict(json.loads((ckpt / CHECKPOINT_SPEC).read_text()))
    labels = json.loads((ckpt / LABELS_FILE).read_text())
    model = build_classifier(spec, len(labels))
    model.load_state_dict(load_file(str(ckpt / CHECKPOINT_WEIGHTS)), strict=True)
    model.eval()
    return model, spec, labels

