"""A rollout decided by measured outcomes: shadow first, then canary. In shadow the challenger scores a share
of the texts the champion answers, off the answer path, and is judged against it on the same texts from the
labels that decide the question (release.paired); worse, or no verdict within the label or time budget
("inconclusive: keep the champion"), ends it there. Then it steps up a plan of real traffic, judged on errors,
latency and review rate, rolls back automatically when it is worse, and is promoted when it has held its own
at 100% (with its approvals). A rollout started with `shadow_share` 0 is judged on accuracy per arm instead.

State lives in the release ledger (registry/ledger.py), written under the model's fenced lease, and is
mirrored to MLflow, so every serving replica and every controller sees the same thing:
  - `@challenger` alias: the version under test;
  - tag `yanjin.challenger_share`: its traffic share, which serving polls with the aliases;
  - tag `yanjin.shadow`: the shadow comparison in force (share of texts, review sampling);
  - tag `yanjin.rollout`: the plan, the current step and the outcome (JSON; the ledger's copy rules);
  - an MLflow run in experiment `<model>-rollouts`: one metric point per check, and the report.
Each check reads the prediction log (labelled accuracy, review rate, failures, latency per arm)
since the rollout started and compares the arms with an always-valid test (release.sequential),
so checking after every batch of traffic does not inflate false alarms. No single caller decides a
verdict: one API key's labelled predictions count as evidence up to `max_principal_share` of an arm's.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..registry import (CHALLENGER, CHAMPION, ROLLED_BACK, ROLLOUT_OUTCOME, ROLLOUT_REASON, ROLLOUT_RUNNING,
                        ROLLOUT_SHADOW, ensure_experiment, rollouts_experiment, run_name)
from ..registry.ledger import Lease
from ..registry.mirror import Release
from ..traffic.store import SHADOW, TrafficStore
from .paired import NON_INFERIOR, WORSE, Pair, PairedEstimate, paired_estimate
from .policy import RolloutPolicy
from .promotion import eligible, missing_approvals
from .sequential import Difference, confidence_sequence

MIN_FOR_VERDICT = 30   # labelled texts per arm before accuracy may condemn: the test is a normal approximation
RUNNING, PROMOTED, ABORTED = ROLLOUT_RUNNING, "promoted", "aborted"   # and ROLLED_BACK, the registry's tag value
INCONCLUSIVE = "inconclusive"         # no verdict within the budget: the champion stays
SHADOW_PHASE, CANARY_PHASE = ROLLOUT_SHADOW, "canary"


class RolloutError(RuntimeError):
    pass


@dataclass(frozen=True)
class RolloutState:
    champion: str
    challenger: str
    plan: list[float]
    step: int
    started_at: float
    step_started_at: float
    run_id: str
    status: str = RUNNING
    reason: str = ""
    checks: int = 0
    started_by: str = ""      # the principal who started it: the promotion's proposer
    phase: str = CANARY_PHASE
    shadow: dict = field(default_factory=dict)   # {"share", "disagreement_p", "audit_p"}: what serving samples
    shadow_verdict: str = ""  # the paired verdict that let it out of shadow
    canary_started_at: float = 0.0   # the canary compares the arms on traffic since then

    @property
    def since(self) -> float:
        return max(self.started_at, self.canary_started_at)

    @property
    def share(self) -> float:
        """The challenger's share of real traffic now (0 in shadow: the champion answers everything)."""
        return 0.0 if self.phase == SHADOW_PHASE else self.plan[self.step]

    @property
    def where(self) -> str:
        return f"shadow ({self.shadow.get('share', 0):.0%} of texts)" if self.phase == SHADOW_PHASE else \
            f"canary {self.share:.0%} (step {self.step + 1}/{len(self.plan)})"


@dataclass(frozen=True)
class ArmStats:
    version: str
    requests: int = 0          # predictions served
    labelled: int = 0          # ... with a true label (review or feedback)
    correct: int = 0
    review: int = 0            # ... flagged low-confidence
    failed: int = 0            # texts whose model call raised
    latency_p95_ms: float = math.nan

    @property
    def accuracy(self) -> float:
        return self.correct / self.labelled if self.labelled else math.nan

    @property
    def review_rate(self) -> float:
        return self.review / self.requests if self.requests else math.nan

    @property
    def error_rate(self) -> float:
        total = self.requests + self.failed
        return self.failed / total if total else 0.0


