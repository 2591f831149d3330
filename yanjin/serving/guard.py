"""ASGI middleware in front of the BentoML app: what must never reach the model code.

- request bodies over the limit: 413 (BentoML has no limit by default), checked on the declared
  length and again while reading, so a chunked upload cannot slip past;
- anything but JSON on a POST: 415 (BentoML also accepts pickle between services: never from clients);
- bodies that are not UTF-8 or not JSON, nested deeper than `max_depth`, or holding an integer
  longer than Python converts (4,300 digits): 400 naming the problem (each was a 500 before);
- every error body is one JSON object {"error": "...", "detail"?: ...}, whoever wrote it;
- /predict while the prediction log cannot keep what it answers (`refusing`, where every answer must be
  logged): 503 with Retry-After naming why, before any work is queued;
- more than `max_in_flight` requests at once: 503 with Retry-After, before any work is queued
  (BentoML's own concurrency cap answers 429 without Retry-After from outside this middleware, so
  it is only a backstop set higher); any other 429/503 passing through also gets Retry-After.
"""
from __future__ import annotations

import json
from typing import Callable

MAX_DEPTH = 32  # a request is {"items": [{...}]}: 3 levels; anything far deeper is an attack or a bug


def depth(value, limit: int) -> int:
    """How deeply `value` nests, looking no further than `limit` + 1 levels (iterative: no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (dict, list)) and node:
            deepest = max(deepest, level)
            if level > limit:
                return level
            stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def error_object(body: bytes) -> bytes:
    """Every error body as one JSON object {"error": ...}: BentoML answers an exception raised in an API
    as a one-element list, and its validation errors as an object."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return json.dumps({"error": body.decode("utf-8", "replace").strip() or "error"}).encode()
    if isinstance(parsed, dict) and "error" in parsed:
        return body
    if isinstance(parsed, list) and len(parsed) == 1 and isinstance(parsed[0], dict) and "error" in parsed[0]:
        return json.dumps(parsed[0]).encode()
    return json.dumps({"error": "request failed", "detail": parsed}).encode()


UNGUARDED = ("/readyz", "/livez", "/healthz", "/metrics")  # probes and scrapes must answer under load


def reply(status: int, message: str, extra: list[tuple[bytes, bytes]] = ()):
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]

    async def send_to(send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    return send_to


class RequestGuard:
    def __init__(self, app, max_body_bytes: int = 1_000_000, max_in_flight: int = 256, retry_after_s: int = 1,
                 max_depth: int = MAX_DEPTH, refusing: Callable[[], str | None] = lambda: None) -> None:
        self.app = app
        self.refusing = refusing
        self.max_body_bytes = max_body_bytes
        self.max_depth = max_depth
        self.max_in_flight = max_in_flight
        self.in_flight = 0  # one event loop per worker: no lock needed
        self.retry_after = str(retry_after_s).encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in UNGUARDED:
            return await self.app(scope, receive, send)
        if scope["path"] == "/predict" and (why := self.refusing()):
            return await reply(503, f"{why}; every answer must be logged (require_log): retry later",
                               [(b"retry-after", self.retry_after)])(send)
        if self.in_flight >= self.max_in_flight:
            return await reply(503, f"server busy: {self.in_flight} requests in flight (limit {self.max_in_flight}); "
                                     f"retry later", [(b"retry-after", self.retry_after)])(send)
        self.in_flight += 1
        try:
            await self._guarded(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _guarded(self, scope, receive, send) -> None:
        held: dict = {}  # an error response's start, held until its body is known

        async def send_with_retry_after(message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] in (429, 503) and not any(k == b"retry-after" for k, _ in message.get("headers", [])):
                    message = message | {"headers": list(message.get("headers", [])) + [(b"retry-after", self.retry_after)]}
                if message["status"] >= 400:
                    held["start"] = message
                    return
            elif message["type"] == "http.response.body" and "start" in held:
                held["body"] = held.get("body", b"") + message.get("body", b"")
                if message.get("more_body"):
                    return
                start, body = held.pop("start"), error_object(held.pop("body"))
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                await send(start | {"headers": headers + [(b"content-length", str(len(body)).encode())]})
                message = {"type": "http.response.body", "body": body}
            await send(message)

        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send_with_retry_after)
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type != b"application/json":
            shown = content_type.decode("latin-1") or "none"
            return await reply(415, f"content type {shown!r} is not accepted; send application/json")(send)
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            return await reply(413, f"request body of {declared.decode('latin-1')} bytes exceeds the "
                                     f"{self.max_body_bytes}-byte limit")(send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return await reply(413, f"request body exceeds the {self.max_body_bytes}-byte limit")(send)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            parsed = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError as e:
            return await reply(400, f"request body is not valid UTF-8 (byte 0x{body[e.start]:02x} at offset {e.start})")(send)
        except json.JSONDecodeError as e:
            return await reply(400, f"request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}")(send)
        except RecursionError:
            return await reply(400, f"request body is nested too deeply to parse; at most {self.max_depth} levels")(send)
        except ValueError as e:  # int("9" * 5000): Python refuses integers of over 4,300 digits
            return await reply(400, f"request body holds a number with too many digits ({e})")(send)
        if (levels := depth(parsed, self.max_depth)) > self.max_depth:
            return await reply(400, f"request body is nested {levels}+ levels deep; at most {self.max_depth}")(send)

        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_retry_after)
