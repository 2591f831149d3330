"""The request guard in front of the service, driven as a plain ASGI app (no server needed)."""
import asyncio

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from yanjin.serving.guard import RequestGuard


def app_with(release: asyncio.Event | None = None, status: int = 200) -> Starlette:
    async def predict(request):
        await request.body()
        if release is not None:
            await release.wait()
        return JSONResponse({"ok": True}, status_code=status)

    return Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/readyz", lambda r: JSONResponse({}))])


def test_requests_beyond_the_cap_get_503_with_retry_after_and_probes_still_answer():
    guard = RequestGuard(app_with(release := asyncio.Event()), max_in_flight=2)

    async def scenario():
        import httpx

        transport = httpx.ASGITransport(app=guard)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            slow = [asyncio.create_task(c.post("/predict", json={"items": []})) for _ in range(2)]
            await asyncio.sleep(0.05)
            busy = await c.post("/predict", json={"items": []})
            probe = await c.get("/readyz")
            release.set()
            done = await asyncio.gather(*slow)
            after = await c.post("/predict", json={"items": []})
        return busy, probe, done, after

    busy, probe, done, after = asyncio.run(scenario())
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1" and "limit 2" in busy.json()["error"]
    assert probe.status_code == 200 and [r.status_code for r in done] == [200, 200] and after.status_code == 200


def test_overload_answers_from_the_app_also_carry_retry_after():
    with TestClient(RequestGuard(app_with(status=503))) as c:
        r = c.post("/predict", json={"items": []})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"


def test_a_chunked_body_over_the_limit_is_cut_off_with_413():
    def chunks():
        for _ in range(20):
            yield b"x" * 100

    with TestClient(RequestGuard(app_with(), max_body_bytes=1000)) as c:
        r = c.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "1000-byte limit" in r.json()["error"]