@dataclass
class Assessment:
    decision: str                     # hold | advance | promote | rollback
    reasons: list[str]
    champion: ArmStats
    challenger: ArmStats
    step_requests: int                # challenger predictions since the current step began
    accuracy: Difference
    review: Difference
    errors: Difference
    share: float
    paired: PairedEstimate | None = None   # the shadow comparison, while in shadow
    paired_alpha: float = 0.05             # the error rate both intervals hold at over all looks
    at: float = field(default_factory=time.time)


def read_state(release: Release, model: str) -> RolloutState | None:
    release.migrate(model)
    raw = release.ledger.rollout(model)
    return RolloutState(**raw) if raw else None


def _write_state(release: Release, lease: Lease, model: str, state: RolloutState, note: tuple[str, str] | None = None,
                 ) -> None:
    """The state in the ledger (with its audit entry, `note` = (action, reason)), fenced by the lease; then
    its mirror in MLflow."""
    with release.ledger.fenced(lease) as conn:
        release.ledger.write_rollout(conn, model, asdict(state))
        if note:
            release.ledger.append(conn, release.principal, model, note[0], "record", note[1], alias=CHALLENGER,
                                  from_version=state.challenger, to_version=state.challenger)
    release.mirror_rollout(model, asdict(state))


def start(release: Release, model: str, challenger: str, policy: RolloutPolicy, reason: str,
          force: bool = False) -> RolloutState:
    """Point @challenger at `challenger` and give it the plan's first share of traffic. Everything it
    reads (a running rollout, the champion) is read under the model's lease, so two starts cannot both run."""
    plan = policy.steps()
    client = release.client
    with release.holding(model) as lease:
        current = read_state(release, model)
        if current is not None and current.status == RUNNING:
            raise RolloutError(f"{model}: a rollout of v{current.challenger} is already running "
                               f"(step {current.step + 1}/{len(current.plan)}); finish or roll it back first")
        champion = release.ledger.alias(model, CHAMPION)
        if champion is None:
            raise RolloutError(f"{model} has no @champion to compare against")
        if champion == challenger:
            raise RolloutError(f"{model} v{challenger} is already the champion")
        forced = eligible(client, model, challenger, force, "roll out")
        exp_id = ensure_experiment(rollouts_experiment(model), tracking_uri=client.tracking_uri)
        run = client.create_run(exp_id, run_name=run_name(model, challenger, f"rollout against #{champion}"),
                                tags={"model": model, CHAMPION: champion, CHALLENGER: challenger})
        for key, value in asdict(policy).items():
            client.log_param(run.info.run_id, key, value)
        now = time.time()
        shadow = {"share": policy.shadow_share, "disagreement_p": policy.disagreement_p, "audit_p": policy.audit_p}
        state = RolloutState(champion, challenger, plan, 0, now, now, run.info.run_id, started_by=release.principal,
                             phase=SHADOW_PHASE if policy.shadow_share > 0 else CANARY_PHASE,
                             shadow=shadow if policy.shadow_share > 0 else {})
        release.move(lease, model, CHALLENGER, release.ledger.alias(model, CHALLENGER), challenger, "rollout-start",
                     f"{reason} (" + (f"shadow on {policy.shadow_share:.0%} of texts, then " if state.shadow else "")
                     + f"plan {policy.plan})", forced)
        _write_state(release, lease, model, state)
    return state  # the run stays open until the rollout ends


def capped_evidence(rows: list[dict], max_share: float) -> list[dict]:
    """An arm's labelled rows, each identified caller's counted up to `max_share` of them (the earliest
    first), so no single API key decides a verdict by what it sends through an arm. Callers without a
    key cannot choose their arm and are not capped."""
    labelled = [r for r in rows if r["true_label"] is not None]
    cap = max(1, math.ceil(max_share * len(labelled)))
    counted: dict[str, int] = {}
    kept = []
    for r in labelled:
        who = r.get("principal")
        if who:
            counted[who] = counted.get(who, 0) + 1
            if counted[who] > cap:
                continue
        kept.append(r)
    return kept


