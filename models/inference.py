"""Running an exported ONNX bundle: the one inference path shared by evaluation, gate and serving."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .family import CHECKPOINT_SPEC, LABELS_FILE, TOKENIZER_FILE, ModelSpec
from .tokenizer import TextTokenizer

ONNX_FILE = "model.onnx"
# Fastest first; only those the installed onnxruntime offers are requested.
PROVIDER_PREFERENCE = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def bundle_file(bundle_dir: str | Path, name: str) -> Path:
    """A bundle file, found at the top level or under MLflow's `extra_files/` when downloaded."""
    root = Path(bundle_dir)
    for candidate in (root / name, root / "extra_files" / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{root}: bundle has no {name}")


def available_providers() -> list[str]:
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    return [p for p in PROVIDER_PREFERENCE if p in have]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class OnnxClassifier:
    def __init__(self, onnx_path: str | Path, tokenizer: TextTokenizer, labels: list[str],
                 spec: ModelSpec, providers: list[str] | None = None, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.onnx_path = Path(onnx_path)
        self.session = ort.InferenceSession(str(onnx_path), options, providers=providers or available_providers())
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

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(N, num_labels) class probabilities."""
        chunks = []
        for i in range(0, len(texts), batch_size):
            ids, mask = self.tokenizer(texts[i : i + batch_size])
            chunks.append(softmax(self.logits(ids, mask)))
        return np.concatenate(chunks) if chunks else np.zeros((0, len(self.labels)), dtype=np.float32)

    def predict(self, texts: list[str], batch_size: int = 64) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts, batch_size).argmax(1)]


BUNDLE_FILES = (ONNX_FILE, TOKENIZER_FILE, LABELS_FILE, CHECKPOINT_SPEC)


def bundle_sha256(bundle_dir: str | Path) -> str:
    """One digest over every file a bundle needs, so tampering with any of them is detected."""
    import hashlib

    from .pretrained import sha256_file

    lines = [f"{name} {sha256_file(bundle_file(bundle_dir, name))}" for name in BUNDLE_FILES]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
