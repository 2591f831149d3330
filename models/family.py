"""Presets of the model family and the checkpoint format they share.

A preset is a named builder: which attention goes into the blocks and which weights fill the
encoder. Compressed versions are produced by steps from a trained model, not by new classes.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .encoder import AttentionFactory, Classifier, Encoder, EncoderConfig, dense_attention
from .pretrained import load_pretrained_encoder, verified_base_file

CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_SPEC = "model_config.json"
LABELS_FILE = "labels.json"
TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class ModelSpec:
    variant: str = "v1"      # family member: selects the attention and the starting weights
    n_layers: int = 6        # blocks kept from the pretrained encoder
    max_length: int = 64     # tokens per text; banking77 queries are at most ~80 tokens
    dropout: float = 0.1     # encoder and head dropout during fine-tuning

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model settings: {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


# variant -> attention module used in every block
ATTENTION: dict[str, AttentionFactory] = {"v1": dense_attention}


def encoder_config(spec: ModelSpec) -> EncoderConfig:
    return EncoderConfig(n_layers=spec.n_layers, dropout=spec.dropout)


def build_classifier(spec: ModelSpec, num_labels: int) -> Classifier:
    """An untrained classifier of the given variant (weights to be loaded by the caller)."""
    if spec.variant not in ATTENTION:
        raise ValueError(f"unknown variant {spec.variant!r}; known: {sorted(ATTENTION)}")
    encoder = Encoder(encoder_config(spec), attention=ATTENTION[spec.variant])
    return Classifier(encoder, num_labels, dropout=spec.dropout)


def v1(spec: ModelSpec, num_labels: int) -> Classifier:
    """V1 "general": the pretrained MiniLM encoder with a fresh head, ready to fine-tune."""
    model = build_classifier(spec, num_labels)
    load_pretrained_encoder(model.encoder)
    return model


PRESETS = {"v1": v1}


def pretrained_classifier(spec: ModelSpec, num_labels: int) -> Classifier:
    if spec.variant not in PRESETS:
        raise ValueError(f"unknown variant {spec.variant!r}; known: {sorted(PRESETS)}")
    return PRESETS[spec.variant](spec, num_labels)


def base_tokenizer_file() -> Path:
    return verified_base_file(TOKENIZER_FILE)


def save_checkpoint(model: Classifier, spec: ModelSpec, labels: list[str], out_dir: str | Path) -> Path:
    """Weights as safetensors (no pickle) next to everything needed to rebuild and tokenize."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / CHECKPOINT_WEIGHTS))
    (out / CHECKPOINT_SPEC).write_text(json.dumps(asdict(spec), indent=2))
    (out / LABELS_FILE).write_text(json.dumps(labels, indent=2))
    shutil.copyfile(base_tokenizer_file(), out / TOKENIZER_FILE)
    return out


def load_checkpoint(ckpt_dir: str | Path) -> tuple[Classifier, ModelSpec, list[str]]:
    ckpt = Path(ckpt_dir)
    spec = ModelSpec.from_dict(json.loads((ckpt / CHECKPOINT_SPEC).read_text()))
    labels = json.loads((ckpt / LABELS_FILE).read_text())
    model = build_classifier(spec, len(labels))
    model.load_state_dict(load_file(str(ckpt / CHECKPOINT_WEIGHTS)), strict=True)
    model.eval()
    return model, spec, labels