def _arm(rows: list[dict], failed: int, version: str, max_share: float = 1.0) -> ArmStats:
    import numpy as np

    labelled = capped_evidence(rows, max_share)
    latencies = [r["latency_ms"] for r in rows]
    return ArmStats(version, len(rows), len(labelled), sum(r["label"] == r["true_label"] for r in labelled),
                    sum(bool(r["needs_review"]) for r in rows), failed,
                    float(np.percentile(latencies, 95)) if latencies else math.nan)


def assess(log: TrafficStore, model: str, state: RolloutState, policy: RolloutPolicy) -> Assessment:
    """Compare the arms on everything logged since the rollout began; decide what to do next."""
    rows = log.outcomes(model, state.since, trust_feedback=policy.trust_client_feedback)
    failed = log.failed_items(model, state.since)
    challenger_arm = SHADOW if state.phase == SHADOW_PHASE else CHALLENGER
    mine = {arm: [r for r in rows if r["arm"] == arm and r["version"] == version]
            for arm, version in ((CHAMPION, state.champion), (challenger_arm, state.challenger))}
    champ = _arm(mine[CHAMPION], failed.get((CHAMPION, state.champion), 0), state.champion, policy.max_principal_share)
    chal = _arm(mine[challenger_arm], failed.get((challenger_arm, state.challenger), 0), state.challenger,
                policy.max_principal_share)
    if state.phase == SHADOW_PHASE:
        return _assess_shadow(log, model, state, policy, champ, chal)
    step_requests = sum(r["created_at"] >= state.step_started_at for r in mine[challenger_arm])
    judged_in_shadow = state.shadow_verdict == NON_INFERIOR   # accuracy was settled on the same texts
    test = dict(alpha=policy.alpha, tau=policy.tau)
    accuracy = confidence_sequence(champ.correct, champ.labelled, chal.correct, chal.labelled, **test)
    review = confidence_sequence(champ.review, champ.requests, chal.review, chal.requests, **test)
    errors = confidence_sequence(champ.failed, champ.requests + champ.failed, chal.failed,
                                 chal.requests + chal.failed, **test)

    worse, pending = [], []
    if chal.requests + chal.failed and errors.low > 0:
        worse.append(f"challenger fails significantly more often ({chal.error_rate:.2%} vs {champ.error_rate:.2%})")
    if chal.requests >= policy.min_step_requests and chal.error_rate > policy.max_error_rate:
        worse.append(f"challenger error rate {chal.error_rate:.2%} > {policy.max_error_rate:.2%}")
    if min(chal.requests, champ.requests) >= policy.min_step_requests and \
            chal.latency_p95_ms > policy.max_latency_ratio * champ.latency_p95_ms:
        worse.append(f"challenger p95 latency {chal.latency_p95_ms:.1f} ms > {policy.max_latency_ratio}x "
                     f"champion's {champ.latency_p95_ms:.1f} ms")
    if not judged_in_shadow and min(chal.labelled, champ.labelled) >= MIN_FOR_VERDICT and accuracy.high < 0:
        worse.append(f"challenger accuracy {chal.accuracy:.3f} is significantly below champion's "
                     f"{champ.accuracy:.3f} (difference within [{accuracy.low:+.3f}, {accuracy.high:+.3f}])")
    if min(chal.requests, champ.requests) >= MIN_FOR_VERDICT and review.low > policy.review_margin:
        worse.append(f"challenger flags {chal.review_rate:.1%} for review vs champion's {champ.review_rate:.1%} "
                     f"(more by at least {review.low:.1%} > margin {policy.review_margin:.1%})")

    if not judged_in_shadow and min(chal.labelled, champ.labelled) < policy.min_labelled:
        pending.append(f"labelled texts: champion {champ.labelled}, challenger {chal.labelled} "
                       f"(need {policy.min_labelled} each)")
    elif not judged_in_shadow and accuracy.low <= -policy.accuracy_margin:
        pending.append(f"accuracy difference [{accuracy.low:+.3f}, {accuracy.high:+.3f}] does not yet exclude "
                       f"a loss of {policy.accuracy_margin:.3f}")
    if step_requests < policy.min_step_requests:
        pending.append(f"challenger requests at this step: {step_requests} (need {policy.min_step_requests})")
    if not (review.high < policy.review_margin):
        pending.append(f"review-rate difference [{review.low:+.3f}, {review.high:+.3f}] does not yet exclude "
                       f"a rise of {policy.review_margin:.3f}")

    if pending and step_requests >= policy.max_step_requests:
        worse.append(f"inconclusive after {step_requests} challenger requests at {state.share:.0%}: "
                     + "; ".join(pending))
    if worse:
        decision, reasons = "rollback", worse
    elif pending:
        decision, reasons = "hold", pending
    elif state.step + 1 == len(state.plan):
        decision, reasons = "promote", [f"challenger held its own at every step up to {state.share:.0%}"]
    else:
        decision, reasons = "advance", [f"not worse than champion beyond the margins at {state.share:.0%}"]
    return Assessment(decision, reasons, champ, chal, step_requests, accuracy, review, errors, state.share,
                      None, policy.alpha)


