"""The HTTP ceiling: the same request schema, limits and middleware as yanjin's service, no model.

    bentoml serve benchmarks/serving/noop_service.py:Noop --port 3002
"""
from __future__ import annotations

from typing import Annotated

import bentoml
from pydantic import Field

from yanjin.registry import CHAMPION
from yanjin.serving.guard import RequestGuard
from yanjin.serving.service import Item, Result, Scored

CONSTANT = Result(prediction_id="0", label="card_arrival", confidence=1.0,
                  top_k=[Scored(label="card_arrival", confidence=1.0)], needs_review=False,
                  model="noop", version="0", variant="noop", arm=CHAMPION)


@bentoml.service(name="noop", http={"host": "127.0.0.1"}, traffic={"timeout": 30, "max_concurrency": 256}, workers=1)
class Noop:
    @bentoml.api
    def predict(self, items: Annotated[list[Item], Field(max_length=64)]) -> list[Result]:
        return [CONSTANT] * len(items)


Noop.add_asgi_middleware(RequestGuard, max_body_bytes=1_000_000)
