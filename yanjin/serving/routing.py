"""A/B assignment: which arm (champion or challenger) answers a request.

Sticky when an authenticated caller gives a key (a user id, a session): the same key always lands in
the same arm for a given challenger share, and raising the share only moves keys from champion to
challenger, never back. The position of a key is an HMAC under the server's secret, so no client can
choose keys offline that land in the arm it wants; the key is bound to the caller's API key first
(auth.bind_keys), and an anonymous caller's key is ignored. Without a key the draw is random.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import random
import secrets
from pathlib import Path

from ..registry import CHALLENGER, CHAMPION  # the arms are the aliases that fill them

__all__ = ["CHALLENGER", "CHAMPION", "assign_arm", "key_position", "read_secret"]
SECRET_BYTES = 32


def read_secret(path: str | Path, create: bool = False) -> bytes:
    """The A/B secret (a Kubernetes Secret's file on a cluster; 0600 under the state folder in embedded
    mode, made on first use with `create`)."""
    p = Path(path)
    if not p.is_file():
        if not create:
            raise FileNotFoundError(f"{p}: no A/B secret; `yanjin serve` creates one, on a cluster mount the Secret")
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(SECRET_BYTES))
    secret = p.read_bytes()
    if len(secret) < 16:
        raise ValueError(f"{p}: an A/B secret of {len(secret)} bytes is too short to keep keys unpredictable (>= 16)")
    return secret


def key_position(key: str, secret: bytes) -> float:
    """Where a key falls in [0, 1): the first 8 bytes of its HMAC-SHA256 under the server's secret."""
    return int.from_bytes(hmac.new(secret, key.encode("utf-8"), hashlib.sha256).digest()[:8], "big") / 2**64


def assign_arm(key: str | None, challenger_share: float, secret: bytes, rng: random.Random | None = None) -> str:
    if challenger_share <= 0.0:
        return CHAMPION
    position = key_position(key, secret) if key else (rng or random).random()
    return CHALLENGER if position < challenger_share else CHAMPION