def _assess_shadow(log: TrafficStore, model: str, state: RolloutState, policy: RolloutPolicy, champ: ArmStats,
                   chal: ArmStats) -> Assessment:
    """In shadow: the paired verdict on the same texts, the challenger's failures, and the budget."""
    rows = log.pairs(model, state.challenger, state.started_at)
    pairs = [Pair(r["champion_label"], r["challenger_label"], r["truth"], r["review_reason"] is not None,
                  r["inclusion_p"] or 1.0, r["created_at"]) for r in rows]
    now = time.time()
    e = paired_estimate(pairs, now, policy.accuracy_margin, policy.alpha, policy.tau, policy.label_wait_s)
    accuracy = Difference(e.champion_accuracy, e.challenger_accuracy, e.pairs, e.pairs, e.low, e.high)
    test = dict(alpha=policy.alpha, tau=policy.tau)
    review = confidence_sequence(champ.review, champ.requests, chal.review, chal.requests, **test)
    errors = confidence_sequence(champ.failed, champ.requests + champ.failed, chal.failed, chal.requests + chal.failed,
                                 **test)
    reasons = list(e.reasons)
    if chal.requests + chal.failed >= policy.min_step_requests and chal.error_rate > policy.max_error_rate:
        decision, reasons = "rollback", [f"challenger failed on {chal.error_rate:.2%} of shadowed texts "
                                         f"> {policy.max_error_rate:.2%}"]
    elif e.decision == WORSE:
        decision = "rollback"
    elif e.decision == NON_INFERIOR:
        decision = "advance"
        reasons.append(f"shadow verdict reached from {e.labelled} labelled disagreements of {e.disagreements} "
                       f"(agreement on {1 - e.disagreement_rate:.1%} of {e.pairs} texts)")
    elif e.labelled >= policy.label_budget or now - state.started_at >= policy.max_shadow_s:
        decision = INCONCLUSIVE
        reasons = [f"inconclusive: keep the champion (no verdict after {e.labelled} labelled disagreements and "
                   f"{(now - state.started_at) / 3600:.1f} h; budget {policy.label_budget} labels, "
                   f"{policy.max_shadow_s / 3600:.0f} h)"] + reasons
    else:
        decision = "hold"
        if e.pending:
            reasons.append(f"{e.pending} asked texts wait for a reviewer (yanjin review queue)")
    return Assessment(decision, reasons, champ, chal, len(rows), accuracy, review, errors, 0.0, e, policy.alpha)


