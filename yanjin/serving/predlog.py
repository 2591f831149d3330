"""The prediction log, the human-review queue and the label history, any SQLAlchemy database.

Labels are never overwritten: every reviewer's label and every client's feedback is a row of its own
(who, when, source). Readers choose whom to trust: reviewers always, clients only when asked.

Embedded mode uses SQLite in WAL mode (readers never block the writer; a crash loses at most the
rows not yet committed, and the file stays readable); a cluster points the same code at
PostgreSQL. Requests never wait for the database: rows go to a bounded queue that one writer
thread commits in batches. Nothing is lost silently: a database error is retried with backoff, a
row the database refuses is dropped alone (its batch is written row by row), a full queue drops the
new rows, the writer survives any error, and every drop is counted (`stats`, served on /metrics).
`close()` (the service's shutdown hook) writes what is queued before the process exits.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import sqlalchemy as sa

from .sampling import LOW_CONFIDENCE, QUEUE_ORDER

log = logging.getLogger(__name__)

metadata = sa.MetaData()
predictions = sa.Table(
    "predictions", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False, index=True),   # unix seconds
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("label", sa.String(200), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("version", sa.String(20), nullable=False),
    sa.Column("variant", sa.String(20), nullable=False),
    sa.Column("arm", sa.String(20), nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("needs_review", sa.Boolean, nullable=False, index=True),
    sa.Column("reviewed_label", sa.String(200)),      # the latest reviewer's label: takes it off the review queue
    sa.Column("labelled_at", sa.Float),
    sa.Column("principal", sa.String(200)),           # the API key that asked with a sticky key: caps its evidence
    # a shadow comparison (release.paired): the challenger's row points at the champion's it scored alongside;
    # the champion's row says why it was put on the review queue and with what probability
    sa.Column("pair_id", sa.String(36), index=True),
    sa.Column("review_reason", sa.String(20)),        # disagreement | low_confidence | audit; None: not asked
    sa.Column("inclusion_p", sa.Float),               # P(asked) given the pair, for the Horvitz-Thompson estimate
)
SHADOW = "shadow"   # the arm of a challenger's prediction scored off the answer path
ADDED_COLUMNS = {"principal": "VARCHAR(200)", "pair_id": "VARCHAR(36)", "review_reason": "VARCHAR(20)",
                 "inclusion_p": "FLOAT"}   # columns a log written by an earlier release lacks
labels = sa.Table(  # every label anyone gave, never overwritten: who said what, and when
    "labels", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("prediction_id", sa.String(36), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("label", sa.String(200), nullable=False),
    sa.Column("source", sa.String(20), nullable=False),     # review (trusted) | feedback (a client's word)
    sa.Column("given_by", sa.String(200), nullable=False),  # the API key's name, or the reviewer's user name
)
REVIEW, FEEDBACK = "review", "feedback"
failures = sa.Table(  # model calls that raised: a rollout's error-rate guardrail counts them per arm
    "failures", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("version", sa.String(20), nullable=False),
    sa.Column("arm", sa.String(20), nullable=False),
    sa.Column("n_texts", sa.Integer, nullable=False),    # texts in the failed call
    sa.Column("error", sa.Text, nullable=False),
)


@dataclass(frozen=True)
class Prediction:
    id: str
    created_at: float
    text: str
    label: str
    confidence: float
    model: str
    version: str
    variant: str
    arm: str
    latency_ms: float
    needs_review: bool
    principal: str | None = None   # the API key whose sticky key chose the arm (None: the arm was drawn)
    pair_id: str | None = None     # shadow rows: the champion's prediction scored on the same text
    review_reason: str | None = None
    inclusion_p: float | None = None


class UnknownPrediction(KeyError):
    pass


@dataclass
class LogStats:
    """Rows of the prediction log by fate (since the process started)."""
    queued: int = 0      # waiting for the writer now
    written: int = 0
    retried: int = 0     # rows whose write was retried after a database error (each retry counts)
    dropped: int = 0     # given up on: queue full, refused by the database, or the retry budget spent


def database_url(location: str | Path) -> str:
    """A SQLAlchemy URL as is, or a file path for SQLite."""
    text = str(location)
    return text if "://" in text else f"sqlite:///{Path(text).resolve()}"


def make_engine(url: str) -> sa.Engine:
    engine = sa.create_engine(url, pool_pre_ping=True, hide_parameters=True)  # after a database restart, pooled connections are dead
    if engine.dialect.name == "sqlite":
        @sa.event.listens_for(engine, "connect")
        def _wal(conn, _record):  # per connection: WAL + fsync at checkpoints is crash-safe for committed rows
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
    metadata.create_all(engine)
    with engine.begin() as conn:   # a log written by an earlier release: add what it lacks
        present = {c["name"] for c in sa.inspect(conn).get_columns("predictions")}
        for name, kind in ADDED_COLUMNS.items():
            if name not in present:
                conn.exec_driver_sql(f"ALTER TABLE predictions ADD COLUMN {name} {kind}")
    return engine


def _waiting():
    """On the review queue: asked for (or flagged, in a log without reasons) and not yet reviewed; never a
    shadow row (its text is labelled through the champion's row)."""
    c = predictions.c
    return sa.and_(sa.or_(c.needs_review, c.review_reason.is_not(None)), c.reviewed_label.is_(None), c.arm != SHADOW)


class PredictionLog:
    """Append predictions off the request path; read and label them for review and feedback."""

    def __init__(self, location: str | Path, batch_size: int = 256, flush_seconds: float = 0.2,
                 max_queue: int = 100_000, retries: int = 5, backoff_seconds: float = 0.2,
                 on_stats: Callable[[LogStats], None] | None = None) -> None:
        self.engine = make_engine(database_url(location))
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.retries, self.backoff_seconds = retries, backoff_seconds  # 0.2 .. 3.2 s: about 6 s of outage
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
            return LogStats(**asdict(self._stats) | {"queued": self._queue.qsize()})

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
                self._commit([vars(p) for p in batch])  # flat fields: no deep copy
            except Exception:  # noqa: BLE001 - the writer must outlive anything; the rows are counted
                log.exception("prediction log: %d rows lost to an unexpected error", len(batch))
                self._settle(len(batch), "dropped")

    def _commit(self, rows: list[dict]) -> None:
        """Write `rows`; retry while the database is unreachable; a refused batch is written row by row,
        so only the refused row is dropped."""
        for attempt in range(self.retries + 1):
            try:
                with self.engine.begin() as conn:
                    conn.execute(predictions.insert(), rows)
                self._settle(len(rows), "written")
                return
            except (sa.exc.OperationalError, sa.exc.InterfaceError) as e:  # unreachable, locked: wait and retry
                if attempt == self.retries:
                    log.error("prediction log: %d rows dropped after %d retries: %s", len(rows), attempt, e)
                    break
                with self._settled:
                    self._stats.retried += len(rows)
                time.sleep(self.backoff_seconds * 2 ** attempt)
            except sa.exc.SQLAlchemyError as e:  # a row the database refuses (bad bytes, duplicate id)
                if len(rows) > 1:
                    for row in rows:
                        self._commit([row])
                    return
                log.error("prediction log: row %s refused: %s", rows[0]["id"], e)
                break
        self._settle(len(rows), "dropped")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything appended so far is committed (or given up on)."""
        with self._settled:
            return self._settled.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the writer (the service's shutdown hook)."""
        self._queue.put(None, timeout=timeout)
        self._writer.join(timeout=timeout)
        self.engine.dispose()

    # -- reading and labelling ------------------------------------------------------------

    def get(self, prediction_id: str) -> dict:
        self.flush()
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(predictions).where(predictions.c.id == prediction_id)).mappings().first()
        if row is None:
            raise UnknownPrediction(prediction_id)
        return dict(row)

    def review_queue(self, limit: int = 50) -> list[dict]:
        """Predictions waiting for a person, the one that helps most first: disagreements of a shadow comparison
        (each decides the verdict), then low-confidence answers, then the audit sample; oldest first within (the
        verdict counts texts in arrival order up to the oldest one still waiting)."""
        self.flush()
        c = predictions.c
        rank = sa.case(*((c.review_reason == r, i) for i, r in enumerate(QUEUE_ORDER)), else_=QUEUE_ORDER.index(LOW_CONFIDENCE))
        q = sa.select(predictions).where(_waiting()).order_by(rank, c.created_at).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def _add_label(self, prediction_id: str, label: str, source: str, given_by: str) -> None:
        self.flush()
        now = time.time()
        with self.engine.begin() as conn:
            if source == REVIEW:
                found = conn.execute(predictions.update().where(predictions.c.id == prediction_id)
                                     .values(reviewed_label=label, labelled_at=now)).rowcount
            else:
                found = conn.execute(sa.select(sa.func.count()).select_from(predictions)
                                     .where(predictions.c.id == prediction_id)).scalar_one()
            if not found:
                raise UnknownPrediction(prediction_id)  # the transaction rolls back: nothing recorded
            conn.execute(labels.insert().values(prediction_id=prediction_id, created_at=now, label=label,
                                                source=source, given_by=given_by))

    def review(self, prediction_id: str, label: str, given_by: str) -> None:
        """A reviewer's label (trusted): it takes the prediction off the review queue."""
        self._add_label(prediction_id, label, REVIEW, given_by)

    def feedback(self, prediction_id: str, label: str, given_by: str) -> None:
        """A client's label: kept beside earlier ones, counted only where the profile trusts client feedback."""
        self._add_label(prediction_id, label, FEEDBACK, given_by)

    def label_history(self, prediction_id: str) -> list[dict]:
        """Every label given for a prediction, oldest first."""
        q = sa.select(labels).where(labels.c.prediction_id == prediction_id).order_by(labels.c.id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def _true_labels(self, trust_feedback: bool, since: float | None = None) -> dict[str, tuple[str, str]]:
        """prediction id -> (label, source): the latest reviewer's label, else (when trusted) the latest
        client feedback."""
        latest = sa.select(sa.func.max(labels.c.id)).group_by(labels.c.prediction_id, labels.c.source)
        if since is not None:
            latest = latest.where(labels.c.prediction_id.in_(
                sa.select(predictions.c.id).where(predictions.c.created_at >= since)))
        q = sa.select(labels.c.prediction_id, labels.c.label, labels.c.source).where(labels.c.id.in_(latest))
        if not trust_feedback:
            q = q.where(labels.c.source == REVIEW)
        found: dict[str, tuple[str, str]] = {}
        with self.engine.connect() as conn:
            for pid, label, source in conn.execute(q):
                if source == REVIEW or pid not in found:
                    found[pid] = (label, source)
        return found

    def labelled(self, trust_feedback: bool = False) -> list[dict]:
        """(text, label, source) for every prediction with a trusted label: extra training data. Reviewers'
        labels always; client feedback only with trust_feedback (a reviewer's label wins over it)."""
        self.flush()
        truth = self._true_labels(trust_feedback)
        q = sa.select(predictions.c.id, predictions.c.text).where(predictions.c.id.in_(
            sa.select(labels.c.prediction_id)))
        with self.engine.connect() as conn:
            return [{"text": r.text, "label": truth[r.id][0], "source": truth[r.id][1]}
                    for r in conn.execute(q) if r.id in truth]

    def failure(self, model: str, version: str, arm: str, items: int, error: str) -> None:
        """Record a failed model call at once (rare, and the evidence a rollback may rest on)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(failures.insert().values(created_at=time.time(), model=model, version=version, arm=arm,
                                                      n_texts=items, error=error[:2000]))
        except sa.exc.SQLAlchemyError:
            log.exception("prediction log: could not record a failure of %s v%s", model, version)

    def outcomes(self, model: str, since: float, trust_feedback: bool = False) -> list[dict]:
        """Per prediction of `model` since `since`: arm, version, confidence, review flag, latency and the
        true label when a trusted source gave one (a reviewer; client feedback only with trust_feedback)."""
        self.flush()
        c = predictions.c
        q = (sa.select(c.id, c.created_at, c.arm, c.version, c.label, c.confidence, c.needs_review, c.latency_ms,
                       c.principal)
             .where(c.model == model, c.created_at >= since).order_by(c.created_at))
        truth = self._true_labels(trust_feedback, since)
        with self.engine.connect() as conn:
            return [{k: v for k, v in r.items() if k != "id"} | {"true_label": truth.get(r["id"], (None,))[0]}
                    for r in conn.execute(q).mappings()]

    def recent_texts(self, model: str, version: str, limit: int, since: float | None = None) -> list[str]:
        """The newest `limit` texts a version answered (optionally only after `since`), oldest first."""
        self.flush()
        c = predictions.c
        q = sa.select(c.text).where(c.model == model, c.version == version)
        if since is not None:
            q = q.where(c.created_at >= since)
        with self.engine.connect() as conn:
            return [r.text for r in conn.execute(q.order_by(c.created_at.desc()).limit(limit))][::-1]

    def failed_items(self, model: str, since: float) -> dict[tuple[str, str], int]:
        """Texts whose model call failed since `since`, per (arm, version)."""
        c = failures.c
        q = (sa.select(c.arm, c.version, sa.func.sum(c.n_texts)).where(c.model == model, c.created_at >= since)
             .group_by(c.arm, c.version))
        with self.engine.connect() as conn:
            return {(arm, version): int(n) for arm, version, n in conn.execute(q)}

    def review_backlog(self) -> int:
        """How many flagged predictions wait for a person (the length of the review queue)."""
        self.flush()
        q = sa.select(sa.func.count()).select_from(predictions).where(_waiting())
        with self.engine.connect() as conn:
            return conn.execute(q).scalar_one()

    def pairs(self, model: str, challenger: str, since: float) -> list[dict]:
        """The shadow comparison of `challenger` since `since`, in arrival order: per text both answers, whether
        and with what probability it was asked, and the reviewers' label (clients' feedback never decides it)."""
        self.flush()
        champ, shadow = predictions.alias("champ"), predictions.alias("shadow")
        q = (sa.select(champ.c.id, champ.c.created_at, champ.c.label.label("champion_label"),
                       shadow.c.label.label("challenger_label"), champ.c.review_reason, champ.c.inclusion_p)
             .join(shadow, shadow.c.pair_id == champ.c.id)
             .where(shadow.c.model == model, shadow.c.version == challenger, shadow.c.arm == SHADOW,
                    champ.c.created_at >= since).order_by(champ.c.created_at))
        truth = self._true_labels(False, since)
        with self.engine.connect() as conn:
            return [dict(r) | {"truth": truth.get(r.id, (None,))[0]} for r in conn.execute(q).mappings()]

    def answered(self, model: str, since: float) -> int:
        """How many texts of `model` were answered and logged since `since` (a shadow row is not an answer)."""
        c = predictions.c
        q = (sa.select(sa.func.count()).select_from(predictions)
             .where(c.model == model, c.arm != SHADOW, c.created_at >= since))
        with self.engine.connect() as conn:
            return conn.execute(q).scalar_one()

    def count(self) -> int:
        self.flush()
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one()
