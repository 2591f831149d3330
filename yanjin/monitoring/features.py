"""What drift is measured on: per-text features of live traffic, computed the same way for the
reference (the served version's own training data) and for a window of the prediction log.

    chars, tokens   length in characters and in the served tokenizer's word pieces (untruncated)
    oov_rate        share of words never seen in the training texts
    label           predicted intent (categorical)         } from the served ONNX model
    confidence      top-class probability                   }
    novelty         mean cosine distance from the text's sentence embedding (the served version's
                    encoder, mean-pooled) to its k nearest reference embeddings
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..config import DRIFT_CATEGORICAL, DRIFT_NUMERICAL

WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
NUMERICAL, CATEGORICAL = DRIFT_NUMERICAL, DRIFT_CATEGORICAL  # named in the config schema (MonitorParams)


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


@dataclass
class Featurizer:
    classifier: object            # models.inference.OnnxClassifier of the served version
    encoder: object               # models.encoder.Classifier from its checkpoint (embeddings)
    vocabulary: frozenset[str]    # words of its training texts
    reference_embeddings: np.ndarray  # (R, C), L2-normalised
    counter: object = None        # the served tokenizer without truncation or padding (true lengths)
    k: int = 10

    @classmethod
    def build(cls, bundle_dir, checkpoint_dir, reference_texts: list[str], vocabulary_texts: list[str],
              k: int = 10) -> "Featurizer":
        """vocabulary_texts: the rest of the training data, so reference texts have honest OOV rates
        (a vocabulary built from the reference itself would give them 0)."""
        from ..models.family import load_checkpoint
        from ..models.inference import OnnxClassifier

        classifier = OnnxClassifier.from_dir(bundle_dir)
        encoder, _, _ = load_checkpoint(checkpoint_dir)
        from tokenizers import Tokenizer

        vocabulary = frozenset(w for t in (vocabulary_texts or reference_texts) for w in words(t))
        counter = Tokenizer.from_file(str(classifier.tokenizer.path))
        counter.no_truncation()
        counter.no_padding()
        made = cls(classifier, encoder, vocabulary, np.zeros((0, 1), dtype=np.float32), counter, k)
        made.reference_embeddings = made.embed(reference_texts)
        return made

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        import torch

        chunks = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                ids, mask = self.classifier.tokenizer(texts[i: i + batch_size])
                e = self.encoder.embed(torch.from_numpy(ids), torch.from_numpy(mask))   # (B, C)
                chunks.append(torch.nn.functional.normalize(e, dim=-1).numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.reference_embeddings.shape[1]), np.float32)

    def novelty(self, embeddings: np.ndarray, is_reference: bool = False) -> np.ndarray:
        """Mean cosine distance to the k nearest reference texts (a reference text skips itself)."""
        sims = embeddings @ self.reference_embeddings.T                     # (N, R)
        if is_reference:
            np.fill_diagonal(sims, -np.inf)
        nearest = -np.partition(-sims, self.k - 1, axis=1)[:, : self.k]     # (N, k)
        return 1.0 - nearest.mean(axis=1)

    def frame(self, texts: list[str], is_reference: bool = False) -> pd.DataFrame:
        probs = self.classifier.predict_proba(texts)
        word_lists = [words(t) for t in texts]
        return pd.DataFrame({
            "chars": [len(t) for t in texts],
            "tokens": [len(e.ids) - 2 for e in self.counter.encode_batch(list(texts))],   # without [CLS]/[SEP]
            "oov_rate": [sum(w not in self.vocabulary for w in ws) / len(ws) if ws else 1.0 for ws in word_lists],
            "confidence": probs.max(axis=1) if len(texts) else [],
            "novelty": self.novelty(self.embed(texts), is_reference),
            "label": [self.classifier.labels[i] for i in probs.argmax(axis=1)],
        })
