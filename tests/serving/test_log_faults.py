"""The prediction log loses nothing silently: database outages are retried, a refused row is dropped
alone, a full queue drops and counts, and every fate shows in the stats (served on /metrics)."""
import sqlite3
import threading
import time

from tests.integration import stack
from yanjin.serving.predlog import PredictionLog
from yanjin.traffic.store import Prediction


def rows(n: int, start: int = 0) -> list[Prediction]:
    return [Prediction(f"id-{i}", time.time(), f"text {i}", "card_arrival", 0.9, "m", "1", "v1", "champion", 1.0, False)
            for i in range(start, start + n)]


def test_an_outage_shorter_than_the_retry_budget_loses_nothing_and_a_longer_one_is_counted():
    with stack.postgres(("predictions",)) as pg:
        log = PredictionLog(f"{pg}predictions", flush_seconds=0.05, retries=5, backoff_seconds=0.2)  # ~6 s budget
        log.append(rows(10))
        assert log.flush()
        with stack.outage(pg):
            log.append(rows(20, start=10))
            time.sleep(1.0)  # the writer meets the outage and backs off
        assert log.flush(timeout=30)
        stats = log.stats
        assert (stats.written, stats.dropped, log.count()) == (30, 0, 30) and stats.retried >= 20
        short = PredictionLog(f"{pg}predictions", flush_seconds=0.05, retries=1, backoff_seconds=0.1)  # ~0.1 s budget
        with stack.outage(pg):
            short.append(rows(5, start=100))
            assert short.flush(timeout=10)  # given up on, not hanging
        assert (short.stats.written, short.stats.dropped) == (0, 5)
        log.close()
        short.close()


def test_a_refused_row_is_dropped_alone_and_its_batch_is_written(tmp_path):
    log = PredictionLog(tmp_path / "p.db", flush_seconds=0.5)
    log.append(rows(1, start=3))
    assert log.flush()
    log.append(rows(6))  # id-3 again: the database refuses that row (duplicate key) inside this batch
    assert log.flush()
    assert (log.stats.written, log.stats.dropped, log.count()) == (6, 1, 6)
    log.close()


def test_a_full_queue_drops_new_rows_counts_them_and_never_blocks(tmp_path):
    db = tmp_path / "p.db"
    log = PredictionLog(db, flush_seconds=0.01, max_queue=5)
    log.append(rows(1))
    assert log.flush()
    holder = sqlite3.connect(db, timeout=10, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # the database stalls: the writer waits on its busy timeout
    try:
        log.append(rows(1, start=1))
        time.sleep(0.3)   # the writer has taken that row and is stuck committing it
        started = time.perf_counter()
        log.append(rows(20, start=2))
        assert time.perf_counter() - started < 0.5   # a request never waits for the database
    finally:
        threading.Timer(1.0, holder.rollback).start()
    assert log.flush(timeout=30)
    stats = log.stats
    assert stats.dropped == 15 and stats.written == 7 and log.count() == 7  # 1 + 1 + the 5 the queue held
    log.close()
