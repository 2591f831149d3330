"""Export a trained checkpoint to a self-contained ONNX bundle, checked against PyTorch.

The bundle is what gets evaluated, registered and served: model.onnx (single file, dynamic
batch and sequence axes), tokenizer.json, labels.json and model_config.json.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..models.attention import masks_per_query
from ..models.family import load_checkpoint
from ..models.inference import OnnxClassifier
from ..registry import CHECKPOINT_SPEC, LABELS_FILE, ONNX_FILE, TOKENIZER_FILE

log = logging.getLogger(__name__)
OPSET = 20       # what ONNX Runtime (CPU, CUDA) and TensorRT 10 all parse
# INT8 members run on CPUs: opset 23 has ONNX's own Attention op, one ORT kernel where opset 20 spells
# out the mask and head glue (Lite's INT8 graph 157 -> 126 nodes, 0.400 -> 0.338 ms at batch 1); TensorRT unchecked
ATTENTION_OPSET = 23  # the first opset with ONNX's own Attention op
INT8_OPSET = ATTENTION_OPSET


class ParityError(RuntimeError):
    """The exported graph does not reproduce the PyTorch model."""


@dataclass(frozen=True)
class ExportResult:
    onnx_path: str
    onnx_bytes: int
    max_abs_diff: float


def _parity_inputs(vocab_size: int, seed: int = 0, long: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shapes other than the export example, with padding, so baked-in sizes are caught;
    `long` adds inputs of that length (e.g. past V2's dense/windowed switch)."""
    rng = np.random.default_rng(seed)
    cases = []
    for batch, seq in [(1, 5), (3, 17), (8, 40), (2, 64)] + ([(1, long), (2, long + 13)] if long else []):
        ids = rng.integers(min(1000, vocab_size // 2), vocab_size, size=(batch, seq), dtype=np.int64)
        ids[:, 0] = min(101, vocab_size - 1)  # [CLS] in MiniLM's vocabulary (any id does for parity)
        mask = np.ones_like(ids)
        if batch > 1:
            mask[-1, seq // 2 :] = 0  # one padded row
            ids[-1, seq // 2 :] = 0
        cases.append((ids, mask))
    return cases


def export_onnx(ckpt_dir: str | Path, out_dir: str | Path, tolerance: float = 1e-4, opset: int = OPSET) -> ExportResult:
    """Checkpoint -> ONNX bundle in `out_dir`; raises ParityError beyond `tolerance` (max |logit diff|)."""
    from torch.export import Dim

    model, spec, labels = load_checkpoint(ckpt_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / ONNX_FILE
    # trace at a length that is no multiple of anything and, where inputs can reach past a
    # dense/windowed switch (V2), past it, so that no branch specialises the sequence axis to the example
    switches = spec.max_length > spec.dense_below
    T = min(spec.max_length, spec.dense_below + 37) if switches else 11
    example = (torch.full((2, T), 1000, dtype=torch.long), torch.ones(2, T, dtype=torch.long))
    batch, seq = Dim("batch", min=1, max=4096), Dim("seq", min=1, max=spec.max_length)
    # from ATTENTION_OPSET attention is exported as one Attention op, whose ORT kernel needs the mask per query
    with warnings.catch_warnings(), masks_per_query() if opset >= ATTENTION_OPSET else contextlib.nullcontext():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, example, str(onnx_path), dynamo=True, external_data=False, opset_version=opset,
            input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
        )
    for name in (TOKENIZER_FILE, LABELS_FILE, CHECKPOINT_SPEC):
        shutil.copyfile(Path(ckpt_dir) / name, out / name)

    session = OnnxClassifier.from_dir(out)
    worst = 0.0
    with torch.no_grad():
        long = spec.dense_below + 37 if switches and spec.max_length > spec.dense_below + 50 else 0
        for ids, mask in _parity_inputs(model.encoder.cfg.vocab_size, long=long):
            ref = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
            got = session.logits(ids, mask)
            worst = max(worst, float(np.abs(ref - got).max()))
    if worst > tolerance:
        raise ParityError(f"{onnx_path}: ONNX logits differ from PyTorch by {worst:.2e} > {tolerance:.0e}")
    log.info("exported %s (%d bytes), parity max |diff| %.2e", onnx_path, onnx_path.stat().st_size, worst)
    return ExportResult(str(onnx_path), onnx_path.stat().st_size, worst)


@dataclass(frozen=True)
class QuantizeResult:
    fp32_bytes: int
    int8_bytes: int
    max_abs_diff: float  # INT8 vs FP32 logits on the parity inputs: reported; accuracy is measured by evaluate


def quantize_bundle(bundle_dir: str | Path) -> QuantizeResult:
    """Replace the bundle's FP32 model.onnx by its dynamic INT8 quantization (int8 weights, activations
    quantized on the fly). PyTorch's own dynamic quantization does not export to ONNX, hence this route."""
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx_path = Path(bundle_dir) / ONNX_FILE
    fp32 = OnnxClassifier.from_dir(bundle_dir)
    cases = _parity_inputs(fp32.tokenizer.vocab_size)
    reference = [fp32.logits(ids, mask) for ids, mask in cases]
    with tempfile.TemporaryDirectory() as tmp:
        model = onnx.load(str(onnx_path))
        del model.graph.value_info[:]  # dynamo's stale shape annotations make quantize_dynamic fail
        plain = Path(tmp) / "fp32.onnx"
        onnx.save(model, str(plain))
        fp32_bytes = onnx_path.stat().st_size
        # weights of MatMuls and the embedding Gathers; left to its defaults it would also rewrite opset 23's
        # Attention as com.microsoft's QAttention, whose attributes differ (an invalid graph)
        quantize_dynamic(str(plain), str(onnx_path), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gather"])
    int8 = OnnxClassifier.from_dir(bundle_dir)
    worst = max(float(np.abs(ref - int8.logits(ids, mask)).max()) for ref, (ids, mask) in zip(reference, cases))
    log.info("quantized %s: %d -> %d bytes, INT8 vs FP32 max |diff| %.3f", onnx_path, fp32_bytes,
             onnx_path.stat().st_size, worst)
    return QuantizeResult(fp32_bytes, onnx_path.stat().st_size, worst)
