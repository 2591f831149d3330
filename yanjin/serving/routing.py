"""A/B assignment: which arm (champion or challenger) answers a request.

Sticky when the caller gives a key (a user id, a session): the same key always lands in the same
arm for a given challenger share, and raising the share only moves keys from champion to
challenger, never back. Without a key the draw is random.
"""
from __future__ import annotations

import hashlib
import random

from ..registry import CHALLENGER, CHAMPION  # the arms are the aliases that fill them

__all__ = ["CHALLENGER", "CHAMPION", "assign_arm", "key_position"]


def key_position(key: str) -> float:
    """Where a key falls in [0, 1): the first 8 bytes of its sha256, uniformly spread."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def assign_arm(key: str | None, challenger_share: float, rng: random.Random | None = None) -> str:
    if challenger_share <= 0.0:
        return CHAMPION
    position = key_position(key) if key else (rng or random).random()
    return CHALLENGER if position < challenger_share else CHAMPION
