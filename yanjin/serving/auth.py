"""Who may call the server, and how often: API keys stored hashed, roles per route, a rate limit per key.

The keys file (JSON; on a cluster a mounted Secret, in embedded mode `<state>/api-keys.json`, written
by `yanjin keys add`) holds only the sha256 of each token, never the token:

    {"keys": [{"name": "crm-app", "role": "client", "sha256": "…", "per_minute": 600}]}

Roles: a `client` may predict and report feedback (kept as feedback: untrusted unless the profile
says otherwise); a `reviewer` may also label predictions through /review (trusted). /predict stays
open without a key when `open_predict` is on (the embedded default, bound to localhost).

The middleware answers 401 (no or unknown key), 403 (a key whose role may not call the route) and
429 with Retry-After (the key's rate spent) before the request reaches the service, and hands the
caller's name and role to the service in a header it sets itself (any copy sent by a client is
removed first).
"""
from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..state import write_atomically
from .guard import reply

log = logging.getLogger(__name__)

CLIENT, REVIEWER = "client", "reviewer"
ROLES = (CLIENT, REVIEWER)
PRINCIPAL_HEADER = b"x-yanjin-principal"   # "name:role", set by the middleware only
TOKEN_PREFIX = "yj_"

# who may call what; a route not named here needs no key (probes, metrics, /info, the API docs)
ROUTE_ROLES = {"/feedback": ROLES, "/review": (REVIEWER,)}
PREDICT = "/predict"
MAX_KEY_CHARS = 256   # the API's own limit on a sticky key (longer: 422)


class KeysError(ValueError):
    """The keys file is unreadable or malformed."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    role: str
    sha256: str
    per_minute: int = 600   # requests per minute, every route together


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)   # 256 bits: a plain sha256 is enough to store it


def read_keys(path: str | Path) -> list[ApiKey]:
    """The keys in `path`; none when the file does not exist (then only open routes answer)."""
    p = Path(path)
    if not p.is_file():
        return []
    try:
        entries = json.loads(p.read_text())["keys"]
        keys = [ApiKey(**e) for e in entries]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise KeysError(f"{p}: not a keys file ({type(e).__name__}: {e}); expected "
                        '{"keys": [{"name", "role", "sha256", "per_minute"}]}') from None
    for k in keys:
        check_key(k, str(p))
    if len({k.name for k in keys}) != len(keys):
        raise KeysError(f"{p}: key names must be unique")
    return keys


def check_key(k: ApiKey, where: str) -> None:
    """Refuse an entry the server could not use (a bad digest would 500 every keyed request, a zero rate divide)."""
    if not isinstance(k.name, str) or not k.name.strip():
        raise KeysError(f"{where}: a key needs a name")
    if k.role not in ROLES:
        raise KeysError(f"{where}: key {k.name!r} has role {k.role!r}; roles are {', '.join(ROLES)}")
    if not isinstance(k.sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", k.sha256):
        raise KeysError(f"{where}: key {k.name!r}: sha256 must be 64 lower-case hex digits (the token itself is "
                        "never stored)")
    if isinstance(k.per_minute, bool) or not isinstance(k.per_minute, int) or k.per_minute < 1:
        raise KeysError(f"{where}: key {k.name!r}: per_minute must be a whole number of at least 1, not {k.per_minute!r}")


@contextmanager
def _locked(path: Path):
    """One writer of the keys file at a time, across processes (a lock file beside it, never the file itself:
    the file is replaced, not rewritten)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _write_keys(path: Path, keys: list[ApiKey]) -> None:
    write_atomically(path, (json.dumps({"keys": [asdict(k) for k in keys]}, indent=2) + "\n").encode(), 0o600)


def add_key(path: str | Path, name: str, role: str, per_minute: int = 600) -> str:
    """Add (or replace) a key in the file; returns the token, which is shown once and never stored."""
    token = new_token()
    key = ApiKey(name, role, token_sha256(token), per_minute)
    check_key(key, "new key")
    p = Path(path)
    with _locked(p):
        _write_keys(p, [k for k in read_keys(p) if k.name != name] + [key])
    return token


