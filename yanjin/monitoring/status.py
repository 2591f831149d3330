"""Where the family stands, on one screen (`yanjin status`): each member's champion and challenger, a
running rollout, the last drift verdict, the last retraining, the review queue and the next quarter.

Everything is read from where the running system keeps it (the release ledger: rollouts, pending
promotions and their approvals; aliases and tags in MLflow, checked against the ledger; the drift
checks' runs; the prediction log); nothing here writes.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .. import registry as R
from .trigger import TriggerState, next_quarter_start


@dataclass(frozen=True)
class VersionLine:
    version: str
    accuracy: str          # as recorded at registration
    created: float         # unix seconds


@dataclass
class MemberStatus:
    member: str
    model: str
    registered: bool
    versions: int = 0
    champion: VersionLine | None = None
    challenger: VersionLine | None = None
    rollout: dict | None = None             # the rollout tag's state, when one ran
    drift: dict | None = None               # the last drift check: verdict, at, version
    retraining: dict | None = None          # the newest retrained version: version, reason, at
    last_quarterly: float | None = None
    made: tuple[str, str] | None = None     # the champion's (recipe, network) as recorded (card.as_made)


@dataclass
class FamilyStatus:
    now: float
    members: list[MemberStatus]
    review_queue: int | None                # None: no prediction log yet
    log: str
    next_quarterly: datetime
    notes: list[str] = field(default_factory=list)


def _line(client, model: str, alias: str) -> VersionLine | None:
    version = R.alias_version(client, model, alias)
    if version is None:
        return None
    mv = client.get_model_version(model, version)
    return VersionLine(version, R.VersionTags.from_tags(dict(mv.tags)).accuracy, mv.creation_timestamp / 1000)


def _last_drift_check(client, model: str) -> dict | None:
    exp = client.get_experiment_by_name(R.monitoring_experiment(model))
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    run = runs[0]
    return {"verdict": run.data.tags.get(R.RUN_VERDICT, "?"), "at": run.info.start_time / 1000,
            "version": run.data.tags.get("version", "")}


def member_status(client, member: str, model: str, ledger=None) -> MemberStatus:
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(model).tags
    except MlflowException:
        return MemberStatus(member, model, registered=False)
    versions = client.search_model_versions(f"name='{model}'")
    retrained = [v for v in versions if R.RETRAINING_REASON in v.tags]
    newest = max(retrained, key=lambda v: int(v.version), default=None)
    rollout = ledger.rollout(model) if ledger is not None else None
    if rollout is None and tags.get(R.ROLLOUT_TAG):   # a registry not yet migrated into the ledger
        rollout = json.loads(tags[R.ROLLOUT_TAG])
    from ..components.card import as_made

    trigger = TriggerState.from_json(tags.get(R.MONITOR_STATE_TAG))
    champion = _line(client, model, R.CHAMPION)
    return MemberStatus(
        member, model, True, len(versions), champion, _line(client, model, R.CHALLENGER),
        rollout, _last_drift_check(client, model),
        {"version": str(newest.version), "reason": newest.tags[R.RETRAINING_REASON],
         "at": newest.creation_timestamp / 1000} if newest else None,
        trigger.last_quarterly, as_made(client, model, champion.version) if champion else None)


def release_notes(client, ledger, models: list[str]) -> list[str]:
    """What waits for a person (pending promotions and who approved them so far) and every alias that MLflow
    shows differently from the ledger (moved outside yanjin, or not yet mirrored)."""
    from mlflow.exceptions import MlflowException

    notes = []
    for model in models:
        for p in ledger.pending(model):
            given = [a["principal"] for a in ledger.approvals_of(model, p["version"])]
            notes.append(f"waiting: {model} v{p['version']} -> @{p['alias']}, proposed by {p['proposer']}: approvals "
                         f"so far {', '.join(given) or 'none'} (yanjin approve {model} {p['version']} --reason ...; "
                         f"not by {p['proposer']} nor its trainer {ledger.registered_by(model, p['version']) or '?'})")
        try:
            shown = {a: str(v) for a, v in client.get_registered_model(model).aliases.items()}
        except MlflowException:
            continue
        kept = ledger.aliases_of(model)
        if not kept and ledger.get_meta(f"migrated:{model}") is None:
            continue   # written before the ledger: migrated on its first release action
        for alias in sorted(set(shown) | set(kept)):
            if shown.get(alias) != kept.get(alias):
                notes.append(f"ALIAS MOVED OUTSIDE YANJIN: {model}@{alias} is v{shown.get(alias)} in MLflow but "
                             f"v{kept.get(alias)} in the release ledger; undo or adopt: yanjin reconcile {model} "
                             f"--undo | --adopt --reason ...")
    return notes


def family_status(client, members: dict[str, str], prediction_log, log_location: str, ledger=None,
                  now: float | None = None) -> FamilyStatus:
    """`members`: member -> registered model; `prediction_log`: an open TrafficStore, or None when none exists;
    `ledger`: the release ledger, or None when none was written yet."""
    now = now or time.time()
    status = FamilyStatus(now, [member_status(client, m, name, ledger) for m, name in members.items()],
                          prediction_log.review_backlog() if prediction_log is not None else None, log_location,
                          next_quarter_start(datetime.fromtimestamp(now, timezone.utc)))
    if ledger is not None:
        status.notes += release_notes(client, ledger, list(members.values()))
    return status


# -- one screen -------------------------------------------------------------------------------------------
def age(seconds: float) -> str:
    """3m, 5h, 12d: how long ago, as people read it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def _version(v: VersionLine | None, now: float) -> str:
    if v is None:
        return "–"
    accuracy = f" {float(v.accuracy):.4f}" if v.accuracy else ""
    return f"#{v.version}{accuracy} ({age(now - v.created)} old)"  # '#': members are called v1, v2 already