def _log_check(client, state: RolloutState, a: Assessment) -> None:
    from mlflow.entities import Metric

    ms = int(a.at * 1000)
    values = {"share": a.share, "requests_champion": a.champion.requests, "requests_challenger": a.challenger.requests,
              "labelled_champion": a.champion.labelled, "labelled_challenger": a.challenger.labelled,
              "accuracy_champion": a.champion.accuracy, "accuracy_challenger": a.challenger.accuracy,
              "accuracy_diff_low": a.accuracy.low, "accuracy_diff_high": a.accuracy.high,
              "review_rate_champion": a.champion.review_rate, "review_rate_challenger": a.challenger.review_rate,
              "error_rate_challenger": a.challenger.error_rate}
    if a.paired is not None:
        values |= {"shadow_pairs": a.paired.pairs, "shadow_disagreements": a.paired.disagreements,
                   "shadow_disagreements_labelled": a.paired.labelled,
                   "shadow_labels_asked": a.paired.asked, "shadow_labels_given": a.paired.labelled + a.paired.labelled_audit,
                   "shadow_diff": a.paired.estimate, "shadow_diff_low": a.paired.low, "shadow_diff_high": a.paired.high}
    client.log_batch(state.run_id, metrics=[Metric(k, float(v), ms, state.checks) for k, v in values.items()
                                            if not math.isnan(float(v))])


def apply(release: Release, model: str, state: RolloutState, a: Assessment, approvals: int = 0,
          report_dir: Path | None = None) -> RolloutState:
    """Carry out the decision under the model's lease, unless another controller moved the rollout meanwhile.
    A promotion that lacks its approvals is proposed and waits (the rollout keeps running at 100%)."""
    client = release.client
    with release.holding(model) as lease:
        fresh = _unchanged(release, model, state)
        _log_check(client, fresh, a)
        fresh = replace(fresh, checks=fresh.checks + 1)
        note = "; ".join(a.reasons)
        audit = None
        if a.decision == "advance" and fresh.phase == SHADOW_PHASE:
            now = time.time()
            fresh = replace(fresh, phase=CANARY_PHASE, step=0, step_started_at=now, canary_started_at=now,
                            shadow_verdict=NON_INFERIOR)
            audit = ("rollout-shadow-verdict", f"{NON_INFERIOR} in shadow; canary at {fresh.share:.0%}: {note}")
        elif a.decision == "advance":
            fresh = replace(fresh, step=fresh.step + 1, step_started_at=time.time())
            audit = ("rollout-advance", f"share {a.share:.0%} -> {fresh.share:.0%}: {note}")
        elif a.decision in ("rollback", INCONCLUSIVE):
            outcome = ROLLED_BACK if a.decision == "rollback" else INCONCLUSIVE
            fresh = replace(fresh, status=outcome, reason=note)
            with release.ledger.fenced(lease):   # only the lease's holder marks the version
                client.set_model_version_tag(model, fresh.challenger, ROLLOUT_OUTCOME, outcome)
                client.set_model_version_tag(model, fresh.challenger, ROLLOUT_REASON, note[:4000])
            audit = (f"rollout-{a.decision}", f"all traffic back to champion v{fresh.champion}: {note}")
        elif a.decision == "promote":
            proposer = fresh.started_by or release.principal
            missing = missing_approvals(release, model, fresh.challenger, approvals, proposer)
            if missing:
                release.ledger.propose(model, CHAMPION, fresh.challenger, proposer, f"A/B rollout finished: {note}")
                fresh = replace(fresh, reason=f"awaiting approval: {missing}")
            else:
                release.move(lease, model, CHAMPION, fresh.champion, fresh.challenger, "rollout-promote",
                             f"A/B rollout finished: {note}", principal=release.principal)
                fresh = replace(fresh, status=PROMOTED, reason=note)
        _write_state(release, lease, model, fresh, audit)
    if fresh.status != RUNNING:
        write_report(client, model, fresh, report_dir)
    return fresh


def abort(release: Release, model: str, reason: str, report_dir: Path | None = None) -> RolloutState:
    """Stop a running rollout by hand: all traffic back to the champion, aliases unchanged."""
    with release.holding(model) as lease:
        state = read_state(release, model)
        if state is None or state.status != RUNNING:
            raise RolloutError(f"{model}: no rollout is running")
        state = replace(state, status=ABORTED, reason=reason)
        _write_state(release, lease, model, state,
                     ("rollout-abort", f"all traffic back to champion v{state.champion}: {reason}"))
    write_report(release.client, model, state, report_dir)
    return state