def revoke_key(path: str | Path, name: str) -> ApiKey:
    """Remove a key: a running server refuses it within a second (KeyFile reloads on change)."""
    p = Path(path)
    with _locked(p):
        keys = read_keys(p)
        gone = [k for k in keys if k.name == name]
        if not gone:
            raise KeysError(f"{p}: no key named {name!r} (`yanjin keys list`)")
        _write_keys(p, [k for k in keys if k.name != name])
    return gone[0]


def rotate_key(path: str | Path, name: str) -> str:
    """A new token for a key, same name, role and rate; the old token stops working at once."""
    p = Path(path)
    token = new_token()
    with _locked(p):
        keys = read_keys(p)
        if not any(k.name == name for k in keys):
            raise KeysError(f"{p}: no key named {name!r} (`yanjin keys list`)")
        _write_keys(p, [replace(k, sha256=token_sha256(token)) if k.name == name else k for k in keys])
    return token


class KeyFile:
    """The keys file as the server sees it: read at start (a bad file stops the start), re-read when it
    changes (a rotated Secret, a revoked key) at most once a second; a bad new version is refused with an
    error in the log and the last good keys stay in force."""

    def __init__(self, path: str | Path, check_every: float = 1.0, clock=time.monotonic) -> None:
        self.path, self.check_every, self.clock = Path(path), check_every, clock
        self._lock = threading.Lock()
        self._seen = self._stamp()
        self.keyring = Keyring(read_keys(self.path))
        self._checked = clock()

    def _stamp(self):
        try:
            st = self.path.stat()
            return st.st_ino, st.st_mtime_ns, st.st_size
        except FileNotFoundError:
            return None

    def current(self) -> Keyring:
        now = self.clock()
        if now - self._checked < self.check_every:
            return self.keyring
        with self._lock:
            self._checked = now
            stamp = self._stamp()
            if stamp != self._seen:
                self._seen = stamp
                try:
                    self.keyring = Keyring(read_keys(self.path))
                    log.info("API keys reloaded from %s: %d key(s)", self.path, len(self.keyring.keys))
                except KeysError as e:
                    log.error("API keys file changed but is not valid; the previous keys stay in force: %s", e)
        return self.keyring


class Keyring:
    """Token -> key, compared in constant time over the stored digests."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys

    def current(self) -> "Keyring":
        return self   # a fixed set of keys (KeyFile is the file the server watches)

    def find(self, token: str) -> ApiKey | None:
        digest = token_sha256(token)
        found = None
        for k in self.keys:  # no early exit: the time taken does not say which key nearly matched
            if hmac.compare_digest(k.sha256, digest):
                found = k
        return found


class RateLimit:
    """A token bucket per key: `per_minute` requests a minute, bursts up to the same number."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}   # key name -> (tokens left, when counted)

    def take(self, key: ApiKey) -> float:
        """0 when the request may pass, else the seconds until it would."""
        now, rate = self.clock(), key.per_minute / 60.0
        tokens, then = self.buckets.get(key.name, (float(key.per_minute), now))
        tokens = min(float(key.per_minute), tokens + (now - then) * rate)
        if tokens < 1.0:
            self.buckets[key.name] = (tokens, now)
            return (1.0 - tokens) / rate
        self.buckets[key.name] = (tokens - 1.0, now)
        return 0.0


def principal(headers) -> tuple[str, str] | None:
    """(name, role) the middleware put on the request (its headers as text), or None for an anonymous caller."""
    raw = headers.get(PRINCIPAL_HEADER.decode())
    if not raw:
        return None
    name, _, role = raw.rpartition(":")
    return name, role


