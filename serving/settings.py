"""Serving settings: resolved once by `yanjin serve` (or from the environment by the service module)
and handed to the BentoML worker as JSON in `YANJIN_SERVE_SETTINGS`."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

ENV = "YANJIN_SERVE_SETTINGS"


@dataclass(frozen=True)
class ServeSettings:
    tracking_uri: str = "sqlite:///.yanjin/mlflow.db"
    model: str = "banking77-lite"       # registered model served (any family member)
    challenger_share: float = 0.0       # A/B: share of traffic for @challenger; 0 = champion only
    review_threshold: float = 0.7       # confidence below this sets needs_review (the seed's rule)
    top_k: int = 3
    max_chars: int = 2000               # per text; longer is a 413/422 unless truncate is on
    truncate: bool = False              # cut texts at max_chars (and the model's max_length tokens) instead
    max_items: int = 64                 # texts per request
    max_body_bytes: int = 1_000_000     # request body limit (BentoML has none by default)
    max_batch_size: int = 64            # adaptive batching: texts per model call
    max_latency_ms: int = 1000          # adaptive batching: a batch waits at most this long (503 beyond)
    max_concurrency: int = 256          # requests in flight; beyond it 503 with Retry-After
    poll_seconds: float = 5.0           # how often the aliases are re-read
    cache_size: int = 3                 # loaded versions kept in memory (LRU)
    prediction_log: str = ".yanjin/predictions.db"  # SQLite file or any SQLAlchemy URL
    threads: int = 0                    # ORT intra-op threads; 0 = all cores

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_dict(cls, values: dict) -> "ServeSettings":
        from ..config import build  # the pipeline config's checks: unknown names, wrong types

        return build(cls, values, "serving")

    @classmethod
    def from_env(cls) -> "ServeSettings":
        return cls.from_dict(json.loads(os.environ[ENV])) if os.environ.get(ENV) else cls()
