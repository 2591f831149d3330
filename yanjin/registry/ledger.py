"""The release ledger: the one place release state lives, in a database with transactions.

MLflow aliases and tags have no compare-and-set, and any MLflow user may create registered models,
so neither can hold a lock, an audit trail or an approval that must not be subverted. The ledger
holds them instead, through SQLAlchemy: SQLite in the state folder (embedded mode), PostgreSQL with
its own database and role on a cluster (the grants Job: infra/k8s/base/least-privilege.yaml). MLflow aliases stay what the UI and serving
read, as the ledger's mirror (registry/mirror.py).

- Leases: one per model (and one for the controller's leadership). Taking a lease raises its epoch;
  every write under a lease runs in a transaction whose first statement re-checks that epoch and
  the lease's expiry by the database's clock, so a holder that stalled past its lease and was
  replaced has its write refused by the database, never by a re-read in the client. A crashed
  holder's lease simply expires: any release principal takes it over, no admin needed.
- Aliases: compare-and-set in one transaction (expected version -> new version, epoch + 1).
- Audit: append-only rows (a trigger refuses UPDATE and DELETE; on PostgreSQL the release role is
  granted only INSERT and SELECT), each carrying the hash of the one before, so a deleted, edited or
  reordered entry is found by `verify()`. `prev_hash` is unique: the chain cannot fork.
- Approvals, proposals, the versions' registrants and the rollouts' state.

This module imports neither MLflow nor any other yanjin module.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa

LEDGER_ENV = "YANJIN_LEDGER_URL"   # the ledger's database, where it is not beside an embedded MLflow (a cluster)
GENESIS = "0" * 64
CONTROLLER_LEASE = "__controller__"   # the lease whose holder is the leading controller
LEASE_TTL_S = 120.0

metadata = sa.MetaData()
aliases = sa.Table(
    "release_aliases", metadata,
    sa.Column("model", sa.String(250), primary_key=True),
    sa.Column("alias", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(20)),                  # None: the alias is unset
    sa.Column("epoch", sa.Integer, nullable=False),       # raised by every move: the compare-and-set token
    sa.Column("audit_seq", sa.Integer),                   # the audit entry of the last move
)
leases = sa.Table(
    "release_leases", metadata,
    sa.Column("name", sa.String(250), primary_key=True),  # a model, or CONTROLLER_LEASE
    sa.Column("holder", sa.String(250), nullable=False),
    sa.Column("epoch", sa.Integer, nullable=False),       # fencing token: each new holder raises it
    sa.Column("expires_at", sa.Float, nullable=False),    # the database's clock; 0 once released
)
audit = sa.Table(
    "release_audit", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("principal", sa.String(250), nullable=False),   # the authenticated person or service
    sa.Column("db_user", sa.String(250)),                      # PostgreSQL's session_user, set by a trigger
    sa.Column("model", sa.String(250), nullable=False, index=True),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("phase", sa.String(12), nullable=False),         # intent | done | failed | record
    sa.Column("intent_seq", sa.Integer),                       # a done/failed entry: the intent it closes
    sa.Column("alias", sa.String(64)),
    sa.Column("from_version", sa.String(20)),
    sa.Column("to_version", sa.String(20)),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("forced", sa.Boolean, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("hash", sa.String(64), nullable=False),
)
approvals = sa.Table(
    "release_approvals", metadata,
    sa.Column("model", sa.String(250), primary_key=True),
    sa.Column("version", sa.String(20), primary_key=True),
    sa.Column("principal", sa.String(250), primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("audit_seq", sa.Integer, nullable=False),
)
proposals = sa.Table(
    "release_proposals", metadata,
    sa.Column("model", sa.String(250), primary_key=True),
    sa.Column("alias", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(20), primary_key=True),
    sa.Column("proposer", sa.String(250), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("status", sa.String(12), nullable=False),   # pending | done | withdrawn
)
versions = sa.Table(
    "release_versions", metadata,
    sa.Column("model", sa.String(250), primary_key=True),
    sa.Column("version", sa.String(20), primary_key=True),
    sa.Column("registered_by", sa.String(250), nullable=False),  # who trained it: may not approve it
    sa.Column("at", sa.Float, nullable=False),
)
rollouts = sa.Table(
    "release_rollouts", metadata,
    sa.Column("model", sa.String(250), primary_key=True),
    sa.Column("state", sa.Text, nullable=False),          # release.rollout.RolloutState as JSON
)
meta = sa.Table(
    "release_meta", metadata,
    sa.Column("key", sa.String(250), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
TABLES = [t.name for t in metadata.sorted_tables]


class LedgerError(RuntimeError):
    """The ledger refused a write; nothing was changed."""


class AliasConflict(LedgerError):
    """The alias (or the lease) moved between the caller's read and its write; nothing was changed."""


