"""API keys, roles and rate limits, without a server: the keys file, the keyring, the middleware."""
import asyncio
import json
import stat

import pytest

from yanjin.serving.auth import (PRINCIPAL_HEADER, ApiKey, Authenticator, KeyFile, Keyring, KeysError, RateLimit,
                                 add_key, principal, read_keys, revoke_key, rotate_key, token_sha256)


def test_a_key_is_stored_hashed_in_a_private_file(tmp_path):
    path = tmp_path / "keys.json"
    token = add_key(path, "crm-app", "client", 100)
    stored = path.read_text()
    assert token not in stored and token_sha256(token) in stored           # the token is never written
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_keys(path) == [ApiKey("crm-app", "client", token_sha256(token), 100)]
    again = add_key(path, "crm-app", "reviewer")                            # replacing a key revokes the old token
    assert [k.role for k in read_keys(path)] == ["reviewer"] and Keyring(read_keys(path)).find(token) is None
    assert Keyring(read_keys(path)).find(again).name == "crm-app"


@pytest.mark.parametrize("content, problem", [
    ("{", "not a keys file"),
    ('{"keys": [{"name": "a", "role": "admin", "sha256": "' + "0" * 64 + '"}]}', "role 'admin'"),
    ('{"keys": [{"name": "a", "role": "client", "sha256": "plaintext-token"}]}', "64 lower-case hex digits"),
    ('{"keys": [{"name": "a", "role": "client"}]}', "not a keys file"),
    ('{"keys": [{"name": "a", "role": "client", "sha256": "' + "g" * 64 + '"}]}', "64 lower-case hex digits"),
    ('{"keys": [{"name": "a", "role": "client", "sha256": "' + "0" * 64 + '", "per_minute": 0}]}', "at least 1"),
    ('{"keys": [{"name": "", "role": "client", "sha256": "' + "0" * 64 + '"}]}', "needs a name"),
])
def test_a_malformed_keys_file_is_refused_naming_the_problem(tmp_path, content, problem):
    (tmp_path / "keys.json").write_text(content)
    with pytest.raises(KeysError, match=problem):
        read_keys(tmp_path / "keys.json")


def test_concurrent_adds_from_many_processes_lose_no_key_and_the_file_stays_private(tmp_path):
    """60 `yanjin keys add` at once (processes, as people and scripts run them): every key reported added is
    in the file; an existing 0644 file becomes 0600."""
    from concurrent.futures import ProcessPoolExecutor

    path = tmp_path / "keys.json"
    path.write_text('{"keys": []}')
    path.chmod(0o644)
    with ProcessPoolExecutor(8) as pool:
        tokens = list(pool.map(add_key, [path] * 60, [f"app-{i}" for i in range(60)], ["client"] * 60))
    keys = Keyring(read_keys(path))
    assert len(keys.keys) == 60 and all(keys.find(t) for t in tokens)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".keys.json.")]   # no temporary file left


def test_revoke_and_rotate_take_effect_in_a_running_server_without_a_restart(tmp_path):
    path, now = tmp_path / "keys.json", [0.0]
    old = add_key(path, "crm-app", "client")
    gone = add_key(path, "old-app", "client")
    watched = KeyFile(path, clock=lambda: now[0])
    assert watched.current().find(old) and watched.current().find(gone)
    new = rotate_key(path, "crm-app")
    revoke_key(path, "old-app")
    assert watched.current().find(old)            # checked at most once a second
    now[0] += 1.5
    assert watched.current().find(old) is None and watched.current().find(new).name == "crm-app"
    assert watched.current().find(gone) is None and [k.name for k in read_keys(path)] == ["crm-app"]
    path.write_text('{"keys": [{"name": "x", "role": "client", "sha256": "nothex", "per_minute": 1}]}')
    now[0] += 1.5
    assert watched.current().find(new).name == "crm-app"   # a broken edit is refused; the last good keys stay
    with pytest.raises(KeysError, match="no key named 'nobody'"):
        revoke_key(tmp_path / "other.json", "nobody")


def test_no_keys_file_means_no_keys():
    assert read_keys("/nonexistent/keys.json") == []


def test_the_rate_limit_refills_over_time():
    now = [0.0]
    limit, key = RateLimit(clock=lambda: now[0]), ApiKey("k", "client", "0" * 64, per_minute=60)
    assert [limit.take(key) for _ in range(60)] == [0.0] * 60                # a burst of a minute's worth
    assert limit.take(key) == pytest.approx(1.0)                              # then one a second
    now[0] += 2.0
    assert limit.take(key) == 0.0 and limit.take(key) == 0.0 and limit.take(key) > 0


def call(app, path: str, headers: dict[str, str]) -> tuple[int, dict, dict | None]:
    """One request through the middleware: (status, body, what the service was handed)."""
    seen, sent = [], []

    async def service(scope, receive, send):
        seen.append({k.decode(): v.decode() for k, v in scope["headers"]})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": path, "method": "POST",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(app(service, keys=Keyring(KEYS), open_predict=OPEN)(scope, receive, send))
    body = json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))
    return sent[0]["status"], body, (seen[0] if seen else None)


CLIENT, REVIEWER = "yj_client-token", "yj_reviewer-token"
KEYS = [ApiKey("crm-app", "client", token_sha256(CLIENT)), ApiKey("anna", "reviewer", token_sha256(REVIEWER))]
OPEN = True


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("path, headers, status", [
    ("/predict", {}, 200),                                   # open in the embedded default
    ("/info", {}, 200),
    ("/feedback", {}, 401),
    ("/feedback", bearer("yj_guessed"), 401),
    ("/feedback", bearer(CLIENT), 200),
    ("/feedback", {"X-API-Key": CLIENT}, 200),
    ("/review", bearer(CLIENT), 403),
    ("/review", bearer(REVIEWER), 200),
    ("/feedback", bearer(REVIEWER), 200),
])
def test_routes_answer_by_key_and_role(path, headers, status):
    code, body, handed = call(Authenticator, path, headers)
    assert code == status, body
    assert (handed is None) == (status != 200)               # a refused call never reaches the service
    if status != 200:
        assert set(body) == {"error"}


def test_predict_needs_a_key_when_it_is_not_open():
    global OPEN
    OPEN = False
    try:
        assert call(Authenticator, "/predict", {})[0] == 401
        assert call(Authenticator, "/predict", bearer(CLIENT))[0] == 200
    finally:
        OPEN = True


def test_the_service_learns_who_called_and_a_client_cannot_claim_to_be_someone_else():
    spoof = bearer(CLIENT) | {PRINCIPAL_HEADER.decode(): "anna:reviewer"}
    _, _, handed = call(Authenticator, "/feedback", spoof)
    assert principal(handed) == ("crm-app", "client")
    _, _, handed = call(Authenticator, "/predict", {PRINCIPAL_HEADER.decode(): "anna:reviewer"})
    assert principal(handed) is None                         # anonymous stays anonymous
