"""Moving aliases safely: compare-and-set promotion in the release ledger, four-eyes approval, rollback.

Every alias change goes through the ledger (registry/ledger.py): a compare-and-set in one database
transaction under the model's lease, an audit entry of intent before the MLflow alias moves and one
confirming it after (registry/mirror.py). The person is the principal the registry authenticated.

Promotion to champion may need approvals (`release.approvals` in the profile): that many people other
than the one who proposed it and the one who trained (registered) the version must have run
`yanjin approve`. A promotion without them is recorded as a pending proposal and refused with a message
naming what is missing; the controller carries it out once the approvals are in.
"""
from __future__ import annotations

from mlflow.exceptions import MlflowException

from ..registry import CHALLENGER, CHAMPION, GATE_PASSED, ROLLED_BACK, ROLLOUT_OUTCOME, ROLLOUT_REASON, version_tags
from ..registry.ledger import AliasConflict, AuditEntry, LedgerError
from ..registry.mirror import Release

PromotionConflict = AliasConflict  # the ledger's: the alias (or the lease) moved; nothing was changed
NOT_MOVES = ("propose", "approve", "lease-takeover")   # audit actions that move no alias


class PromotionRefused(RuntimeError):
    """The version may not take the alias (missing, failed its gates without --force, nothing to roll back to)."""


class ApprovalMissing(PromotionRefused):
    """A promotion to champion that lacks the approvals the profile asks for; recorded as a proposal."""


def gate_problem(client, model: str, version: str) -> str | None:
    """Why a version needs --force: it did not pass the registration gate, or a rollout rejected it."""
    tags = client.get_model_version(model, version).tags
    if tags.get(ROLLOUT_OUTCOME) == ROLLED_BACK:
        return f"{model} v{version} was rolled back by an A/B rollout ({tags.get(ROLLOUT_REASON, 'no reason recorded')})"
    gate = version_tags(client, model, version).gate
    if gate != GATE_PASSED:
        return f"{model} v{version} has no passed registration gate (tag gate={gate or None!r})"
    return None


def eligible(client, model: str, version: str, force: bool, doing: str = "promote") -> bool:
    """Refuse a missing version, or one that failed its gates unless forced; returns whether it was forced."""
    try:
        client.get_model_version(model, version)
    except MlflowException:
        raise PromotionRefused(f"{model} has no version {version}") from None
    problem = gate_problem(client, model, version)
    if problem and not force:
        raise PromotionRefused(f"{problem}; pass --force to {doing} it anyway (recorded as forced)")
    return problem is not None


def trainer_of(release: Release, model: str, version: str) -> str:
    """Who registered (trained) the version: the ledger's record; for a version registered outside yanjin
    (or before the ledger), the MLflow version's user, else its training run's."""
    found = release.ledger.registered_by(model, version)
    if found:
        return found
    try:
        mv = release.client.get_model_version(model, version)
        return mv.user_id or (release.client.get_run(mv.run_id).info.user_id if mv.run_id else "") or "unknown"
    except MlflowException:
        return "unknown"


def missing_approvals(release: Release, model: str, version: str, needed: int, proposer: str) -> str | None:
    """What a promotion of `version` to champion still lacks, or None when its approvals are in."""
    if needed <= 0:
        return None
    trainer = trainer_of(release, model, version)
    given = release.ledger.approvals_of(model, version)
    valid = [a["principal"] for a in given if a["principal"] not in (proposer, trainer)]
    if len(valid) >= needed:
        return None
    have = f"{len(valid)} ({', '.join(valid)})" if valid else "none"
    return (f"{model} v{version} needs {needed} approval(s) before it becomes {CHAMPION}, from people other than "
            f"{proposer} (who proposed it) and {trainer} (who trained it); it has {have}. Ask an approver to run: "
            f"yanjin approve {model} {version} --reason \"...\"")