class Fenced(AliasConflict):
    """A write under a lease that a later holder took over, or that expired: refused by the database."""


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    epoch: int
    broke: str = ""     # the previous holder whose expired lease this one took over


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: float
    principal: str
    model: str
    action: str
    phase: str
    alias: str | None
    from_version: str | None
    to_version: str | None
    reason: str
    forced: bool = False
    intent_seq: int | None = None
    db_user: str | None = None
    prev_hash: str = GENESIS
    hash: str = ""

    @property
    def who(self) -> str:
        return self.principal

    @property
    def when(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.at)) + "Z"


def entry_hash(prev_hash: str, e: dict) -> str:
    """sha256 over the previous hash and the entry's own fields (canonical JSON): edit one, and every later
    hash stops matching."""
    body = {k: e.get(k) for k in ("seq", "at", "principal", "model", "action", "phase", "alias", "from_version",
                                  "to_version", "reason", "forced", "intent_seq")}
    body["at"] = round(float(body["at"]), 6)
    body["forced"] = bool(body["forced"])
    return hashlib.sha256((prev_hash + json.dumps(body, sort_keys=True)).encode()).hexdigest()


def ledger_url(tracking_uri: str, explicit: str | None = None) -> str:
    """The ledger's database URL: `explicit` (YANJIN_LEDGER_URL, read by the entry point), else
    release.db beside an embedded SQLite tracking store. A tracking server needs it named."""
    if explicit:
        return explicit
    if tracking_uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(tracking_uri[len('sqlite:///'):]).parent / 'release.db'}"
    raise LedgerError(f"no release ledger for tracking store {tracking_uri}: set YANJIN_LEDGER_URL to its "
                      "database (PostgreSQL on a cluster: the `release` database, see infra/README.md)")


