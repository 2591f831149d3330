"""Serving's writer of the traffic store (yanjin.traffic): requests never wait for the database.

Rows go to a bounded queue that one writer thread commits in batches. Nothing is lost silently: a
database error is retried with backoff, a row the database refuses is dropped alone (its batch is
written row by row), a full queue drops the new rows, the writer survives any error, and every drop is
counted (`stats`, served on /metrics). `close()` (the service's shutdown hook) writes what is queued
before the process exits.

Where every answer must be logged (`require_log`, on in the cluster manifests), the writer retries
until the database is back (`retries=None`) and `refusing()` says why new predictions should be refused
while the database is unreachable or the backlog is over its bound: the service answers 503 with
Retry-After and turns unready until the log drains.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import sqlalchemy as sa

from ..traffic.redact import Redactor
from ..traffic.store import Prediction, TrafficStore, db_error, predictions

log = logging.getLogger(__name__)


@dataclass
class LogStats:
    """Rows of the prediction log by fate (since the process started)."""
    queued: int = 0      # waiting for the writer now
    written: int = 0
    retried: int = 0     # rows whose write was retried after a database error (each retry counts)
    dropped: int = 0     # given up on: queue full, refused by the database, or the retry budget spent
    redacted: dict[str, int] = field(default_factory=dict)   # identifiers replaced before writing, per type


class PredictionLog(TrafficStore):
    """Append predictions off the request path; read and label them as the store does."""

    def __init__(self, location: str | Path, batch_size: int = 256, flush_seconds: float = 0.2,
                 max_queue: int = 100_000, retries: int | None = 5, backoff_seconds: float = 0.2,
                 on_stats: Callable[[LogStats], None] | None = None, redactor: Redactor | None = None,
                 max_backlog: int = 10_000) -> None:
        super().__init__(location)
        self.redactor = redactor   # None: texts are stored as sent
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.retries, self.backoff_seconds = retries, backoff_seconds  # 0.2 .. 3.2 s: about 6 s of outage; None: no end
        self.max_backlog = max_backlog          # rows waiting beyond which refusing() asks for new ones to be refused
        self._unreachable_since: float | None = None   # the last write failed on the database, not on a row
        self._give_up_at: float | None = None          # close(): retrying forever ends here
        self._side = ThreadPoolExecutor(1, thread_name_prefix="prediction-log-failures")   # off the request thread
        self.on_stats = on_stats
        self._queue: queue.Queue[Prediction | None] = queue.Queue(maxsize=max_queue)
        self._pending = 0                      # appended but not yet committed (or given up on)
        self._stats = LogStats()
        self._settled = threading.Condition()
        self._writer = threading.Thread(target=self._write_loop, name="prediction-log", daemon=True)
        self._writer.start()

    @property
    def stats(self) -> LogStats:
        with self._settled:
            return LogStats(**asdict(self._stats) | {"queued": self._queue.qsize(),
                                                     "redacted": dict(self._stats.redacted)})

    def refusing(self) -> str | None:
        """Why a server that must log every answer should refuse new predictions now (None: it need not)."""
        since, waiting = self._unreachable_since, self._queue.qsize()
        if since is not None:
            return (f"prediction log: the database has been unreachable for {time.monotonic() - since:.0f} s; "
                    f"{waiting} answers wait to be written")
        if waiting > self.max_backlog:
            return f"prediction log: {waiting} answers wait to be written (bound {self.max_backlog})"
        return None

    def failure(self, model: str, version: str, arm: str, items: int, error: str) -> None:
        """Recorded by another thread: a request never waits for the database, even to report a failure."""
        self._side.submit(super().failure, model, version, arm, items, error)

    def append(self, rows: list[Prediction]) -> None:
        with self._settled:  # counted before queued, so flush() can never miss a row in transit
            self._pending += len(rows)
        for i, row in enumerate(rows):
            try:
                self._queue.put_nowait(row)
            except queue.Full:  # the database has fallen far behind: drop, never block a request
                log.error("prediction log: queue full (%d rows); %d rows dropped", self._queue.maxsize, len(rows) - i)
                self._settle(len(rows) - i, "dropped")
                return

    def _settle(self, n: int, fate: str) -> None:
        with self._settled:
            setattr(self._stats, fate, getattr(self._stats, fate) + n)
            self._pending -= n
            self._settled.notify_all()
        if self.on_stats:
            try:
                self.on_stats(self.stats)
            except Exception:  # noqa: BLE001 - reporting must not lose the rows it reports on
                log.exception("prediction log: on_stats failed")

    def _write_loop(self) -> None:
        done = False
        while not done:
            first = self._queue.get()
            batch, done = ([], True) if first is None else ([first], False)
            deadline = time.monotonic() + self.flush_seconds
            while batch and len(batch) < self.batch_size and time.monotonic() < deadline:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    done = True
                    break
                batch.append(item)
            if not batch:
                continue
            try:
                self._commit(self._stored(batch))
            except Exception as e:  # noqa: BLE001 - the writer must outlive anything; the rows are counted
                log.error("prediction log: %d rows lost to an unexpected error: %s", len(batch), db_error(e))
                self._settle(len(batch), "dropped")

    def _stored(self, batch: list[Prediction]) -> list[dict]:
        """The rows as stored: flat fields (no deep copy), each text redacted once, before any write."""
        rows = [vars(p) for p in batch]
        if self.redactor is None:
            return rows
        found: Counter = Counter()
        out = []
        for row in rows:
            text, counts = self.redactor.redact(row["text"])
            found += counts
            out.append(row | {"text": text} if counts else row)
        if found:
            with self._settled:
                for kind, n in found.items():
                    self._stats.redacted[kind] = self._stats.redacted.get(kind, 0) + n
        return out

    def _commit(self, rows: list[dict]) -> None:
        """Write `rows`; retry while the database is unreachable; a refused batch is written row by row,
        so only the refused row is dropped."""
        attempt = 0
        while True:
            try:
                with self.engine.begin() as conn:
                    conn.execute(predictions.insert(), rows)
                self._unreachable_since = None
                self._settle(len(rows), "written")
                return
            except (sa.exc.OperationalError, sa.exc.InterfaceError) as e:  # unreachable, locked: wait and retry
                if self._unreachable_since is None:
                    self._unreachable_since = time.monotonic()
                closing = self._give_up_at is not None and time.monotonic() > self._give_up_at
                if (self.retries is not None and attempt >= self.retries) or closing:
                    log.error("prediction log: %d rows dropped after %d retries: %s", len(rows), attempt, db_error(e))
                    break
                with self._settled:
                    self._stats.retried += len(rows)
                time.sleep(min(self.backoff_seconds * 2 ** attempt, 5.0))
                attempt += 1
            except sa.exc.SQLAlchemyError as e:  # a row the database refuses (bad bytes, duplicate id)
                if len(rows) > 1:
                    for row in rows:
                        self._commit([row])
                    return
                log.error("prediction log: row %s refused: %s", rows[0]["id"], db_error(e))
                break
        self._settle(len(rows), "dropped")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything appended so far is committed (or given up on)."""
        with self._settled:
            return self._settled.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the writer (the service's shutdown hook); a database still down
        after `timeout` loses the rows, counted and logged."""
        self._give_up_at = time.monotonic() + timeout
        self._side.shutdown(wait=True)
        self._queue.put(None, timeout=timeout)
        self._writer.join(timeout=timeout)
        self.engine.dispose()
