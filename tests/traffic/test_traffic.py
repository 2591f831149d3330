"""The traffic store as a data-protection officer checks it: identifiers redacted before anything is
stored (recall and false positives measured on planted banking77 texts), no customer text in any log line
whatever the database does, retention that removes rows with their labels and records it, private files,
and a log that refuses rather than loses when every answer must be kept. Real SQLite and PostgreSQL."""
import logging
import os
import stat
import time

import pandas as pd
import pytest
import sqlalchemy as sa

from tests.integration import stack
from tests.traffic.planted import measure
from yanjin.serving.predlog import PredictionLog
from yanjin.traffic.erasure import PURGE, erase
from yanjin.traffic.redact import Redactor, RedactionError
from yanjin.traffic.store import SHADOW, Prediction, TrafficStore, predictions

SECRET = "second customer: my passport number is X1234567, card 4111 1111 1111 1111"


def row(pid: str, text: str = "where is my card?", at: float | None = None, **kw) -> Prediction:
    return Prediction(pid, time.time() if at is None else at, text, kw.pop("label", "card_arrival"), 0.9, "m", "1",
                      "v1", kw.pop("arm", "champion"), 1.0, False, **kw)


def test_redaction_finds_planted_identifiers_and_leaves_real_banking77_texts_alone(data_dir):
    texts = list(pd.read_csv(data_dir / "test.csv")["text"])
    m = measure(Redactor(), texts, per_type=250, seed=7)
    print({k: v for k, v in m.items() if k != "missed"})
    assert m["redaction_recall"] >= 0.99, m["missed"]
    assert m["redaction_false_positive_rate"] <= 0.01


def test_what_is_stored_is_redacted_and_counted_and_nothing_else_changes(tmp_path):
    log = PredictionLog(tmp_path / "p.db", redactor=Redactor(patterns={"CUSTOMER_ID": r"\bC\d{8}\b"}))
    log.append([row("a", "my card 4111 1111 1111 1111 was charged twice, customer C12345678"),
                row("b", "mail anna.smith@example.com or +44 20 7946 0958"), row("c", "where is my card?")])
    assert log.flush()
    stored = {r["id"]: r["text"] for r in (log.get(i) for i in "abc")}
    assert stored == {"a": "my card [CARD_NUMBER] was charged twice, customer [CUSTOMER_ID]",
                      "b": "mail [EMAIL] or [PHONE]", "c": "where is my card?"}
    assert log.stats.redacted == {"CARD_NUMBER": 1, "CUSTOMER_ID": 1, "EMAIL": 1, "PHONE": 1}
    log.close()


@pytest.mark.parametrize("kwargs, problem", [
    ({"regions": ("XX",)}, "phone regions"), ({"patterns": {"lower": "x"}}, "upper case"),
    ({"patterns": {"EMAIL": "x"}}, "not one of"), ({"patterns": {"ID": "(unclosed"}}, "redaction pattern ID"),
])
def test_a_bad_redaction_setting_is_refused_naming_it(kwargs, problem):
    with pytest.raises(RedactionError, match=problem):
        Redactor(**kwargs)


