"""The traffic store: the prediction log, the human-review queue and the label history, any SQLAlchemy
database. Serving writes it (serving.predlog, off the request path); release, monitoring, retraining and
the CLI read and label it through `TrafficStore`.

Labels are never overwritten: every reviewer's label and every client's feedback is a row of its own
(who, when, source). Readers choose whom to trust: reviewers always, clients only when asked.

Embedded mode uses SQLite in WAL mode (readers never block the writer; a crash loses at most the
rows not yet committed, and the file stays readable); a cluster points the same code at
PostgreSQL. SQL errors never carry their bound parameters (customer texts) into a message or a log.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
    sa.Column("asked_by", sa.String(200)),            # the API key that asked (None: /predict without a key)
    # a shadow comparison (release.paired): the challenger's row points at the champion's it scored alongside;
    # the champion's row says why it was put on the review queue and with what probability
    sa.Column("pair_id", sa.String(36), index=True),
    sa.Column("review_reason", sa.String(20)),        # disagreement | low_confidence | audit; None: not asked
    sa.Column("inclusion_p", sa.Float),               # P(asked) given the pair, for the Horvitz-Thompson estimate
    sa.Column("disputed", sa.Boolean),                # reviewers disagree and no label has a majority: a third person decides
)
SHADOW = "shadow"   # the arm of a challenger's prediction scored off the answer path
ADDED_COLUMNS = {"principal": "VARCHAR(200)", "pair_id": "VARCHAR(36)", "review_reason": "VARCHAR(20)", "disputed": "BOOLEAN",
                 "asked_by": "VARCHAR(200)",
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
    asked_by: str | None = None    # the API key that asked (None: anonymous)


erasures = sa.Table(  # every purge and erasure: what, when, by whom and what it reached; never a text
    "erasures", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("action", sa.String(20), nullable=False),          # purge | erase
    sa.Column("selector", sa.Text, nullable=False),              # "older than 90 days", "prediction ids …", "a text (n chars)"
    sa.Column("by", sa.String(200), nullable=False),
    sa.Column("predictions", sa.Integer, nullable=False),        # rows removed from the log (shadow rows included)
    sa.Column("labels", sa.Integer, nullable=False),
    sa.Column("copies", sa.Text, nullable=False),                # JSON: files and MLflow artifacts rewritten, rows out of each
    sa.Column("versions", sa.Text, nullable=False),              # JSON: registered versions that trained on an erased text
)


class UnknownPrediction(KeyError):
    pass


def db_error(e: BaseException) -> str:
    """What a log line may say of a database error: its kind and SQLSTATE, never its message (PostgreSQL's
    DETAIL quotes the failing row, customer text included; bound parameters are hidden by the engine)."""
    orig = getattr(e, "orig", None) or e
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return f"{type(e).__name__}({type(orig).__name__}{', SQLSTATE ' + code if code else ''})"


def normalised(text: str) -> str:
    """Case- and space-insensitive: how a text is recognised again (retraining dedup, erasure)."""
    return re.sub(r"\s+", " ", str(text).strip().lower())


SQLITE_BUSY_MS = 5000   # how long the writer waits for a SQLite lock


def database_url(location: str | Path) -> str:
    """A SQLAlchemy URL as is, or a file path for SQLite."""
    text = str(location)
    return text if "://" in text else f"sqlite:///{Path(text).resolve()}"


def _private_file(path: Path) -> None:
    """A SQLite log holds customer text: its folder 0700 when we make it, the file 0600 (an older 0644 one too)."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    path.touch(mode=0o600, exist_ok=True)
    os.chmod(path, 0o600)   # SQLite gives its -wal and -shm files the database file's mode


def make_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        _private_file(Path(url.removeprefix("sqlite:///")))
    engine = sa.create_engine(url, pool_pre_ping=True, hide_parameters=True)  # after a database restart, pooled connections are dead
    if engine.dialect.name == "sqlite":
        @sa.event.listens_for(engine, "connect")
        def _wal(conn, _record):  # per connection: WAL + fsync at checkpoints is crash-safe for committed rows
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    metadata.create_all(engine)
    with engine.begin() as conn:   # a log written by an earlier release: add what it lacks
        present = {c["name"] for c in sa.inspect(conn).get_columns("predictions")}
        for name, kind in ADDED_COLUMNS.items():
            if name not in present:
                conn.exec_driver_sql(f"ALTER TABLE predictions ADD COLUMN {name} {kind}")
    return engine


