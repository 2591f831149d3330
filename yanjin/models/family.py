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
from .pretrained import base_for, load_encoder_weights, load_pretrained_encoder, resolve_base

Builder = Callable[[ModelSpec, int], Classifier]
BUILDER_GROUP = "yanjin.builders"


def encoder_config(spec: ModelSpec) -> EncoderConfig:
    return EncoderConfig(n_layers=spec.n_layers, dropout=spec.dropout, max_positions=spec.max_positions,
                         vocab_size=spec.vocab_size, n_heads=spec.n_heads, d_ff=spec.d_ff, d_model=spec.d_model,
                         head_dim=spec.head_dim, layer_norm_eps=spec.layer_norm_eps, arch=spec.arch)


def v1(spec: ModelSpec, num_labels: int) -> Classifier:
    """Dense attention: V1 "general", Pro (adapted weights) and Lite (pruned sizes) share it."""
    return Classifier(Encoder(encoder_config(spec), attention=dense_attention), num_labels, dropout=spec.dropout)


def v2(spec: ModelSpec, num_labels: int) -> Classifier:
    """V2 "fast": sliding-window attention with a global [CLS], dense below `spec.dense_below` tokens."""
    if spec.arch != "bert":
        raise ValueError(f"V2's sliding-window attention has no relative-position bias: it needs a BERT base, "
                         f"not {spec.arch} (model.base={spec.base})")

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


def pretrained_classifier(spec: ModelSpec, num_labels: int, encoder_weights: Path | None = None, start: str = ""
                          ) -> tuple[Classifier, ModelSpec, Path]:
    """The network on the verified base (`spec.base`), or on an adapted encoder's weights, with a fresh head.
    `start`: where the member's weights start (its run's recipe, which a profile may change); "": the table's.

    Returns the model, the spec with the base's architecture (what the checkpoint records) and the
    base's verified tokenizer file."""
    recipe = FAMILY.get(spec.variant)
    start = start or (recipe.start if recipe else "")
    if start == TEACHER:
        raise ValueError(f"{spec.variant} is not fine-tuned from a base encoder: it is compressed from a trained "
                         f"teacher (components/distill.py)")
    if start == ADAPTED and encoder_weights is None:
        raise ValueError(f"the {spec.variant} variant needs the adapted encoder from the adapt step")
    spec, base = resolve_base(spec)
    model = build_classifier(spec, num_labels)
    if encoder_weights is None:
        load_pretrained_encoder(model.encoder, base)
    else:
        load_encoder_weights(model.encoder, encoder_weights)
    return model, spec, base.file(TOKENIZER_FILE)


def base_tokenizer_file(spec: ModelSpec = ModelSpec()) -> Path:
    """The verified tokenizer of the spec's base (MiniLM's by default)."""
    return base_for(spec).file(TOKENIZER_FILE)


def save_checkpoint(model: Classifier, spec: ModelSpec, labels: list[str], out_dir: str | Path,
                    tokenizer_file: str | Path | None = None) -> Path:
    """Weights as safetensors (no pickle) next to everything needed to rebuild and tokenize
    (the base's tokenizer unless given, e.g. Lite's pruned vocabulary)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}  # trained on a GPU too
    save_file(state, str(out / CHECKPOINT_WEIGHTS))
    (out / CHECKPOINT_SPEC).write_text(json.dumps(asdict(spec), indent=2))
    (out / LABELS_FILE).write_text(json.dumps(labels, indent=2))
    source = Path(tokenizer_file) if tokenizer_file else base_tokenizer_file(spec)
    if source.resolve() != (out / TOKENIZER_FILE).resolve():
        shutil.copyfile(source, out / TOKENIZER_FILE)
    return out


def checkpoint_spec(ckpt_dir: str | Path) -> ModelSpec:
    """The spec a saved classifier was built from, read without loading its weights."""
    return ModelSpec.from_dict(json.loads((Path(ckpt_dir) / CHECKPOINT_SPEC).read_text()))


def load_checkpoint(ckpt_dir: str | Path) -> tuple[Classifier, ModelSpec, list[str]]:
    ckpt = Path(ckpt_dir)
    spec = checkpoint_spec(ckpt)
    labels = json.loads((ckpt / LABELS_FILE).read_text())
    model = build_classifier(spec, len(labels))
    model.load_state_dict(load_file(str(ckpt / CHECKPOINT_WEIGHTS)), strict=True)
    model.eval()
    return model, spec, labels