def test_no_customer_text_reaches_a_log_line_whatever_the_database_does(tmp_path, caplog):
    """Every database error path of the log, on SQLite and PostgreSQL (whose DETAIL quotes the failing row)."""
    caplog.set_level(logging.DEBUG)
    sqlite = PredictionLog(tmp_path / "p.db", flush_seconds=0.01)
    sqlite.append([row("dup", SECRET)])
    sqlite.flush()
    sqlite.append([row("dup", SECRET)])                  # refused: duplicate key
    sqlite.flush()
    sqlite.failure("m", "1", "champion", 1, "ValueError")
    with stack.postgres(("predictions",)) as pg:
        log = PredictionLog(f"{pg}predictions", flush_seconds=0.01, retries=1, backoff_seconds=0.05)
        log.append([row("x", SECRET, label=None)])      # refused: NOT NULL, "Failing row contains (…)"
        log.append([row("dup2", SECRET)])
        log.flush()
        log.append([row("dup2", SECRET)])                # refused: unique violation
        log.flush()
        store = TrafficStore(f"{pg}predictions")
        with stack.outage(pg):
            log.append([row("y", SECRET)])                # dropped after its retries
            assert log.flush(timeout=30)
            with pytest.raises(sa.exc.OperationalError):
                store.review("dup2", "card_arrival", "anna")
            store.failure("m", "1", "champion", 1, "x")
        log.close()
        store.close()
    sqlite.close()
    assert log.stats.dropped >= 2 and sqlite.stats.dropped == 1     # the paths were really taken
    lines = [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    assert any("refused" in line for line in lines) and any("dropped" in line for line in lines)
    assert not [line for line in lines if "X1234567" in line or "4111" in line or "passport" in line]


def test_purge_removes_old_predictions_their_shadow_rows_and_labels_and_records_it_without_text(tmp_path):
    log = PredictionLog(tmp_path / "p.db")
    old, new = time.time() - 100 * 86400, time.time()
    log.append([row("old", "an old customer text", at=old), row("old-shadow", "an old customer text", at=old,
                                                                     arm=SHADOW, pair_id="old"),
                row("new", "a recent text", at=new)])
    log.flush()
    log.review("old", "card_arrival", "anna")
    copies = tmp_path / "retraining"
    copies.mkdir()
    pd.DataFrame({"utterance": ["an old customer text", "kept"], "intent": ["a", "b"]}).to_csv(copies / "set.csv", index=False)
    out = erase(log, log.ids_older_than(time.time() - 90 * 86400), [], PURGE, "older than 90d", "ops", [copies])
    assert (out.predictions, out.labels, out.files) == (2, 1, {str((copies / "set.csv").resolve()): 1})
    with log.engine.connect() as conn:
        assert list(conn.scalars(sa.select(predictions.c.id))) == ["new"]
    assert pd.read_csv(copies / "set.csv")["utterance"].tolist() == ["kept"]
    record = log.erasure_records()[0]
    assert record["by"] == "ops" and record["selector"] == "older than 90d" and "old customer" not in str(record)
    log.close()


def test_the_log_file_is_private_even_where_it_existed_before(tmp_path):
    (tmp_path / "old.db").touch(mode=0o644)
    for path in (tmp_path / "new" / "p.db", tmp_path / "old.db"):
        TrafficStore(path).close()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o700


def test_where_every_answer_must_be_logged_an_outage_is_refused_then_written_never_lost():
    with stack.postgres(("predictions",)) as pg:
        log = PredictionLog(f"{pg}predictions", flush_seconds=0.01, retries=None, backoff_seconds=0.05)
        assert log.refusing() is None
        with stack.outage(pg):
            log.append([row(f"r{i}") for i in range(50)])
            deadline = time.monotonic() + 20
            while log.refusing() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "unreachable" in (log.refusing() or "")      # the server answers 503 and turns unready
            time.sleep(1.0)
        assert log.flush(timeout=60)
        assert (log.stats.written, log.stats.dropped, log.count()) == (50, 0, 50) and log.refusing() is None
        log.close()


def test_erasure_replaces_quotes_in_drift_reports_and_nothing_else(tmp_path):
    """A drift report quotes the window's most novel texts (JSON and its HTML page): an erased text's quote is
    replaced whole; a text that merely contains it is left alone."""
    import html
    import json

    from yanjin.monitoring.report import drift_page
    from yanjin.traffic.erasure import ERASE, erase_files
    from yanjin.traffic.store import normalised

    gone, kept = 'my "old" card <4111>', 'my "old" card <4111> and more'
    examples = [{"text": t, "label": "card_arrival", "confidence": 0.5, "novelty": 0.9} for t in (gone, kept)]
    (tmp_path / "drift-1.json").write_text(json.dumps({"examples": examples}, indent=2))
    (tmp_path / "drift-1.html").write_text(drift_page({"model": "m", "version": "1", "verdict": "drift", "window": 2,
                                                        "scores": {}, "thresholds": {}, "at": time.time()}, {}, examples, {}, None))
    replaced = erase_files(tmp_path, {normalised(gone)}, {gone})
    assert replaced == {str((tmp_path / "drift-1.json").resolve()): 1, str((tmp_path / "drift-1.html").resolve()): 1}
    quoted = [e["text"] for e in json.loads((tmp_path / "drift-1.json").read_text())["examples"]]
    assert quoted == ["[erased]", kept]
    page = (tmp_path / "drift-1.html").read_text()
    assert html.escape(gone) + "<" not in page.replace(html.escape(kept), "") and html.escape(kept) in page
    log = PredictionLog(tmp_path / "p.db")
    log.append([row("q", gone)])
    log.flush()
    out = erase(log, ["q"], [], ERASE, "1 prediction id(s)", "dpo", [tmp_path])
    assert out.predictions == 1 and log.erasure_records()[0]["by"] == "dpo"
    log.close()