# PostgreSQL: what each role of the log may do (infra/k8s/base/least-privilege.yaml creates the roles; the owner
# of the tables grants this at `yanjin log init`). Serving: insert answers and labels, set the review fields.
ROLE_GRANTS = {
    "yanjin_predlog": ["GRANT SELECT, INSERT ON predictions, labels, failures TO {role}",
                       "GRANT UPDATE (reviewed_label, labelled_at, disputed) ON predictions TO {role}",
                       "GRANT USAGE ON SEQUENCE labels_id_seq, failures_id_seq TO {role}"],
    "yanjin_predlog_reader": ["GRANT SELECT ON predictions, labels, failures, erasures TO {role}"],
    "yanjin_retention": ["GRANT SELECT, DELETE ON predictions, labels TO {role}",
                         "GRANT SELECT, INSERT ON erasures TO {role}",
                         "GRANT USAGE ON SEQUENCE erasures_id_seq TO {role}"],
}


def init_log(location: str | Path) -> list[str]:
    """Create or migrate the log's tables (as their owner) and, on PostgreSQL, grant each of the log's roles
    that exists its part and nothing more; returns the roles granted."""
    engine = make_engine(database_url(location))
    granted = []
    try:
        if engine.dialect.name != "postgresql":
            return granted
        with engine.begin() as conn:
            conn.exec_driver_sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            conn.exec_driver_sql("REVOKE ALL ON predictions, labels, failures, erasures FROM PUBLIC")
            present = set(conn.scalars(sa.text("SELECT rolname FROM pg_roles WHERE rolname = ANY(:names)"),
                                       {"names": list(ROLE_GRANTS)}))
            for role, statements in ROLE_GRANTS.items():
                if role not in present:
                    continue
                conn.exec_driver_sql(f"REVOKE ALL ON predictions, labels, failures, erasures FROM {role}")
                conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {role}")
                for statement in statements:
                    conn.exec_driver_sql(statement.format(role=role))
                granted.append(role)
    finally:
        engine.dispose()
    return granted


@contextmanager
def _short_lock_wait(conn, seconds: float = 1.0):
    """A request's write waits at most `seconds` for a lock (the writer waits 5 s): the caller is answered
    503 and retries rather than hold a request thread. The pooled connection gets its usual wait back."""
    ms = int(seconds * 1000)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{ms}ms'")   # ends with the transaction
    if conn.dialect.name != "sqlite":
        yield
        return
    conn.exec_driver_sql(f"PRAGMA busy_timeout={ms}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")


def consensus(conn, prediction_id: str) -> str | None:
    """The label most reviewers gave (each reviewer's latest once), None on a tie between different labels."""
    latest = (sa.select(sa.func.max(labels.c.id)).where(labels.c.prediction_id == prediction_id, labels.c.source == REVIEW)
              .group_by(labels.c.given_by))
    votes = Counter(conn.scalars(sa.select(labels.c.label).where(labels.c.id.in_(latest))))
    ranked = votes.most_common()
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def _waiting():
    """On the review queue: asked for (or flagged, in a log without reasons) and not yet reviewed; never a
    shadow row (its text is labelled through the champion's row)."""
    c = predictions.c
    return sa.and_(sa.or_(c.needs_review, c.review_reason.is_not(None), c.disputed.is_(True)), c.reviewed_label.is_(None),
                   c.arm != SHADOW)


