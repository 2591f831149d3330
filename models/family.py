"""Presets of the model family and the checkpoint format they share.

A preset is a named builder: which attention goes into the blocks and which weights fill the
encoder. Compressed versions are produced by steps from a trained model, not by new classes.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from safetensors.torch import load_file, save_file

from .attention import SlidingWindowAttention
from .encoder import AttentionFactory, Classifier, Encoder, EncoderConfig, dense_attention
from .pretrained import load_encoder_weights, load_pretrained_encoder, verified_base_file

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
    max_positions: int = 512     # learned positions; V2 extends MiniLM's 512 to 4096 by copying them
    attention_radius: int = 64   # V2: each token sees +-radius neighbours (and [CLS])
    dense_below: int = 512       # V2: at or below this many tokens dense is faster (one layer: 0.86x at 384, 1.02x at 512)
    # Lite shrinks these physically (vocabulary, head and FFN pruning); the others keep MiniLM's
    vocab_size: int = 30522
    n_heads: int = 12            # heads kept in every layer
    d_ff: int = 1536             # FFN neurons kept in every layer

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model settings: {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def attention_for(spec: ModelSpec) -> AttentionFactory:
    """The attention module every block of this variant holds."""
    if spec.variant == "v2":
        return lambda cfg: SlidingWindowAttention(cfg.d_model, cfg.n_heads, cfg.dropout,
                                                  radius=spec.attention_radius, dense_below=spec.dense_below)
    return dense_attention


VARIANTS = ("v1", "v2", "pro", "lite")


def encoder_config(spec: ModelSpec) -> EncoderConfig:
    return EncoderConfig(n_layers=spec.n_layers, dropout=spec.dropout, max_positions=spec.max_positions,
                         vocab_size=spec.vocab_size, n_heads=spec.n_heads, d_ff=spec.d_ff)


def build_classifier(spec: ModelSpec, num_labels: int) -> Classifier:
    """An untrained classifier of the given variant (weights to be loaded by the caller)."""
    if spec.variant not in VARIANTS:
        raise ValueError(f"unknown variant {spec.variant!r}; known: {list(VARIANTS)}")
    encoder = Encoder(encoder_config(spec), attention=attention_for(spec))
    return Classifier(encoder, num_labels, dropout=spec.dropout)


def v1(spec: ModelSpec, num_labels: int, encoder_weights: Path | None = None) -> Classifier:
    """V1 "general": the pretrained MiniLM encoder with a fresh head, ready to fine-tune."""
    model = build_classifier(spec, num_labels)
    load_pretrained_encoder(model.encoder)
    return model


def v2(spec: ModelSpec, num_labels: int, encoder_weights: Path | None = None) -> Classifier:
    """V2 "fast": the same pretrained weights, sliding-window attention, positions up to 4096."""
    return v1(spec, num_labels)


def pro(spec: ModelSpec, num_labels: int, encoder_weights: Path | None = None) -> Classifier:
    """Pro "domain": the encoder after domain-adaptive pretraining (the `adapt` step's output)."""
    if encoder_weights is None:
        raise ValueError("the pro variant needs the adapted encoder from the adapt step")
    model = build_classifier(spec, num_labels)
    load_encoder_weights(model.encoder, encoder_weights)
    return model


PRESETS = {"v1": v1, "v2": v2, "pro": pro}


def pretrained_classifier(spec: ModelSpec, num_labels: int, encoder_weights: Path | None = None) -> Classifier:
    if spec.variant == "lite":
        raise ValueError("lite is not fine-tuned from MiniLM: it is compressed from a trained teacher (components/distill.py)")
    if spec.variant not in PRESETS:
        raise ValueError(f"unknown variant {spec.variant!r}; known: {sorted(PRESETS)}")
    return PRESETS[spec.variant](spec, num_labels, encoder_weights)


def base_tokenizer_file() -> Path:
    return verified_base_file(TOKENIZER_FILE)


def save_checkpoint(model: Classifier, spec: ModelSpec, labels: list[str], out_dir: str | Path,
                    tokenizer_file: str | Path | None = None) -> Path:
    """Weights as safetensors (no pickle) next to everything needed to rebuild and tokenize
    (MiniLM's tokenizer unless given, e.g. Lite's pruned vocabulary)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
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

