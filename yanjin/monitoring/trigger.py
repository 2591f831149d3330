"""When drift launches retraining, and when the quarter does.

Drift: a retraining run starts when `needed` of the last `checks` checks drifted and none started
within the cooldown. Flapping (drift, clean, drift, clean ...) never reaches 2 of 3; sustained
drift fires once, then waits out the cooldown. "insufficient data" checks are not votes.

Quarter: KFP's 6-field cron `0 0 0 1 1,4,7,10 *` (seconds first) on a cluster; embedded, the same
dates computed here. After downtime only the latest missed quarter runs: no catch-up storm.

The state is small JSON, kept where every runner sees it (a registered-model tag).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from ..registry import MONITOR_STATE_TAG

QUARTERLY_CRON = "0 0 0 1 1,4,7,10 *"   # KFP cron: seconds minutes hours day-of-month month day-of-week
QUARTER_MONTHS = (1, 4, 7, 10)
STATE_TAG = MONITOR_STATE_TAG


def quarter_start(at: datetime) -> datetime:
    """The first instant of the quarter `at` lies in (UTC)."""
    month = max(m for m in QUARTER_MONTHS if m <= at.month)
    return datetime(at.year, month, 1, tzinfo=timezone.utc)


def next_quarter_start(after: datetime) -> datetime:
    """The next 00:00:00 UTC on 1 Jan/Apr/Jul/Oct strictly after `after`."""
    current = quarter_start(after)
    month = current.month + 3
    return datetime(current.year + (month > 12), (month - 1) % 12 + 1, 1, tzinfo=timezone.utc)


@dataclass
class TriggerState:
    verdicts: list[tuple[float, bool]] = field(default_factory=list)   # (unix time, drifted), newest last
    last_retraining: float | None = None       # unix time a drift-triggered run started
    last_quarterly: float | None = None        # unix time the last quarterly run started
    runs: list[dict] = field(default_factory=list)   # what was launched: when, why, outcome

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> "TriggerState":
        if not text:
            return cls()
        raw = json.loads(text)
        raw["verdicts"] = [tuple(v) for v in raw.get("verdicts", [])]
        return cls(**raw)


def observe(state: TriggerState, verdict: str, now: float, checks: int, needed: int, cooldown_s: float) -> bool:
    """Record one check; True when it should launch a retraining run (and the launch is recorded)."""
    if verdict == "insufficient_data":
        return False
    state.verdicts = (state.verdicts + [(now, verdict == "drift")])[-checks:]
    sustained = sum(d for _, d in state.verdicts) >= needed
    cooling = state.last_retraining is not None and now - state.last_retraining < cooldown_s
    if sustained and not cooling:
        state.last_retraining = now
        return True
    return False


def quarter_due(state: TriggerState, now: float) -> bool:
    """True once per quarter: when no quarterly run started since the current quarter began.
    (A first start mid-quarter waits for the next quarter instead of running at once.)"""
    started = quarter_start(datetime.fromtimestamp(now, timezone.utc)).timestamp()
    if state.last_quarterly is None:
        state.last_quarterly = now   # the schedule begins now; the first run is next quarter's
        return False
    if state.last_quarterly < started:
        state.last_quarterly = now
        return True
    return False
