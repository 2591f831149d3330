"""Requests a client should never send, each with the 4xx it must get: the server's table of bad
input, shared by the server test and the container rehearsal (infra/rehearse.py)."""
from __future__ import annotations

import json


def malformed_requests(max_chars: int, max_items: int, max_body_bytes: int) -> list[tuple[str, bytes, str]]:
    """(what, body bytes, content type) for a server started with these limits."""
    item = {"text": "hi"}
    return [
        ("not JSON", b"{items: [", "application/json"),
        ("truncated JSON", b'{"items": [{"text": "hi"}', "application/json"),
        ("non-UTF-8 bytes", '{"items": [{"text": "caf\u00e9"}]}'.encode("latin-1"), "application/json"),
        ("UTF-16 bytes", json.dumps({"items": [item]}).encode("utf-16"), "application/json"),
        ("empty body", b"", "application/json"),
        ("JSON null", b"null", "application/json"),
        ("JSON array body", json.dumps([item]).encode(), "application/json"),
        ("JSON string body", b'"my card is lost"', "application/json"),
        ("JSON number body", b"42", "application/json"),
        ("items missing", b'{"texts": ["hi"]}', "application/json"),
        ("items null", b'{"items": null}', "application/json"),
        ("items not a list", b'{"items": "hi"}', "application/json"),
        ("item not an object", b'{"items": ["hi"]}', "application/json"),
        ("text missing", b'{"items": [{"key": "u"}]}', "application/json"),
        ("text a number", b'{"items": [{"text": 42}]}', "application/json"),
        ("text null", b'{"items": [{"text": null}]}', "application/json"),
        ("text a list", b'{"items": [{"text": ["hi"]}]}', "application/json"),
        ("text an object", b'{"items": [{"text": {"en": "hi"}}]}', "application/json"),
        ("empty text", b'{"items": [{"text": ""}]}', "application/json"),
        ("whitespace text", b'{"items": [{"text": " \\n\\t "}]}', "application/json"),
        ("text too long", json.dumps({"items": [{"text": "a" * (max_chars + 1)}]}).encode(), "application/json"),
        ("too many items", json.dumps({"items": [item] * (max_items + 1)}).encode(), "application/json"),
        ("body too large", json.dumps({"items": [{"text": "hi " * (max_body_bytes // 2)}]}).encode(),
         "application/json"),
        ("key too long", json.dumps({"items": [{"text": "hi", "key": "k" * 300}]}).encode(), "application/json"),
        ("key a number", b'{"items": [{"text": "hi", "key": 7}]}', "application/json"),
        ("pickle content type", b"\x80\x04\x95", "application/vnd.bentoml+pickle"),
        ("form content type", b"items=hi", "application/x-www-form-urlencoded"),
        ("plain-text content type", b"my card is lost", "text/plain"),
        ("no content type", b'{"items": [{"text": "hi"}]}', ""),
        ("empty item list", b'{"items": []}', "application/json"),
        ("nested 40 deep", ('{"items": [{"text": "hi", "key": ' + "[" * 40 + "]" * 40 + "}]}").encode(), "application/json"),
        ("nested 5000 deep", ('{"items": ' + "[" * 5000 + "]" * 5000 + "}").encode(), "application/json"),
        ("integer of 5000 digits", ('{"items": [{"text": "hi", "key": ' + "9" * 5000 + "}]}").encode(), "application/json"),
        ("only control characters", json.dumps({"items": [{"text": "\u0001\u0002\u007f"}]}).encode(), "application/json"),
        ("NUL in text", json.dumps({"items": [{"text": "my card\u0000 is lost"}]}).encode(), "application/json"),
        ("only invisible characters", json.dumps({"items": [{"text": "\u200b\u200d\u2060"}]}).encode(),
         "application/json"),
    ]
