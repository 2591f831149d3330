"""A/B assignment and the prediction log, without a server."""
import random
import subprocess
import sys
import time

import pytest

from yanjin.serving.predlog import PredictionLog
from yanjin.traffic.store import Prediction, UnknownPrediction
from yanjin.serving.routing import CHALLENGER, CHAMPION, assign_arm


SECRET = b"s" * 32


def test_assignment_is_sticky_and_splits_as_configured():
    keys = [f"user-{i}" for i in range(20_000)]
    arms = [assign_arm(k, 0.2, SECRET) for k in keys]
    assert arms == [assign_arm(k, 0.2, SECRET) for k in keys]               # same key, same arm
    assert arms.count(CHALLENGER) / len(keys) == pytest.approx(0.2, abs=0.01)
    # raising the share only moves users to the challenger, never back
    wider = [assign_arm(k, 0.5, SECRET) for k in keys]
    assert all(w == CHALLENGER for a, w in zip(arms, wider) if a == CHALLENGER)
    assert assign_arm("anyone", 0.0, SECRET) == CHAMPION


def test_keys_chosen_offline_land_at_the_share_under_another_secret():
    """200 keys picked so that the old unsalted sha256 put them all on the challenger: under the server's
    secret (which the client does not know) they land there at the configured share."""
    import hashlib
    import secrets

    picked = [k for k in (f"pick-{i}" for i in range(5000))
              if int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "big") / 2**64 < 0.1][:200]
    shares = [sum(assign_arm(k, 0.1, secrets.token_bytes(32)) == CHALLENGER for k in picked) / 200 for _ in range(20)]
    assert sum(shares) / len(shares) == pytest.approx(0.1, abs=0.02)


def test_a_keyed_callers_keys_are_bound_to_it_and_an_anonymous_callers_dropped():
    import json

    from yanjin.serving.auth import bind_keys, key_principal

    body = json.dumps({"items": [{"text": "a", "key": "u1"}, {"text": "b"}, {"text": "c", "key": 7},
                                 {"text": "d", "key": "k" * 300}]}).encode()
    mine, theirs, anonymous = (json.loads(bind_keys(body, n))["items"] for n in ("crm", "other", None))
    assert key_principal(mine[0]["key"]) == "crm" and mine[0]["key"] != theirs[0]["key"]
    assert "key" not in anonymous[0] and "key" not in mine[1]
    assert [i["key"] for i in anonymous[2:]] == [7, "k" * 300]             # left for validation to refuse (422)


def test_one_callers_evidence_is_capped():
    from yanjin.release.rollout import capped_evidence

    rows = ([{"true_label": "x", "principal": "attacker"}] * 60 + [{"true_label": "x", "principal": None}] * 140
            + [{"true_label": None, "principal": "attacker"}] * 10)
    kept = capped_evidence(rows, 0.25)
    assert sum(r["principal"] == "attacker" for r in kept) == 50 and len(kept) == 190


def test_without_a_key_the_draw_is_random():
    rng = random.Random(1)
    arms = [assign_arm(None, 0.3, SECRET, rng) for _ in range(10_000)]
    assert arms.count(CHALLENGER) / len(arms) == pytest.approx(0.3, abs=0.02)


def row(i: int, confidence: float = 0.9) -> Prediction:
    return Prediction(f"id-{i}", time.time() + i, f"text {i}", "card_arrival", confidence, "banking77-lite", "1",
                      "lite", CHAMPION, 1.5, confidence < 0.7)


def test_log_review_and_feedback(tmp_path):
    log = PredictionLog(tmp_path / "p.db")
    log.append([row(0, 0.95), row(1, 0.40), row(2, 0.55)])
    assert log.count() == 3
    assert [r["id"] for r in log.review_queue()] == ["id-1", "id-2"]
    log.review("id-1", "card_linking", "anna")
    log.feedback("id-0", "card_arrival", "crm-app")
    assert [r["id"] for r in log.review_queue()] == ["id-2"]
    # reviewers are trusted; a client's feedback only where the profile says so
    assert log.labelled() == [{"text": "text 1", "label": "card_linking", "source": "review"}]
    assert sorted(log.labelled(trust_feedback=True), key=lambda r: r["text"]) == [
        {"text": "text 0", "label": "card_arrival", "source": "feedback"},
        {"text": "text 1", "label": "card_linking", "source": "review"}]
    with pytest.raises(UnknownPrediction):
        log.review("nope", "x", "anna")
    with pytest.raises(UnknownPrediction):
        log.feedback("nope", "x", "crm-app")
    assert log.label_history("nope") == []
    log.close()


def test_feedback_never_overwrites_and_never_outranks_a_reviewer(tmp_path):
    log = PredictionLog(tmp_path / "p.db")
    log.append([row(0, 0.40)])
    log.feedback("id-0", "card_arrival", "crm-app")
    log.feedback("id-0", "lost_or_stolen_card", "mallory")      # a second client's word is kept beside the first
    log.review("id-0", "card_linking", "anna")
    log.feedback("id-0", "cash_withdrawal", "mallory")          # ... and cannot replace the reviewer's label
    history = log.label_history("id-0")
    assert [(h["label"], h["source"], h["given_by"]) for h in history] == [
        ("card_arrival", "feedback", "crm-app"), ("lost_or_stolen_card", "feedback", "mallory"),
        ("card_linking", "review", "anna"), ("cash_withdrawal", "feedback", "mallory")]
    for trust in (False, True):
        assert [r["true_label"] for r in log.outcomes("banking77-lite", 0, trust_feedback=trust)] == ["card_linking"]
        assert [r["label"] for r in log.labelled(trust_feedback=trust)] == ["card_linking"]
    log.close()


def test_client_feedback_counts_in_outcomes_only_when_trusted(tmp_path):
    log = PredictionLog(tmp_path / "p.db")
    log.append([row(0), row(1)])
    log.feedback("id-0", "card_arrival", "crm-app")
    log.feedback("id-0", "card_linking", "crm-app")             # the latest feedback stands for the client
    assert [r["true_label"] for r in log.outcomes("banking77-lite", 0)] == [None, None]
    assert [r["true_label"] for r in log.outcomes("banking77-lite", 0, trust_feedback=True)] == ["card_linking", None]
    log.close()


def test_sqlite_log_uses_wal(tmp_path):
    log = PredictionLog(tmp_path / "p.db")
    with log.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    log.close()


WRITER = """
import sys, time
from yanjin.serving.predlog import PredictionLog
from yanjin.traffic.store import Prediction
log = PredictionLog(sys.argv[1], flush_seconds=0.05)
i = 0
while True:
    log.append([Prediction(f"id-{i}-{j}", time.time(), "t", "l", 0.9, "m", "1", "v1", "champion", 1.0, False) for j in range(50)])
    i += 1
    if i == 20:
        log.flush()
        print("committed", flush=True)
    time.sleep(0.01)
"""


def test_a_crash_leaves_a_readable_log_with_everything_committed(tmp_path):
    db = tmp_path / "p.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "committed"
    time.sleep(0.5)        # keep writing batches, then die mid-stream
    proc.kill()
    proc.wait()
    log = PredictionLog(db)
    assert log.count() >= 20 * 50           # all 1,000 rows flushed before the message survived
    with log.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    log.close()