def _rollout(state: dict | None, now: float) -> str:
    if not state:
        return "none"
    version = state[R.CHALLENGER]  # the rollout state names its versions by their aliases
    if state["status"] != R.ROLLOUT_RUNNING:
        return f"last: #{version} {state['status']} {age(now - state['step_started_at'])} ago"
    plan = state["plan"]
    if state.get("phase") == R.ROLLOUT_SHADOW:
        return (f"#{version} in shadow on {state['shadow'].get('share', 0):.0%} of texts, "
                f"{age(now - state['started_at'])}: awaiting the paired verdict (reviewers label the disagreements)")
    return (f"#{version} canary step {state['step'] + 1}/{len(plan)} at {plan[state['step']]:.0%} of traffic, "
            f"{age(now - state['step_started_at'])} in step" + (f" ({state['reason']})" if state.get("reason") else ""))


def render(status: FamilyStatus) -> str:
    now = status.now
    header = ("member", R.CHAMPION, R.CHALLENGER, "rollout", "last drift check", "last retraining")
    rows = []
    for m in status.members:
        if not m.registered:
            rows.append((m.member, "not registered", "–", "–", "–", "–"))
            continue
        drift = (f"{m.drift['verdict']} ({age(now - m.drift['at'])} ago)" if m.drift else "never checked")
        retrained = (f"#{m.retraining['version']} {age(now - m.retraining['at'])} ago: {m.retraining['reason']}"
                     if m.retraining else "none")
        rows.append((m.member, _version(m.champion, now), _version(m.challenger, now), _rollout(m.rollout, now),
                     drift, retrained))
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    made = [f"  {m.member} #{m.champion.version}: {m.made[0]}; {m.made[1]}" for m in status.members if m.made]
    if made:
        lines += ["", "champions as trained (recorded recipe; network from the checkpoint):", *made]
    queue = ("no prediction log yet" if status.review_queue is None
             else f"{status.review_queue} prediction(s) waiting (yanjin review list)")
    nq = status.next_quarterly
    lines += ["", f"review queue: {queue}  [{status.log}]",
              f"next quarterly retraining: {nq:%Y-%m-%d %H:%M} UTC (in {age(nq.timestamp() - now)}; on a cluster the "
              f"KFP recurring run, embedded `yanjin schedule run`)"]
    return "\n".join(lines + status.notes)
