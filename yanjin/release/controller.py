"""The release controller: runs every rollout and approved promotion by itself, so no laptop has to.

One pass (`tick`) does, for every model the ledger knows:
  - a new @challenger (a retraining's, a pipeline's) that passed its gate and was never rolled out: start its
    rollout, shadow first (`release.auto_rollout`), so the loop from drift to promotion needs a person only to
    review and to approve;
  - each running rollout: assess it on the prediction log and advance, roll back or promote it
    (a promotion waits for its approvals; the rollout keeps 100% until they are in);
  - each pending proposal to move @champion whose approvals are now in: carry it out, in the
    proposer's name, as the controller's principal;
  - yanjin's own alias moves the mirror never confirmed (a writer died between ledger and MLflow):
    finish them; a move made outside yanjin is reported, never undone here (`yanjin reconcile`).

`run` repeats it every interval while it leads: leadership is a lease in the ledger
(CONTROLLER_LEASE), renewed by the leader, taken over by a standby once it expires, so several
replicas (a Deployment's rolling update, a restart) never act at once, and every write of the
leader is fenced by its model lease as well. All state is in the ledger: a restart resumes.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..registry import CHALLENGER, CHAMPION, ROLLOUT_OUTCOME
from ..registry.ledger import CONTROLLER_LEASE, AliasConflict, Lease, LedgerError
from ..registry.mirror import Release
from ..traffic.store import TrafficStore
from .policy import ReleasePolicy, RolloutPolicy
from .promotion import PromotionRefused, missing_approvals, promote
from .rollout import RUNNING, RolloutError, check, read_state, start

log = logging.getLogger(__name__)


@dataclass
class Pass:
    at: float
    actions: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)    # what waits for a person
    problems: list[str] = field(default_factory=list)


def tick(release: Release, predictions: TrafficStore | None, rollout: RolloutPolicy, policy: ReleasePolicy,
         models: list[str] | None = None, report_dir: Path | None = None) -> Pass:
    """One pass over `models`, or every model the ledger knows: rollouts, approved proposals, unconfirmed
    mirror moves."""
    result = Pass(time.time())
    names = sorted(models) if models else sorted(set(release.ledger.models()) | set(release.ledger.running_rollouts()))
    for model in names:
        try:
            _model_pass(release, predictions, rollout, policy, model, report_dir, result)
        except (AliasConflict, RolloutError, PromotionRefused, LedgerError) as e:
            result.problems.append(f"{model}: {e}")
    return result


def _model_pass(release: Release, predictions: TrafficStore | None, rollout: RolloutPolicy, policy: ReleasePolicy,
                model: str, report_dir: Path | None, result: Pass) -> None:
    for done in release.complete(model):
        result.actions.append(done)
    for d in release.drift(model):
        if not d.unconfirmed:
            result.problems.append(str(d))
    state = read_state(release, model)
    if policy.auto_rollout and predictions is not None and (state is None or state.status != RUNNING):
        fresh = _untried_challenger(release, model, state)
        if fresh:
            try:
                state = start(release, model, fresh, rollout, "a new gated @challenger: its comparison starts")
                result.actions.append(f"{model}: rollout of v{fresh} started, {state.where}")
            except PromotionRefused as e:   # not gated: it stays where it is, said once a pass
                result.problems.append(f"{model}: v{fresh} at @{CHALLENGER} is not rolled out: {e}")
    if state is not None and state.status == RUNNING and predictions is not None:
        state, a = check(release, predictions, model, rollout, True, policy.approvals, report_dir)
        line = f"{model}: rollout of v{state.challenger}, {state.where}: {a.decision}"
        (result.waiting if state.reason.startswith("awaiting approval") else result.actions).append(
            line + (f" ({state.reason})" if state.reason.startswith("awaiting approval") else ""))
    in_rollout = state.challenger if state is not None and state.status == RUNNING else None
    for p in release.ledger.pending(model):
        if p["alias"] != CHAMPION or p["version"] == in_rollout:
            continue   # a rollout's own proposal is carried out by its next check
        missing = missing_approvals(release, model, p["version"], policy.approvals, p["proposer"])
        if missing:
            result.waiting.append(missing)
            continue
        entry = promote(release, model, p["version"], f"{p['reason']} (proposed by {p['proposer']}, approved)",
                        approvals=policy.approvals, proposer=p["proposer"])
        result.actions.append(f"{model}@{CHAMPION}: v{entry.from_version} -> v{entry.to_version} "
                              f"(proposed by {p['proposer']}, approved)")


def _untried_challenger(release: Release, model: str, last) -> str | None:
    """@challenger's version when it differs from @champion and no rollout has judged it yet."""
    challenger, champion = release.ledger.alias(model, CHALLENGER), release.ledger.alias(model, CHAMPION)
    if not challenger or not champion or challenger == champion or (last is not None and last.challenger == challenger):
        return None
    tags = release.client.get_model_version(model, challenger).tags
    return None if tags.get(ROLLOUT_OUTCOME) else challenger


def run(release: Release, predictions: TrafficStore | None, rollout: RolloutPolicy, policy: ReleasePolicy,
        interval_s: float, once: bool = False, echo: Callable[[str], None] = print,
        models: list[str] | None = None, passes: int | None = None) -> list[Pass]:
    """Lead and tick every `interval_s`; stand by while another controller leads. `once`: one pass."""
    done: list[Pass] = []
    lease: Lease | None = None
    ttl = max(3 * interval_s, 10.0)
    try:
        while True:
            lease = _lead(release, lease, ttl)
            if lease is None:
                if once:
                    echo("another controller leads; this one stands by")
                    return done
            else:
                result = tick(release, predictions, rollout, policy, models)
                done.append(result)
                for line in result.actions:
                    echo(f"{time.strftime('%H:%M:%S')} {line}")
                for line in result.waiting + result.problems:
                    echo(f"{time.strftime('%H:%M:%S')} waiting/problem: {line}")
            if once or (passes is not None and len(done) >= passes):
                return done
            time.sleep(interval_s)
    finally:
        if lease is not None:
            release.ledger.release(lease)


def _lead(release: Release, lease: Lease | None, ttl_s: float) -> Lease | None:
    """Renew our leadership, or take it when it is free or expired; None while another leads."""
    if lease is not None and release.ledger.renew(lease, ttl_s):
        return lease
    try:
        taken = release.ledger.acquire(CONTROLLER_LEASE, release.principal + "/" + _instance(), ttl_s, wait_s=0)
    except AliasConflict:
        return None
    if taken.broke:
        release.ledger.note(release.principal, CONTROLLER_LEASE, "controller-takeover",
                            f"took over leadership from {taken.broke}, whose lease expired")
    return taken


def _instance() -> str:
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"
