"""The HTTP ceiling: the same request schema, limits and middleware as yanjin's service, no model.

    bentoml serve benchmarks/serving/noop_service.py:Noop --port 3002
    bentoml serve benchmarks/serving/noop_service.py:NoopFixed --port 3003

`Noop` is the ceiling as first measured (73% was Lite's share of it). `NoopFixed` also has the
media-type fix yanjin's service applies (`fix_media_types`): the ceiling of the HTTP stack as yanjin
now uses it, so Lite's share of it counts only the work yanjin does per request.
"""
from __future__ import annotations

from typing import Annotated

import bentoml
from pydantic import Field

from yanjin.registry import CHAMPION
from yanjin.serving.guard import RequestGuard
from yanjin.serving.service import Item, Result, Scored, fix_media_types

CONSTANT = Result(prediction_id="0", label="card_arrival", confidence=1.0,
                  top_k=[Scored(label="card_arrival", confidence=1.0)], needs_review=False,
                  model="noop", version="0", variant="noop", arm=CHAMPION)


@bentoml.service(name="noop", http={"host": "127.0.0.1"}, traffic={"timeout": 30, "max_concurrency": 256}, workers=1)
class Noop:
    @bentoml.api
    def predict(self, items: Annotated[list[Item], Field(max_length=64)]) -> list[Result]:
        return [CONSTANT] * len(items)


Noop.add_asgi_middleware(RequestGuard, max_body_bytes=1_000_000)


@bentoml.service(name="noop-fixed", http={"host": "127.0.0.1"}, traffic={"timeout": 30, "max_concurrency": 256},
                 workers=1)
class NoopFixed:
    @bentoml.api
    def predict(self, items: Annotated[list[Item], Field(max_length=64)]) -> list[Result]:
        return [CONSTANT] * len(items)


fix_media_types(NoopFixed)
NoopFixed.add_asgi_middleware(RequestGuard, max_body_bytes=1_000_000)
