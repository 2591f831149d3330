"""A base encoder with a real base's shapes and random weights: for timing a base whose weights cannot
travel (all-mpnet-base-v2's 438 MB exceed what a lent GPU machine receives). Its accuracy means nothing.

Here, where the real base is installed: write its config.json, tokenizer.json and tensor shapes (small):

    python benchmarks/random_base.py shapes --like mpnet --to DIR

There: fill DIR with random weights of those shapes and print the model.base_sha256 pins, then time it:

    pins=$(python benchmarks/random_base.py weights DIR)
    python benchmarks/gpu_training.py --steps fine_tune --name gpu_training_mpnet_shape.json \\
        --set model.base=DIR model.base_sha256=$pins model.n_layers=0
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

SHAPES = "shapes.json"


def write_shapes(like: str, to: Path) -> None:
    """The base's config and tokenizer, and each tensor's dtype and shape read from its safetensors header."""
    from safetensors import safe_open

    from yanjin.config import ModelSpec
    from yanjin.models.pretrained import CONFIG_FILE, base_for
    from yanjin.registry import CHECKPOINT_WEIGHTS, TOKENIZER_FILE

    base = base_for(ModelSpec(base=like)).verify()
    to.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_FILE, TOKENIZER_FILE):
        shutil.copy(base.file(name), to / name)
    with safe_open(str(base.file(CHECKPOINT_WEIGHTS)), framework="numpy") as f:   # reads the header, not the tensors
        shapes = {k: [f.get_slice(k).get_dtype(), f.get_slice(k).get_shape()] for k in f.keys()}
    (to / SHAPES).write_text(json.dumps(shapes))


def write_weights(folder: Path) -> str:
    """Random weights (BERT-style init: N(0, 0.02), zero biases, unit layer norms); the pins of the folder's files."""
    import torch
    from safetensors.torch import save_file

    from yanjin.models.pretrained import BASE_FILES
    from yanjin.registry import CHECKPOINT_WEIGHTS, sha256_file

    g = torch.Generator().manual_seed(0)
    tensors = {}
    for name, (dtype, shape) in json.loads((folder / SHAPES).read_text()).items():
        if dtype == "I64":      # a buffer such as position_ids: its values matter, keep them a range
            tensors[name] = torch.arange(shape[-1]).expand(shape).contiguous()
        elif "LayerNorm.weight" in name:
            tensors[name] = torch.ones(shape)
        elif name.endswith("bias"):
            tensors[name] = torch.zeros(shape)
        else:
            tensors[name] = torch.randn(shape, generator=g) * 0.02
    save_file(tensors, str(folder / CHECKPOINT_WEIGHTS))
    return ",".join(f"{name}={sha256_file(folder / name)}" for name in BASE_FILES)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command", required=True)
    shapes = sub.add_parser("shapes")
    shapes.add_argument("--like", default="mpnet")
    shapes.add_argument("--to", type=Path, required=True)
    weights = sub.add_parser("weights")
    weights.add_argument("folder", type=Path)
    args = ap.parse_args()
    if args.command == "shapes":
        write_shapes(args.like, args.to)
    else:
        print(write_weights(args.folder))


if __name__ == "__main__":
    main()
