"""Moving aliases safely: compare-and-set promotion, rollback and an audit trail in the registry.

MLflow aliases have no compare-and-set, so two promoters can silently overwrite each other. We
serialise every alias change of a model through a lock that any MLflow backend makes atomic:
creating a registered model whose name is taken fails. Under the lock the alias is compared with
what the caller last saw, set, and read back; a change made meanwhile (by another promoter, or by
hand in the MLflow UI, which takes no lock) is refused with a message that says who moved it.

Every change is appended to the model's tags as `yanjin.audit.NNNNNN` = JSON (who, when,
action, alias, from, to, reason, forced), readable in the MLflow UI and by `yanjin history`.
"""
from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ..registry import (AUDIT_PREFIX, CHALLENGER, CHAMPION, GATE_PASSED, LOCK_ACQUIRED, LOCK_OWNER, ROLLED_BACK,
                        ROLLOUT_OUTCOME, ROLLOUT_REASON, alias_version, audit_tag, lock_name, version_tags)

LOCK_TTL_S = 120.0          # a lock not renewed for this long (registry clock) was left by a crashed holder
ROLLED_BACK_TAG = ROLLOUT_OUTCOME  # on a version an A/B rollout rejected: promoting it needs --force


class PromotionConflict(RuntimeError):
    """The alias moved between the caller's read and its write; nothing was changed."""


class PromotionRefused(RuntimeError):
    """The version may not take the alias (missing, failed its gates without --force, nothing to roll back to)."""


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: float           # unix seconds
    who: str
    action: str         # promote | rollback | rollout-start | rollout-advance | rollout-rollback | rollout-promote
    alias: str
    from_version: str | None
    to_version: str | None
    reason: str
    forced: bool = False

    @property
    def when(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.at)) + "Z"


def current_user() -> str:
    """Who acts: $YANJIN_USER (set by a CI job or a UI wrapper), else the OS user at this host."""
    return os.environ.get("YANJIN_USER") or f"{getpass.getuser()}@{socket.gethostname()}"


@contextmanager
def model_lock(client: MlflowClient, model: str, wait_s: float = 30.0, ttl_s: float = LOCK_TTL_S) -> Iterator[None]:
    """Hold the model's alias lock; waits up to wait_s for another holder, breaking only a stale lock.

    The holder renews the lock every ttl_s / 4 (the registry stamps each renewal with its own clock);
    a lock whose last renewal is older than ttl_s by the registry's clock was left by a crashed
    holder. Breaking it renames it to a tombstone named after its owner: the registry lets exactly one
    rename to that name succeed, so of two waiters that both find the lock stale only one breaks it.
    """
    name, token = lock_name(model), uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    clock = None  # the waiter's ticket: a registered model whose updates read the registry's clock
    try:
        while True:
            try:
                client.create_registered_model(name, tags={LOCK_OWNER: token, LOCK_ACQUIRED: str(time.time())},
                                               description=f"yanjin: alias lock for {model}; deleted when released")
                break
            except MlflowException:
                clock = clock or _ticket(client, name, token)
                if clock:
                    _break_if_stale(client, name, clock, ttl_s)
                if time.monotonic() > deadline:
                    raise PromotionConflict(f"{model}: another promotion holds the lock ({name}) for over "
                                            f"{wait_s:.0f} s; try again, or delete that registered model if its "
                                            f"holder crashed") from None
                time.sleep(0.05 + 0.1 * (uuid.uuid4().int % 10) / 10)  # jitter: waiters do not retry in lockstep
    finally:
        if clock:
            _delete(client, clock)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(client, name, ttl_s / 4, stop), daemon=True,
                               name=f"renew {name}")
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        try:
            if client.get_registered_model(name).tags.get(LOCK_OWNER) == token:
                client.delete_registered_model(name)
        except MlflowException:
            pass


def _renew(client: MlflowClient, name: str, every_s: float, stop: threading.Event) -> None:
    beat = 0
    while not stop.wait(every_s):
        beat += 1
        try:  # an update (not a tag) makes the registry stamp last_updated_timestamp with its clock
            client.update_registered_model(name, description=f"yanjin: alias lock, held; renewal {beat}")
        except MlflowException:
            return  # broken or released: the holder's next compare-and-set notices


def _ticket(client: MlflowClient, name: str, token: str) -> str | None:
    ticket = f"{name}.waiter.{token}"
    try:
        client.create_registered_model(ticket, description="yanjin: a lock waiter's clock; deleted when it stops waiting")
    except MlflowException:
        return None  # the registry is busy: try again at the next poll
    return ticket


def _registry_now(client: MlflowClient, ticket: str) -> int:
    return client.update_registered_model(ticket, description=f"clock {uuid.uuid4().hex}").last_updated_timestamp


def _break_if_stale(client: MlflowClient, name: str, ticket: str, ttl_s: float) -> None:
    try:
        held = client.get_registered_model(name)
        if _registry_now(client, ticket) - held.last_updated_timestamp <= ttl_s * 1000:
            return
    except MlflowException:
        return  # released meanwhile, or the registry is busy: look again at the next poll
    try:  # exactly one waiter wins this rename; the tombstone stays as the record of a crashed holder
        client.rename_registered_model(name, f"{name}.broken.{held.tags.get(LOCK_OWNER, 'unknown')}")
    except MlflowException:
        pass