class TrafficStore:
    """Read and label the traffic store; `flush` is the writer's (serving.predlog), here there is nothing queued."""

    def __init__(self, location: str | Path) -> None:
        self.engine = make_engine(database_url(location))

    def flush(self, timeout: float = 10.0) -> bool:
        return True

    def close(self) -> None:
        self.engine.dispose()

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
        rank = sa.case((c.disputed.is_(True), -1), *((c.review_reason == r, i) for i, r in enumerate(QUEUE_ORDER)),
                       else_=QUEUE_ORDER.index(LOW_CONFIDENCE))   # a dispute first: two people are waiting on it
        q = sa.select(predictions).where(_waiting()).order_by(rank, c.created_at).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def _add_label(self, prediction_id: str, label: str, source: str, given_by: str) -> str | None:
        """Record a label; for a review, returns the reviewers' agreed label (None while disputed)."""
        self.flush(timeout=1.0)   # a prediction answered just now is labelled too; a stalled writer is not waited for
        now = time.time()
        with self.engine.begin() as conn, _short_lock_wait(conn):
            this = predictions.c.id == prediction_id
            if source == REVIEW:   # the update takes the row's lock: two reviewers at once are counted in turn
                found = conn.execute(predictions.update().where(this).values(labelled_at=now)).rowcount
            else:
                found = conn.execute(sa.select(sa.func.count()).select_from(predictions).where(this)).scalar_one()
            if not found:
                raise UnknownPrediction(prediction_id)  # the transaction rolls back: nothing recorded
            conn.execute(labels.insert().values(prediction_id=prediction_id, created_at=now, label=label,
                                                source=source, given_by=given_by))
            if source != REVIEW:
                return None
            agreed = consensus(conn, prediction_id)
            conn.execute(predictions.update().where(this).values(reviewed_label=agreed, disputed=agreed is None))
            return agreed

    def review(self, prediction_id: str, label: str, given_by: str) -> str | None:
        """A reviewer's label (trusted). Each reviewer's latest label counts once: while they agree, or one label
        has more reviewers than any other, it stands and the prediction leaves the review queue; when they
        disagree without a majority, the prediction is disputed: back on the queue, first, for a third person,
        and no label of it is trusted. Returns the standing label (None while disputed)."""
        return self._add_label(prediction_id, label, REVIEW, given_by)

    def feedback(self, prediction_id: str, label: str, given_by: str) -> None:
        """A client's label: kept beside earlier ones, counted only where the profile trusts client feedback."""
        self._add_label(prediction_id, label, FEEDBACK, given_by)

    def label_history(self, prediction_id: str) -> list[dict]:
        """Every label given for a prediction, oldest first."""
        q = sa.select(labels).where(labels.c.prediction_id == prediction_id).order_by(labels.c.id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def _true_labels(self, trust_feedback: bool, since: float | None = None) -> dict[str, tuple[str, str]]:
        """prediction id -> (label, source): the reviewers' standing label (none while disputed), else (when
        trusted) the latest client feedback."""
        c = predictions.c
        reviewed = sa.select(c.id, c.reviewed_label).where(c.reviewed_label.is_not(None))
        if since is not None:
            reviewed = reviewed.where(c.created_at >= since)
        found: dict[str, tuple[str, str]] = {}
        with self.engine.connect() as conn:
            found = {pid: (label, REVIEW) for pid, label in conn.execute(reviewed)}
            if trust_feedback:
                latest = sa.select(sa.func.max(labels.c.id)).where(labels.c.source == FEEDBACK).group_by(labels.c.prediction_id)
                if since is not None:
                    latest = latest.where(labels.c.prediction_id.in_(sa.select(c.id).where(c.created_at >= since)))
                disputed = set(conn.scalars(sa.select(c.id).where(c.disputed.is_(True))))   # reviewers outrank clients
                for pid, label in conn.execute(sa.select(labels.c.prediction_id, labels.c.label).where(labels.c.id.in_(latest))):
                    if pid not in found and pid not in disputed:
                        found[pid] = (label, FEEDBACK)
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
        except sa.exc.SQLAlchemyError as e:
            log.error("prediction log: could not record a failure of %s v%s: %s", model, version, db_error(e))

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

    # -- retention and erasure (traffic.erasure reaches the copies outside the log) --------------

    def ids_older_than(self, before: float) -> list[str]:
        """Answered predictions logged before `before` (their shadow rows go with them)."""
        self.flush()
        c = predictions.c
        with self.engine.connect() as conn:
            return list(conn.scalars(sa.select(c.id).where(c.created_at < before, c.arm != SHADOW)))

    def ids_with_text(self, text: str) -> list[str]:
        """Answered predictions whose stored text equals `text` (case and spaces aside)."""
        self.flush()
        key, c, found = normalised(text), predictions.c, []
        with self.engine.connect() as conn:
            for pid, stored in conn.execute(sa.select(c.id, c.text).where(c.arm != SHADOW).execution_options(yield_per=5000)):
                if normalised(stored) == key:
                    found.append(pid)
        return found

    def texts_of(self, ids: list[str]) -> list[str]:
        """The stored texts of these predictions (what their copies outside the log hold)."""
        c, out = predictions.c, []
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                out += conn.scalars(sa.select(c.text).where(c.id.in_(ids[i:i + 500])))
        return out

    def delete(self, ids: list[str]) -> tuple[int, int]:
        """Remove predictions, their shadow rows and every label given for them; (predictions, labels) removed."""
        self.flush()
        rows = labels_out = 0
        with self.engine.begin() as conn:
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                shadows = list(conn.scalars(sa.select(predictions.c.id).where(predictions.c.pair_id.in_(part))))
                everything = part + shadows
                labels_out += conn.execute(labels.delete().where(labels.c.prediction_id.in_(everything))).rowcount
                rows += conn.execute(predictions.delete().where(predictions.c.id.in_(everything))).rowcount
        return rows, labels_out

    def record_erasure(self, action: str, selector: str, by: str, removed: tuple[int, int], copies: dict,
                       versions: list[str]) -> int:
        with self.engine.begin() as conn:
            return conn.execute(erasures.insert().values(
                created_at=time.time(), action=action, selector=selector, by=by, predictions=removed[0],
                labels=removed[1], copies=json.dumps(copies), versions=json.dumps(versions))).inserted_primary_key[0]

    def erasure_records(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) | {"copies": json.loads(r.copies), "versions": json.loads(r.versions)}
                    for r in conn.execute(sa.select(erasures).order_by(erasures.c.id)).mappings()]

    def count(self) -> int:
        self.flush()
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one()
