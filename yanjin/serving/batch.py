"""One model call for a merged batch, without letting one text fail the others.

Adaptive batching merges the texts of many requests into one model call. If that call raises, the
batch is split in halves until each failing text stands alone: the texts the model can answer are
answered, and only the failing ones carry the error (log2(n) extra calls per failing text).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np


@dataclass(frozen=True)
class Part:
    positions: list[int]            # indices into the texts given
    probs: np.ndarray | None        # (len(positions), n_labels); None when the model failed
    latency_ms: float = 0.0
    error: str | None = None        # "TypeName: message" of the failure, for one text alone


def classify_each(predict: Callable[[list[str]], np.ndarray], texts: Sequence[str]) -> Iterator[Part]:
    """Parts that cover every text once: answered parts, and failed single texts."""
    pending = [list(range(len(texts)))]
    while pending:
        part = pending.pop()
        start = time.perf_counter()
        try:
            probs = predict([texts[j] for j in part])
        except Exception as e:  # noqa: BLE001 - whatever the runtime raises, the rest of the batch is answered
            if len(part) > 1:
                half = len(part) // 2
                pending += [part[half:], part[:half]]
                continue
            yield Part(part, None, error=f"{type(e).__name__}: {e}")
            continue
        yield Part(part, probs, (time.perf_counter() - start) * 1000)