def bind_keys(body: bytes, name: str | None) -> bytes:
    """A /predict body with each item's sticky A/B key bound to the caller: an authenticated caller's
    key becomes "<API key name>:<digest of (name, key)>", so two callers never share a key's arm; an
    anonymous caller's key is dropped (it gets a random arm). Keys that are not strings or are too long
    are left for validation to refuse. Each item also carries who asked (`asked_by`: the API key's name,
    None when anonymous), logged with its prediction; whatever a client put there is replaced."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    items = parsed.get("items") if isinstance(parsed, dict) else None
    if not isinstance(items, list):
        return body
    for item in items:
        if isinstance(item, dict):
            item["asked_by"] = name
        if isinstance(item, dict) and isinstance(item.get("key"), str) and len(item["key"]) <= MAX_KEY_CHARS:
            if name is None:
                del item["key"]
            else:
                digest = hashlib.sha256(f"{name}\0{item['key']}".encode("utf-8")).hexdigest()
                item["key"] = f"{name}:{digest}"   # the service reads the caller back from it (key_principal)
    return json.dumps(parsed).encode("utf-8")


def key_principal(bound_key: str | None) -> str | None:
    """The caller a bound sticky key came from (every string key a client sends is rebound or dropped)."""
    return bound_key.split(":", 1)[0] if bound_key and ":" in bound_key else None


def bearer(headers: dict[bytes, bytes]) -> str | None:
    """The token of `Authorization: Bearer <token>`, or of `X-API-Key: <token>`."""
    auth = headers.get(b"authorization", b"")
    if auth[:7].lower() == b"bearer ":
        return auth[7:].strip().decode("latin-1")
    key = headers.get(b"x-api-key")
    return key.strip().decode("latin-1") if key else None


class Authenticator:
    """ASGI middleware: authenticate, authorise and rate-limit, or answer 401/403/429 and change nothing."""

    def __init__(self, app, keys: KeyFile | Keyring, open_predict: bool = True) -> None:
        self.app = app
        self.keys = keys
        self.open_predict = open_predict
        self.limits = RateLimit()

    def _allowed(self, path: str) -> tuple[str, ...] | None:
        if path == PREDICT:
            return None if self.open_predict else ROLES
        return ROUTE_ROLES.get(path)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        raw = [(k, v) for k, v in scope.get("headers", []) if k.lower() != PRINCIPAL_HEADER]
        headers = {k.lower(): v for k, v in raw}
        roles = self._allowed(scope["path"])
        token = bearer(headers)
        key = self.keys.current().find(token) if token else None
        if roles is not None:
            if token is None:
                return await reply(401, f"{scope['path']} needs an API key (Authorization: Bearer <token>)",
                                        [(b"www-authenticate", b'Bearer realm="yanjin"')])(send)
            if key is None:
                return await reply(401, "unknown API key", [(b"www-authenticate", b'Bearer error="invalid_token"')])(send)
            if key.role not in roles:
                return await reply(403, f"key {key.name!r} ({key.role}) may not call {scope['path']}; "
                                             f"that needs the role {' or '.join(roles)}")(send)
        if key is not None:
            wait = self.limits.take(key)
            if wait > 0:
                return await reply(429, f"key {key.name!r}: rate limit of {key.per_minute} requests a minute "
                                             f"reached", [(b"retry-after", str(max(1, round(wait))).encode())])(send)
            raw.append((PRINCIPAL_HEADER, f"{key.name}:{key.role}".encode()))
        if scope["path"] == PREDICT and scope.get("method") == "POST":
            receive = _bound(receive, key.name if key else None)
            raw = [(k, v) for k, v in raw if k.lower() != b"content-length"]
        await self.app(scope | {"headers": raw}, receive, send)


def _bound(receive, name: str | None):
    """`receive` with the whole body read and its sticky keys bound to the caller (bind_keys)."""
    done = False

    async def bound():
        nonlocal done
        if done:
            return await receive()
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return message
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        done = True
        return {"type": "http.request", "body": bind_keys(b"".join(chunks), name), "more_body": False}
    return bound