def check(release: Release, log: TrafficStore, model: str, policy: RolloutPolicy, act: bool = True,
          approvals: int = 0, report_dir: Path | None = None) -> tuple[RolloutState, Assessment]:
    """One look at a running rollout: assess, and (act=True) advance, roll back or promote."""
    state = read_state(release, model)
    if state is None or state.status != RUNNING:
        raise RolloutError(f"{model}: no rollout is running" + (f" (last one: {state.status})" if state else ""))
    a = assess(log, model, state, policy)
    if act and a.decision != "hold":
        state = apply(release, model, state, a, approvals, report_dir)
    elif act:  # hold: count the check on the state as it is now, not as it was read before the lease
        with release.holding(model) as lease:
            fresh = _unchanged(release, model, state)
            _log_check(release.client, fresh, a)
            state = replace(fresh, checks=fresh.checks + 1)
            _write_state(release, lease, model, state)
    return state, a


def _unchanged(release: Release, model: str, state: RolloutState) -> RolloutState:
    """The rollout as stored now (call under the model's lease), if it is still the one that was assessed."""
    fresh = read_state(release, model)
    if fresh is None or fresh.run_id != state.run_id or fresh.step != state.step or fresh.status != RUNNING \
            or fresh.phase != state.phase:
        raise RolloutError(f"{model}: the rollout changed while it was being assessed (another controller?); "
                           f"nothing was written; check again")
    return fresh


def write_report(client, model: str, state: RolloutState, out_dir: Path | None = None) -> Path:
    """report.md + arms.png from the run's metric history; logged to the run, which then ends."""
    import tempfile

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("share", "accuracy_champion", "accuracy_challenger", "accuracy_diff_low", "accuracy_diff_high",
            "labelled_champion", "labelled_challenger", "review_rate_champion", "review_rate_challenger")
    series = {k: {m.step: m.value for m in client.get_metric_history(state.run_id, k)} for k in keys}
    steps = sorted(series["share"])
    out = Path(out_dir or tempfile.mkdtemp(prefix="rollout-"))
    out.mkdir(parents=True, exist_ok=True)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for arm, style in ((CHAMPION, "-o"), (CHALLENGER, "-s")):
        acc = series[f"accuracy_{arm}"]
        top.plot([s for s in steps if s in acc], [acc[s] for s in steps if s in acc], style, label=f"{arm} accuracy")
    top.set_ylabel("accuracy (labelled)")
    top.legend()
    top.set_title(f"{model}: v{state.champion} (champion) vs v{state.challenger} (challenger) - {state.status}")
    bottom.step(steps, [series["share"][s] for s in steps], where="post", label="challenger share")
    bottom.set_ylabel("challenger share")
    bottom.set_xlabel("check")
    fig.tight_layout()
    fig.savefig(out / "arms.png", dpi=110)
    plt.close(fig)

    def cell(key: str, s: int, fmt: str) -> str:
        return format(series[key][s], fmt) if s in series[key] else "-"

    lines = [f"# Rollout of {model} v{state.challenger} against champion v{state.champion}", "",
             f"Outcome: **{state.status}** - {state.reason}", "",
             f"Plan: {', '.join(f'{p:.0%}' for p in state.plan)}; started "
             f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(state.started_at))}Z; MLflow run {state.run_id}.", "",
             "| check | share | labelled (champion / challenger) | accuracy champion | accuracy challenger "
             "| difference, always-valid 95% | review rate champion / challenger |",
             "|---|---|---|---|---|---|---|"]
    for s in steps:
        lines.append(f"| {s} | {cell('share', s, '.0%')} | {cell('labelled_champion', s, '.0f')} / "
                     f"{cell('labelled_challenger', s, '.0f')} | {cell('accuracy_champion', s, '.3f')} | "
                     f"{cell('accuracy_challenger', s, '.3f')} | [{cell('accuracy_diff_low', s, '+.3f')}, "
                     f"{cell('accuracy_diff_high', s, '+.3f')}] | {cell('review_rate_champion', s, '.1%')} / "
                     f"{cell('review_rate_challenger', s, '.1%')} |")
    lines += ["", "![arms over time](arms.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    client.log_artifact(state.run_id, str(out / "report.md"), "rollout")
    client.log_artifact(state.run_id, str(out / "arms.png"), "rollout")
    client.set_terminated(state.run_id, "FINISHED")
    return out / "report.md"