def approve(release: Release, model: str, version: str, reason: str) -> AuditEntry:
    """Record the authenticated principal's approval of `version`; refused for its trainer and proposer."""
    if not reason.strip():
        raise PromotionRefused("a reason is required: it goes into the audit trail")
    eligible(release.client, model, version, force=True)
    release.migrate(model)
    me = release.principal
    if me == trainer_of(release, model, version):
        raise PromotionRefused(f"{me} trained {model} v{version}: an approval must come from someone else")
    proposers = {p["proposer"] for p in release.ledger.pending(model) if p["version"] == version}
    if me in proposers:
        raise PromotionRefused(f"{me} proposed {model} v{version}: an approval must come from someone else")
    try:
        return release.ledger.approve(model, version, me, reason)
    except LedgerError as e:
        raise PromotionRefused(str(e)) from None


def _who_moved(release: Release, model: str, alias: str, version: str | None) -> str:
    for e in reversed(release.ledger.history(model)):
        if e.alias == alias and e.to_version == version and e.action not in NOT_MOVES:
            return f" by {e.principal} at {e.when} ({e.reason})"
    return ""


def promote(release: Release, model: str, version: str, reason: str, alias: str = CHAMPION,
            expected: str | None = None, force: bool = False, approvals: int = 0, action: str = "promote",
            proposer: str | None = None) -> AuditEntry:
    """Point `model@alias` at `version` if the ledger still says `expected` (None: whatever it says now)."""
    if not reason.strip():
        raise PromotionRefused("a reason is required: it goes into the audit trail")
    forced = eligible(release.client, model, version, force)
    release.migrate(model)
    proposer = proposer or release.principal
    if alias == CHAMPION and (missing := missing_approvals(release, model, version, approvals, proposer)):
        fresh = release.ledger.propose(model, alias, version, proposer, reason)
        raise ApprovalMissing(("proposal recorded: " if fresh else "proposal pending: ") + missing)
    with release.holding(model) as lease:   # no other yanjin move is in flight while we hold it
        outside = [d for d in release.drift(model) if d.alias == alias and not d.unconfirmed]
        if outside:
            raise PromotionConflict(f"{outside[0]}; nothing changed")
        seen = release.ledger.alias(model, alias) if expected is None else expected
        try:
            return release.move(lease, model, alias, seen, version, action, reason, forced)
        except AliasConflict as e:
            now = release.ledger.alias(model, alias)
            raise PromotionConflict(str(e).replace(" after you read it", f"{_who_moved(release, model, alias, now)} "
                                                   "after you read it")) from None


def rollback_target(entries: list[AuditEntry], current: str | None, alias: str = CHAMPION) -> str | None:
    """The version `alias` held before the current one: the audit's confirmed moves replayed as a stack,
    so rolling back twice walks two promotions back instead of toggling between two versions."""
    stack: list[str] = []
    for e in entries:
        if e.alias != alias or e.action in NOT_MOVES or e.phase not in ("done", "record"):
            continue
        if e.action.endswith("rollback"):
            if stack:
                stack.pop()
        elif e.from_version is not None and e.from_version != e.to_version:
            stack.append(e.from_version)
    return stack[-1] if stack else None


def rollback(release: Release, model: str, reason: str = "rollback", alias: str = CHAMPION) -> AuditEntry:
    """Give `alias` back to the version that held it before the current one (no approval: it restores a
    version that had them; audited like every move)."""
    release.migrate(model)
    with release.holding(model) as lease:
        current = release.ledger.alias(model, alias)
        target = rollback_target(release.ledger.history(model), current, alias)
        if target is None:
            raise PromotionRefused(f"{model}@{alias} (v{current}) has no earlier version in its audit trail to return to")
        return release.move(lease, model, alias, current, target, "rollback", reason)


def history(release: Release, model: str) -> list[AuditEntry]:
    """The alias changes of `model` as confirmed in the audit, oldest first (intents and records aside)."""
    release.migrate(model)
    return [e for e in release.ledger.history(model) if e.phase in ("done", "record") and e.action not in NOT_MOVES]


__all__ = ["ApprovalMissing", "AuditEntry", "CHALLENGER", "CHAMPION", "PromotionConflict", "PromotionRefused", "approve",
           "history", "missing_approvals", "promote", "rollback"]
