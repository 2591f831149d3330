"""Clients of the server (rehearsal, season benchmark) wait as a 429 or 503 asks, and give up with a message."""
import httpx
import pytest

from yanjin.serving.client import ServerError, post


def server(answers: list[tuple[int, dict]]):
    calls = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        status, headers = answers[min(len(calls), len(answers)) - 1]
        return httpx.Response(status, headers=headers, json={"ok": status == 200})
    return httpx.Client(transport=httpx.MockTransport(handle)), calls


def test_waits_as_long_as_retry_after_says_then_succeeds():
    http, calls = server([(429, {"Retry-After": "3"}), (503, {"Retry-After": "1"}), (200, {})])
    slept = []
    assert post(http, "http://yanjin/predict", {"items": []}, sleep=slept.append).json() == {"ok": True}
    assert slept == [3.0, 1.0] and len(calls) == 3


def test_gives_up_past_the_budget_and_other_errors_at_once():
    http, _ = server([(429, {"Retry-After": "60"})])
    with pytest.raises(ServerError, match="still 429 after waiting 60 s"):
        post(http, "http://yanjin/predict", {}, max_wait_s=100, sleep=lambda s: None)
    http, calls = server([(400, {})])
    with pytest.raises(ServerError, match="400"):
        post(http, "http://yanjin/predict", {}, sleep=lambda s: None)
    assert len(calls) == 1
