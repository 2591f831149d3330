"""A client of the yanjin server that waits when asked to: 429 (rate limit) and 503 (busy, or not ready yet)
are retried after the server's Retry-After (seconds or an HTTP date), never sooner, up to a total wait; any
other error status raises at once with the server's message."""
from __future__ import annotations

import email.utils
import time

import httpx

RETRIED = (429, 503)


class ServerError(RuntimeError):
    """The server refused a call, or kept asking to wait beyond the budget; the message says which and why."""


def retry_after_s(response: httpx.Response, default_s: float = 1.0) -> float:
    raw = response.headers.get("Retry-After", "").strip()
    if raw.isdigit():
        return float(raw)
    if raw:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(raw).timestamp() - time.time())
        except (TypeError, ValueError):
            pass
    return default_s


def post(http: httpx.Client, url: str, payload: dict, max_wait_s: float = 120.0,
         sleep=time.sleep) -> httpx.Response:
    """POST, honouring Retry-After on 429/503 for at most `max_wait_s` in all."""
    waited = 0.0
    while True:
        response = http.post(url, json=payload)
        if response.status_code not in RETRIED:
            if response.is_error:
                raise ServerError(f"{url}: {response.status_code} {response.text[:300]}")
            return response
        wait = retry_after_s(response)
        if waited + wait > max_wait_s:
            raise ServerError(f"{url}: still {response.status_code} after waiting {waited:.0f} s as the server asked "
                              f"(Retry-After {wait:.0f} s more would pass the {max_wait_s:.0f} s budget): "
                              f"{response.text[:200]}")
        sleep(wait)
        waited += wait
