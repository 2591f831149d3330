"""Moving aliases safely: compare-and-set promotion, rollback and an audit trail in the registry.

MLflow aliases have no compare-and-set, so two promoters can silently overwrite each other. We
serialise every alias change of a model through a lock that any MLflow backend makes atomic:
creating a registered model whose name is taken fails (the lock and the audit trail live in the
registry module, which registration uses too). Under the lock the alias is compared with
what the caller last saw, set, and read back; a change made meanwhile (by another promoter, or by
hand in the MLflow UI, which takes no lock) is refused with a message that says who moved it.

Every change is appended to the model's tags as `yanjin.audit.NNNNNN` = JSON (who, when,
action, alias, from, to, reason, forced), readable in the MLflow UI and by `yanjin history`.
"""
from __future__ import annotations

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ..registry import (CHALLENGER, CHAMPION, GATE_PASSED, LOCK_TTL_S, ROLLED_BACK, ROLLOUT_OUTCOME,
                        ROLLOUT_REASON, AliasConflict, AuditEntry, alias_version, current_user, history, lock_name,
                        model_lock, record, set_alias, version_tags)

ROLLED_BACK_TAG = ROLLOUT_OUTCOME  # on a version an A/B rollout rejected: promoting it needs --force
PromotionConflict = AliasConflict  # the registry's: the alias (or its lock) moved; nothing was changed


class PromotionRefused(RuntimeError):
    """The version may not take the alias (missing, failed its gates without --force, nothing to roll back to)."""


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
    set_alias(client, model, alias, version)
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


__all__ = ["AuditEntry", "CHALLENGER", "CHAMPION", "LOCK_TTL_S", "PromotionConflict", "PromotionRefused", "alias_version",
           "current_user", "history", "lock_name", "model_lock", "promote", "record", "rollback", "set_alias_checked"]