def _sqlite_engine(url: str) -> sa.Engine:
    path = Path(url[len("sqlite:///"):])
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))   # release state is nobody else's to read
    os.chmod(path, 0o600)
    engine = sa.create_engine(url, hide_parameters=True, connect_args={"timeout": 30, "isolation_level": None})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA busy_timeout=30000")

    @sa.event.listens_for(engine, "begin")
    def _immediate(conn):  # take the write lock at BEGIN: no deadlock when a reader upgrades to a writer
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Ledger:
    """The release ledger on one database (see the module docstring)."""

    def __init__(self, url: str, create: bool = True) -> None:
        self.url = url
        if url.startswith("sqlite"):
            self.engine = _sqlite_engine(url)
        else:
            self.engine = sa.create_engine(url, hide_parameters=True, pool_pre_ping=True)
        self.dialect = self.engine.dialect.name
        if create:
            self.create()

    def create(self) -> None:
        """Tables and the audit's guards; idempotent. On PostgreSQL run it as the ledger's owner (the grants
        Job), so the release role cannot drop the guards."""
        metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            for statement in _guards(self.dialect):
                conn.exec_driver_sql(statement)

    def close(self) -> None:
        self.engine.dispose()

    # -- the clock ---------------------------------------------------------------------------------------
    def _now_sql(self):
        if self.dialect == "postgresql":
            return sa.literal_column("extract(epoch from clock_timestamp())::float8")
        return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)")

    def now(self, conn=None) -> float:
        """The database's clock (unix seconds): leases expire by it, so clients' clocks do not matter."""
        if conn is None:
            with self.engine.connect() as c:
                return float(c.execute(sa.select(self._now_sql())).scalar_one())
        return float(conn.execute(sa.select(self._now_sql())).scalar_one())

    # -- leases ------------------------------------------------------------------------------------------
    def acquire(self, name: str, holder: str, ttl_s: float = LEASE_TTL_S, wait_s: float = 30.0) -> Lease:
        """Take the lease `name`, waiting up to wait_s for its holder; an expired lease is taken over."""
        deadline = time.monotonic() + wait_s
        while True:
            taken, seen = self._try_acquire(name, holder, ttl_s)
            if taken is not None:
                return taken
            if time.monotonic() > deadline:
                raise AliasConflict(f"{name}: {seen} holds its release lease for over {wait_s:.0f} s; try again "
                                    f"(a crashed holder's lease expires {ttl_s:.0f} s after its last renewal)")
            time.sleep(0.05 + random.random() * 0.1)   # jitter: waiters do not retry in lockstep

    def _try_acquire(self, name: str, holder: str, ttl_s: float) -> tuple[Lease | None, str]:
        try:
            with self.engine.begin() as conn:
                now = self.now(conn)
                row = conn.execute(sa.select(leases).where(leases.c.name == name)).first()
                if row is None:
                    conn.execute(leases.insert().values(name=name, holder=holder, epoch=1, expires_at=now + ttl_s))
                    return Lease(name, holder, 1), ""
                if row.expires_at > now:
                    return None, row.holder
                done = conn.execute(leases.update().where(leases.c.name == name, leases.c.epoch == row.epoch)
                                    .values(holder=holder, epoch=row.epoch + 1, expires_at=now + ttl_s)).rowcount
                if done != 1:
                    return None, row.holder
                broke = row.holder if row.expires_at > 0 else ""
                return Lease(name, holder, row.epoch + 1, broke), ""
        except sa.exc.IntegrityError:   # another waiter inserted the first lease at the same moment
            return None, "another waiter"

    def renew(self, lease: Lease, ttl_s: float = LEASE_TTL_S) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(
                leases.update().where(leases.c.name == lease.name, leases.c.epoch == lease.epoch,
                                      leases.c.holder == lease.holder, leases.c.expires_at > self._now_sql())
                .values(expires_at=self._now_sql() + ttl_s)).rowcount == 1

    def release(self, lease: Lease) -> None:
        """Give the lease up; its epoch stays, so the next holder raises it."""
        with self.engine.begin() as conn:
            conn.execute(leases.update().where(leases.c.name == lease.name, leases.c.epoch == lease.epoch)
                         .values(expires_at=0.0))

    @contextmanager
    def hold(self, name: str, holder: str, ttl_s: float = LEASE_TTL_S, wait_s: float = 30.0) -> Iterator[Lease]:
        """Hold a lease for the with-block, renewed every ttl_s / 4 in the background."""
        lease = self.acquire(name, holder, ttl_s, wait_s)
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(ttl_s / 4):
                try:
                    if not self.renew(lease, ttl_s):
                        return   # taken over: the holder's next fenced write is refused
                except sa.exc.SQLAlchemyError:
                    pass         # the database is unreachable: try again; writes are fenced anyway

        renewer = threading.Thread(target=renew, daemon=True, name=f"lease {name}")
        renewer.start()
        try:
            yield lease
        finally:
            stop.set()
            renewer.join()
            try:
                self.release(lease)
            except sa.exc.SQLAlchemyError:
                pass   # it expires by itself

    @contextmanager
    def fenced(self, lease: Lease | None) -> Iterator[sa.Connection]:
        """A transaction that commits only if `lease` is still current: its first statement re-checks the
        epoch and the expiry by the database's clock and takes the lease row's lock (PostgreSQL) or the
        database's write lock (SQLite), so no later holder can take the lease until it commits."""
        with self.engine.begin() as conn:
            if lease is not None:
                ok = conn.execute(
                    leases.update().where(leases.c.name == lease.name, leases.c.epoch == lease.epoch,
                                          leases.c.holder == lease.holder, leases.c.expires_at > self._now_sql())
                    .values(holder=lease.holder)).rowcount == 1
                if not ok:
                    raise Fenced(f"{lease.name}: this process's release lease (epoch {lease.epoch}) expired or was "
                                 f"taken over by a later holder; the database refused the write; nothing changed")
            yield conn

    # -- audit -------------------------------------------------------------------------------------------
    def append(self, conn: sa.Connection, principal: str, model: str, action: str, phase: str, reason: str,
               alias: str | None = None, from_version: str | None = None, to_version: str | None = None,
               forced: bool = False, intent_seq: int | None = None, at: float | None = None) -> AuditEntry:
        """Append one audit entry inside the caller's transaction (`at`: only to migrate older entries). The chain's head is read in that same
        transaction; two writers that read the same head cannot both insert (prev_hash is unique)."""
        if self.dialect == "postgresql":   # one appender at a time across models (SQLite: BEGIN IMMEDIATE)
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7531)")
        head = conn.execute(sa.select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)).first()
        seq, prev = (head.seq + 1, head.hash) if head else (1, GENESIS)
        row = dict(seq=seq, at=self.now(conn) if at is None else at, principal=principal, model=model, action=action, phase=phase,
                   alias=alias, from_version=from_version, to_version=to_version, reason=reason, forced=forced,
                   intent_seq=intent_seq)
        row["at"] = round(row["at"], 6)
        row |= {"prev_hash": prev, "hash": entry_hash(prev, row)}
        conn.execute(audit.insert().values(**row))
        return AuditEntry(**row)

    def note(self, principal: str, model: str, action: str, reason: str, lease: Lease | None = None,
             **fields) -> AuditEntry:
        """One audit entry in its own (fenced) transaction."""
        with self.fenced(lease) as conn:
            return self.append(conn, principal, model, action, "record", reason, **fields)

    def history(self, model: str | None = None) -> list[AuditEntry]:
        q = sa.select(audit).order_by(audit.c.seq)
        if model is not None:
            q = q.where(audit.c.model == model)
        with self.engine.connect() as conn:
            return [AuditEntry(**r) for r in conn.execute(q).mappings()]

    def verify(self) -> list[str]:
        """Every break in the audit chain: a missing or renumbered entry, an edited one, one out of order,
        and alias moves whose audit entry is gone. Empty when the chain is whole."""
        problems, prev, expected_seq = [], GENESIS, 1
        entries = self.history()
        for e in entries:
            row = {k: getattr(e, k) for k in ("seq", "at", "principal", "model", "action", "phase", "alias",
                                             "from_version", "to_version", "reason", "forced", "intent_seq")}
            if e.seq != expected_seq:
                problems.append(f"entry {e.seq}: expected entry {expected_seq} here (entries deleted or renumbered)")
            if e.prev_hash != prev:
                problems.append(f"entry {e.seq}: does not follow the entry before it (deleted, inserted or reordered)")
            if entry_hash(e.prev_hash, row) != e.hash:
                problems.append(f"entry {e.seq}: its content does not match its hash (edited after it was written)")
            prev, expected_seq = e.hash, e.seq + 1
        last = entries[-1].seq if entries else 0
        with self.engine.connect() as conn:
            for r in conn.execute(sa.select(aliases.c.model, aliases.c.alias, aliases.c.audit_seq)):
                if r.audit_seq is not None and r.audit_seq > last:
                    problems.append(f"{r.model}@{r.alias}: its last move (entry {r.audit_seq}) is missing from the "
                                    f"audit (entries at the end deleted)")
            for r in conn.execute(sa.select(approvals.c.model, approvals.c.version, approvals.c.principal,
                                            approvals.c.audit_seq)):
                if r.audit_seq > last:
                    problems.append(f"{r.model} v{r.version}: {r.principal}'s approval (entry {r.audit_seq}) is missing "
                                    f"from the audit (entries at the end deleted)")
        return problems

    def head(self) -> tuple[int, str]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)).first()
        return (row.seq, row.hash) if row else (0, GENESIS)

    # -- aliases -----------------------------------------------------------------------------------------
    def alias(self, model: str, alias: str, conn: sa.Connection | None = None) -> str | None:
        q = sa.select(aliases.c.version).where(aliases.c.model == model, aliases.c.alias == alias)
        if conn is not None:
            return conn.execute(q).scalar_one_or_none()
        with self.engine.connect() as c:
            return c.execute(q).scalar_one_or_none()

    def aliases_of(self, model: str) -> dict[str, str]:
        with self.engine.connect() as conn:
            return {r.alias: r.version for r in conn.execute(sa.select(aliases).where(aliases.c.model == model))
                    if r.version is not None}

    def compare_and_set(self, conn: sa.Connection, model: str, alias: str, expected: str | None,
                        version: str | None, audit_seq: int) -> None:
        """Move `model@alias` from `expected` to `version` in the caller's transaction, or refuse."""
        row = conn.execute(sa.select(aliases).where(aliases.c.model == model, aliases.c.alias == alias)).first()
        current = row.version if row else None
        if current != expected:
            raise AliasConflict(f"{model}@{alias} moved from v{expected} to v{current} after you read it; nothing "
                                f"changed; re-read and decide again")
        if row is None:
            conn.execute(aliases.insert().values(model=model, alias=alias, version=version, epoch=1,
                                                 audit_seq=audit_seq))
            return
        done = conn.execute(aliases.update().where(aliases.c.model == model, aliases.c.alias == alias,
                                                   aliases.c.epoch == row.epoch)
                            .values(version=version, epoch=row.epoch + 1, audit_seq=audit_seq)).rowcount
        if done != 1:
            raise AliasConflict(f"{model}@{alias} was moved by another writer at the same moment; nothing changed")

    def set_audit_seq(self, conn: sa.Connection, model: str, alias: str, seq: int) -> None:
        conn.execute(aliases.update().where(aliases.c.model == model, aliases.c.alias == alias)
                     .values(audit_seq=seq))

    # -- versions, proposals, approvals -------------------------------------------------------------------
    def record_version(self, model: str, version: str, registered_by: str) -> None:
        with self.engine.begin() as conn:
            if conn.execute(sa.select(versions.c.version).where(versions.c.model == model,
                                                                versions.c.version == version)).first() is None:
                conn.execute(versions.insert().values(model=model, version=version, registered_by=registered_by,
                                                      at=self.now(conn)))

    def registered_by(self, model: str, version: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(versions.c.registered_by).where(
                versions.c.model == model, versions.c.version == version)).scalar_one_or_none()

    def propose(self, model: str, alias: str, version: str, proposer: str, reason: str) -> bool:
        """Record a pending request to move `model@alias` to `version`; False when one was pending already."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(proposals).where(proposals.c.model == model, proposals.c.alias == alias,
                                                          proposals.c.version == version)).first()
            if row is not None and row.status == "pending":
                return False
            values = dict(proposer=proposer, reason=reason, at=self.now(conn), status="pending")
            if row is None:
                conn.execute(proposals.insert().values(model=model, alias=alias, version=version, **values))
            else:
                conn.execute(proposals.update().where(proposals.c.model == model, proposals.c.alias == alias,
                                                      proposals.c.version == version).values(**values))
            self.append(conn, proposer, model, "propose", "record", reason, alias=alias, to_version=version)
            return True

    def close_proposals(self, conn: sa.Connection, model: str, alias: str, status: str = "done") -> None:
        conn.execute(proposals.update().where(proposals.c.model == model, proposals.c.alias == alias,
                                              proposals.c.status == "pending").values(status=status))

    def pending(self, model: str | None = None) -> list[dict]:
        q = sa.select(proposals).where(proposals.c.status == "pending").order_by(proposals.c.at)
        if model is not None:
            q = q.where(proposals.c.model == model)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def approve(self, model: str, version: str, principal: str, reason: str) -> AuditEntry:
        """Record `principal`'s approval (the caller checked who may approve). Idempotent per person."""
        with self.engine.begin() as conn:
            if conn.execute(sa.select(approvals.c.principal).where(
                    approvals.c.model == model, approvals.c.version == version,
                    approvals.c.principal == principal)).first() is not None:
                raise LedgerError(f"{principal} has approved {model} v{version} already")
            entry = self.append(conn, principal, model, "approve", "record", reason, to_version=version)
            conn.execute(approvals.insert().values(model=model, version=version, principal=principal, reason=reason,
                                                   at=entry.at, audit_seq=entry.seq))
            return entry

    def approvals_of(self, model: str, version: str) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(approvals).where(
                approvals.c.model == model, approvals.c.version == version).order_by(approvals.c.at)).mappings()]

    # -- rollouts ----------------------------------------------------------------------------------------
    def rollout(self, model: str, conn: sa.Connection | None = None) -> dict | None:
        q = sa.select(rollouts.c.state).where(rollouts.c.model == model)
        if conn is not None:
            raw = conn.execute(q).scalar_one_or_none()
        else:
            with self.engine.connect() as c:
                raw = c.execute(q).scalar_one_or_none()
        return json.loads(raw) if raw else None

    def write_rollout(self, conn: sa.Connection, model: str, state: dict) -> None:
        raw = json.dumps(state)
        if conn.execute(rollouts.update().where(rollouts.c.model == model).values(state=raw)).rowcount == 0:
            conn.execute(rollouts.insert().values(model=model, state=raw))

    def running_rollouts(self) -> list[str]:
        with self.engine.connect() as conn:
            return sorted(r.model for r in conn.execute(sa.select(rollouts))
                          if json.loads(r.state).get("status") == "running")

    def models(self) -> list[str]:
        with self.engine.connect() as conn:
            return sorted({r.model for r in conn.execute(sa.select(aliases.c.model))})

    # -- bookkeeping -------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(meta.c.value).where(meta.c.key == key)).scalar_one_or_none()

    def get_meta_in(self, conn: sa.Connection, key: str) -> str | None:
        return conn.execute(sa.select(meta.c.value).where(meta.c.key == key)).scalar_one_or_none()

    def set_meta(self, conn: sa.Connection, key: str, value: str) -> None:
        if conn.execute(meta.update().where(meta.c.key == key).values(value=value)).rowcount == 0:
            conn.execute(meta.insert().values(key=key, value=value))


def _guards(dialect: str) -> list[str]:
    """Triggers that keep the audit append-only (and, on PostgreSQL, stamp who the database saw)."""
    if dialect == "sqlite":
        return [f"CREATE TRIGGER IF NOT EXISTS release_audit_no_{op.lower()} BEFORE {op} ON release_audit "
                "BEGIN SELECT RAISE(ABORT, 'the release audit is append-only'); END" for op in ("UPDATE", "DELETE")]
    if dialect == "postgresql":
        return [
            "CREATE OR REPLACE FUNCTION release_audit_guard() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF TG_OP = 'INSERT' THEN NEW.db_user := session_user; RETURN NEW; END IF; "
            "RAISE EXCEPTION 'the release audit is append-only'; END $$",
            "DROP TRIGGER IF EXISTS release_audit_guard ON release_audit",
            "CREATE TRIGGER release_audit_guard BEFORE INSERT OR UPDATE OR DELETE ON release_audit "
            "FOR EACH ROW EXECUTE FUNCTION release_audit_guard()",
        ]
    return []
