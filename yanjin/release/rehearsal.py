"""Rehearse a rollout: replay labelled texts against a running server, report the true labels as a
reviewer would (POST /review with a reviewer's API key), and let the rollout controller decide after
every chunk, exactly as in production. The reviewer labels what the review queue asks for (disagreements
of the shadow comparison first), as people would; `labels="all"` labels a share of every answer instead
(the unpaired A/B's best case). A 429 or 503 is waited out as its Retry-After says.

    yanjin rollout rehearse banking77-lite --challenger 4 --url http://127.0.0.1:3000 --data test.csv \
        --api-key "$(yanjin keys add rehearsal --role reviewer | tail -1)"

Useful before a real rollout (does the plan reach a verdict with the traffic we have?), and it is
how the benchmark and the end-to-end test drive the real server.
"""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field

import httpx

from ..registry import CHALLENGER, CHAMPION
from ..serving.client import post
from ..traffic.store import TrafficStore
from .policy import RolloutPolicy
from .rollout import RUNNING, check, start


@dataclass
class Rehearsal:
    status: str = RUNNING
    checks: list[dict] = field(default_factory=list)   # one per look: share, counts, interval, decision
    requests: int = 0
    feedback: int = 0          # labels given
    asked: int = 0             # ... of which the review queue asked for
    served_by: dict = field(default_factory=lambda: {CHAMPION: 0, CHALLENGER: 0})
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def send_chunk(http: httpx.Client, url: str, texts: list[str], labels: list[str], keys: list[str | None],
               feedback_share: float, rng: random.Random, batch: int = 32,
               truth: dict[str, str] | None = None) -> tuple[int, int, int, dict]:
    """Predict `texts` in requests of `batch` (a None key: the server draws the arm); review about
    feedback_share of them with their true label (`http` carries the reviewer's key); `truth` collects the
    true label per prediction id (the log keeps texts redacted: an id is what a reviewer looks up). Returns
    texts sent, labels given, answers the server logged (a text the model failed on is not) and texts per arm."""
    sent = given = logged = 0
    arms = {CHAMPION: 0, CHALLENGER: 0}
    for i in range(0, len(texts), batch):
        items = [{"text": t} | ({"key": k} if k else {}) for t, k in zip(texts[i:i + batch], keys[i:i + batch])]
        r = post(http, f"{url}/predict", {"items": items})
        for result, label in zip(r.json(), labels[i:i + batch]):
            sent += 1
            logged += bool(result["prediction_id"])
            if truth is not None and result["prediction_id"]:
                truth[result["prediction_id"]] = label
            arms[result["arm"]] += 1
            if rng.random() < feedback_share:
                post(http, f"{url}/review", {"prediction_id": result["prediction_id"], "label": label})
                given += 1
    return sent, given, logged, arms


def wait_logged(log: TrafficStore, model: str, since: float, expected: int, timeout: float = 30.0) -> bool:
    """Wait until the server has logged `expected` answers of `model` since `since`: a shadowed text's row is
    written with its pair after the challenger scored it, so a reviewer reading the queue at once misses it."""
    deadline = time.monotonic() + timeout
    while log.answered(model, since) < expected:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def review_what_is_asked(http: httpx.Client, url: str, log: TrafficStore, truth: dict[str, str],
                         limit: int = 10_000) -> int:
    """A reviewer works through the review queue, labelling each item with its true label (`truth`: per
    prediction id); returns how many."""
    given = 0
    for item in log.review_queue(limit):
        label = truth.get(item["id"])
        if label is not None:
            post(http, f"{url}/review", {"prediction_id": item["id"], "label": label})
            given += 1
    return given


def rehearse(release, log: TrafficStore, url: str, model: str, challenger: str,
             policy: RolloutPolicy, texts: list[str], labels: list[str], api_key: str, chunk: int = 64,
             feedback_share: float = 1.0, max_requests: int = 20_000, poll_wait_s: float = 0.0,
             seed: int = 0, reason: str = "rehearsal", force: bool = False, labels_for: str = "queue") -> Rehearsal:
    """Start a rollout of `challenger`, then replay traffic chunk by chunk until it is promoted or rolled back.
    Each chunk cycles through the labelled texts as new users, whose arm the server draws: sent through one
    API key with sticky keys, the rollout would count them as one caller's (capped) evidence."""
    if labels_for not in ("queue", "all"):
        raise ValueError(f"labels_for {labels_for!r}: queue (what the review queue asks for) or all")
    rng = random.Random(seed)
    truth: dict[str, str] = {}
    started = time.time()
    start(release, model, challenger, policy, reason, force)
    out, logged = Rehearsal(), 0
    order = list(range(len(texts)))
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {api_key}"}) as http:
        while out.requests < max_requests:
            time.sleep(poll_wait_s)  # let every replica see the share the last decision set
            picks = [order[(out.requests + j) % len(order)] for j in range(chunk)]
            keys = [None] * chunk
            sent, given, n_logged, arms = send_chunk(http, url, [texts[p] for p in picks], [labels[p] for p in picks],
                                                     keys, feedback_share if labels_for == "all" else 0.0, rng,
                                                     truth=truth)
            if labels_for == "queue":
                logged += n_logged
                wait_logged(log, model, started, logged)
                given = review_what_is_asked(http, url, log, truth)
                out.asked += given
            out.requests += sent
            out.feedback += given
            for arm, n in arms.items():
                out.served_by[arm] += n
            state, a = check(release, log, model, policy, act=True)
            out.checks.append({"requests": out.requests, "share": a.share, "phase": state.phase,
                               "decision": a.decision, "labels": out.feedback,
                               "labelled_champion": a.champion.labelled, "labelled_challenger": a.challenger.labelled,
                               "accuracy_champion": a.champion.accuracy, "accuracy_challenger": a.challenger.accuracy,
                               "accuracy_diff": [a.accuracy.low, a.accuracy.high],
                               "review_rate_champion": a.champion.review_rate,
                               "review_rate_challenger": a.challenger.review_rate, "reasons": a.reasons})
            if state.status != RUNNING:
                out.status, out.reason = state.status, state.reason
                break
    return out
