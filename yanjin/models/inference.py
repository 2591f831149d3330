"""Running an exported ONNX bundle: the one inference path shared by evaluation, gate and serving.

Imports no PyTorch: the serving process runs on ONNX Runtime and tokenizers alone."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..config import ModelSpec
from ..registry import BUNDLE_FILES, CHECKPOINT_SPEC, LABELS_FILE, ONNX_FILE, TOKENIZER_FILE, bundle_file, bundle_sha256
from .tokenizer import TextTokenizer


def available_providers() -> list[str]:
    """The providers a session here asks for, fastest first: the GPU ones only where a GPU answers (models.gpu)."""
    from .gpu import usable_providers

    return list(usable_providers())


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class OnnxClassifier:
    def __init__(self, onnx_path: str | Path, tokenizer: TextTokenizer, labels: list[str], spec: ModelSpec,
                 providers: list | None = None, threads: int = 0, spin: bool = True,
                 engine_cache: str | Path | None = None, max_batch: int = 64, fp16: bool = True) -> None:
        """`providers` as ONNX Runtime takes them; by default those that run here, TensorRT with one engine
        for batches up to `max_batch` (FP16 unless `fp16` is off), cached under `engine_cache`."""
        import onnxruntime as ort

        from .gpu import session_providers

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spin:  # idle intra-op threads sleep instead of spinning: a server's event loop needs those cores
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.onnx_path = Path(onnx_path)
        providers = providers or session_providers(onnx_path, max_batch, spec.max_length, engine_cache, fp16)
        self.session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        self.tokenizer = tokenizer
        self.labels = labels
        self.spec = spec

    @classmethod
    def from_dir(cls, bundle_dir: str | Path, **kwargs) -> "OnnxClassifier":
        spec = ModelSpec.from_dict(json.loads(bundle_file(bundle_dir, CHECKPOINT_SPEC).read_text()))
        labels = json.loads(bundle_file(bundle_dir, LABELS_FILE).read_text())
        tokenizer = TextTokenizer(bundle_file(bundle_dir, TOKENIZER_FILE), spec.max_length)
        return cls(bundle_file(bundle_dir, ONNX_FILE), tokenizer, labels, spec, **kwargs)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        (out,) = self.session.run(["logits"], {"input_ids": input_ids, "attention_mask": attention_mask})
        return out

    def text_logits(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(N, num_labels) logits in the order of `texts`, run in batches of similar length (`length_batches`)."""
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for idx in self.tokenizer.length_batches(texts, batch_size):
            out[idx] = self.logits(*self.tokenizer([texts[i] for i in idx]))
        return out

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(N, num_labels) class probabilities."""
        return softmax(self.text_logits(texts, batch_size))

    def predict(self, texts: list[str], batch_size: int = 64) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts, batch_size).argmax(1)]


__all__ = ["BUNDLE_FILES", "ONNX_FILE", "OnnxClassifier", "available_providers", "bundle_file", "bundle_sha256", "softmax"]