def _delete(client: MlflowClient, name: str) -> None:
    try:
        client.delete_registered_model(name)
    except MlflowException:
        pass


def history(client: MlflowClient, model: str) -> list[AuditEntry]:
    """Every recorded alias change of `model`, oldest first."""
    tags = client.get_registered_model(model).tags
    entries = [json.loads(v) | {"seq": int(k[len(AUDIT_PREFIX):])} for k, v in tags.items() if k.startswith(AUDIT_PREFIX)]
    return sorted((AuditEntry(**e) for e in entries), key=lambda e: e.seq)


def record(client: MlflowClient, model: str, action: str, alias: str, from_version: str | None,
           to_version: str | None, reason: str, forced: bool = False, who: str | None = None) -> AuditEntry:
    """Append one audit entry; call it while holding the model lock (sequence numbers are read-then-written)."""
    seq = max((e.seq for e in history(client, model)), default=0) + 1
    entry = AuditEntry(seq, time.time(), who or current_user(), action, alias, from_version, to_version, reason, forced)
    body = {k: v for k, v in asdict(entry).items() if k != "seq"}
    client.set_registered_model_tag(model, audit_tag(seq), json.dumps(body))
    return entry


def gate_problem(client: MlflowClient, model: str, version: str) -> str | None:
    """Why a version needs --force: it did not pass the registration gate, or a rollout rejected it."""
    tags = client.get_model_version(model, version).tags
    if tags.get(ROLLOUT_OUTCOME) == ROLLED_BACK:
        return f"{model} v{version} was rolled back by an A/B rollout ({tags.get(ROLLOUT_REASON, 'no reason recorded')})"
    gate = version_tags(client, model, version).gate
    if gate != GATE_PASSED:
        return f"{model} v{version} has no passed registration gate (tag gate={gate or None!r})"
    return None


def eligible(client: MlflowClient, model: str, version: str, force: bool, doing: str = "promote") -> bool:
    """Refuse a missing version, or one that failed its gates unless forced; returns whether it was forced."""
    try:
        client.get_model_version(model, version)
    except MlflowException:
        raise PromotionRefused(f"{model} has no version {version}") from None
    problem = gate_problem(client, model, version)
    if problem and not force:
        raise PromotionRefused(f"{problem}; pass --force to {doing} it anyway (recorded as forced)")
    return problem is not None


def set_alias_checked(client: MlflowClient, model: str, alias: str, version: str | None,
                      expected: str | None, action: str, reason: str, forced: bool = False,
                      who: str | None = None) -> AuditEntry:
    """Compare-and-set under the lock already held: refuse if `alias` is not at `expected` any more."""
    current = alias_version(client, model, alias)
    if current != expected:
        moved_by = next((f" by {e.who} at {e.when} ({e.reason})" for e in reversed(history(client, model))
                         if e.alias == alias and e.to_version == current), " outside yanjin (e.g. the MLflow UI)")
        raise PromotionConflict(f"{model}@{alias} moved from v{expected} to v{current}{moved_by} after you read it; "
                                f"nothing changed; re-read and decide again")
    if version is None:
        client.delete_registered_model_alias(model, alias)
    else:
        client.set_registered_model_alias(model, alias, version)
    if alias_version(client, model, alias) != version:  # a writer that bypasses the lock got in between
        raise PromotionConflict(f"{model}@{alias} was changed by someone else while it was being set to v{version}")
    return record(client, model, action, alias, current, version, reason, forced, who)


def promote(client: MlflowClient, model: str, version: str, reason: str, alias: str = CHAMPION,
            expected: str | None = None, force: bool = False, who: str | None = None,
            action: str = "promote") -> AuditEntry:
    """Point `model@alias` at `version` if it still points where the caller saw it (`expected`)."""
    if not reason.strip():
        raise PromotionRefused("a reason is required: it goes into the audit trail")
    forced = eligible(client, model, version, force)
    with model_lock(client, model):
        return set_alias_checked(client, model, alias, version, expected, action, reason, forced, who)


def rollback_target(entries: list[AuditEntry], current: str | None, alias: str = CHAMPION) -> str | None:
    """The version `alias` held before the current one: the audit trail replayed as a stack, so
    rolling back twice walks two promotions back instead of toggling between two versions."""
    mine = [e for e in entries if e.alias == alias]
    if mine and mine[-1].to_version != current:
        return mine[-1].to_version  # moved outside yanjin (the MLflow UI): undo that move
    stack: list[str] = []
    for e in mine:
        if e.action.endswith("rollback"):
            if stack:
                stack.pop()
        elif e.from_version is not None:
            stack.append(e.from_version)
    return stack[-1] if stack else None


def rollback(client: MlflowClient, model: str, reason: str = "rollback", alias: str = CHAMPION,
             who: str | None = None) -> AuditEntry:
    """Give `alias` back to the version that held it before the current one."""
    with model_lock(client, model):
        current = alias_version(client, model, alias)
        target = rollback_target(history(client, model), current, alias)
        if target is None:
            raise PromotionRefused(f"{model}@{alias} (v{current}) has no earlier version in its audit trail to return to")
        return set_alias_checked(client, model, alias, target, current, "rollback", reason, who=who)


__all__ = ["AuditEntry", "CHALLENGER", "CHAMPION", "PromotionConflict", "PromotionRefused", "alias_version",
           "history", "model_lock", "promote", "record", "rollback", "set_alias_checked"]
