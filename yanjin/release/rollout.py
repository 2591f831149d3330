"""A/B rollout decided by measured outcomes: step the challenger's traffic up a plan, roll it back
automatically when it is worse, promote it when it has held its own at 100%.

State lives in the registry, so every serving replica and every controller sees the same thing:
  - `@challenger` alias: the version under test;
  - tag `yanjin.challenger_share`: its traffic share, which serving polls with the aliases;
  - tag `yanjin.rollout`: the plan, the current step and the outcome (JSON);
  - an MLflow run in experiment `<model>-rollouts`: one metric point per check, and the report.
Each check reads the prediction log (labelled accuracy, review rate, failures, latency per arm)
since the rollout started and compares the arms with an always-valid test (release.sequential),
so checking after every batch of traffic does not inflate false alarms.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from mlflow import MlflowClient

from ..registry import (CHALLENGER, CHAMPION, ROLLED_BACK, ROLLOUT_OUTCOME, ROLLOUT_REASON, ROLLOUT_RUNNING, ROLLOUT_TAG,
                        SHARE_TAG, alias_version, confirm_lock, rollouts_experiment, set_model_tag)
from ..serving.predlog import PredictionLog
from .policy import RolloutPolicy
from .promotion import eligible, model_lock, record, set_alias_checked
from .sequential import Difference, confidence_sequence

STATE_TAG = ROLLOUT_TAG
MIN_FOR_VERDICT = 30   # labelled texts per arm before accuracy may condemn: the test is a normal approximation
RUNNING, PROMOTED, ABORTED = ROLLOUT_RUNNING, "promoted", "aborted"   # and ROLLED_BACK, the registry's tag value


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

    @property
    def share(self) -> float:
        return self.plan[self.step]


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
    at: float = field(default_factory=time.time)


def read_state(client: MlflowClient, model: str) -> RolloutState | None:
    raw = client.get_registered_model(model).tags.get(STATE_TAG)
    return RolloutState(**json.loads(raw)) if raw else None


def _write_state(client: MlflowClient, model: str, state: RolloutState) -> None:
    set_model_tag(client, model, STATE_TAG, json.dumps(asdict(state)))
    share = state.share if state.status == RUNNING else 0.0
    set_model_tag(client, model, SHARE_TAG, f"{share:g}")


def start(client: MlflowClient, model: str, challenger: str, policy: RolloutPolicy, reason: str,
          force: bool = False, who: str | None = None) -> RolloutState:
    """Point @challenger at `challenger` and give it the plan's first share of traffic. Everything it
    reads (a running rollout, the champion) is read under the model lock, so two starts cannot both run."""
    plan = policy.steps()
    with model_lock(client, model):
        current = read_state(client, model)
        if current is not None and current.status == RUNNING:
            raise RolloutError(f"{model}: a rollout of v{current.challenger} is already running "
                               f"(step {current.step + 1}/{len(current.plan)}); finish or roll it back first")
        champion = alias_version(client, model, CHAMPION)
        if champion is None:
            raise RolloutError(f"{model} has no @champion to compare against")
        if champion == challenger:
            raise RolloutError(f"{model} v{challenger} is already the champion")
        forced = eligible(client, model, challenger, force, "roll out")
        experiment = rollouts_experiment(model)
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
        run = client.create_run(exp_id, run_name=f"v{champion}-vs-v{challenger}",
                                tags={"model": model, CHAMPION: champion, CHALLENGER: challenger})
        for key, value in asdict(policy).items():
            client.log_param(run.info.run_id, key, value)
        now = time.time()
        state = RolloutState(champion, challenger, plan, 0, now, now, run.info.run_id)
        set_alias_checked(client, model, CHALLENGER, challenger, alias_version(client, model, CHALLENGER),
                          "rollout-start", f"{reason} (plan {policy.plan})", forced, who)
        _write_state(client, model, state)
    return state  # the run stays open until the rollout ends


def _arm(rows: list[dict], failed: int, version: str) -> ArmStats:
    import numpy as np

    labelled = [r for r in rows if r["true_label"] is not None]
    latencies = [r["latency_ms"] for r in rows]
    return ArmStats(version, len(rows), len(labelled), sum(r["label"] == r["true_label"] for r in labelled),
                    sum(bool(r["needs_review"]) for r in rows), failed,
                    float(np.percentile(latencies, 95)) if latencies else math.nan)


def assess(log: PredictionLog, model: str, state: RolloutState, policy: RolloutPolicy) -> Assessment:
    """Compare the arms on everything logged since the rollout began; decide what to do next."""
    rows = log.outcomes(model, state.started_at, trust_feedback=policy.trust_client_feedback)
    failed = log.failed_items(model, state.started_at)
    mine = {arm: [r for r in rows if r["arm"] == arm and r["version"] == version]
            for arm, version in ((CHAMPION, state.champion), (CHALLENGER, state.challenger))}
    champ = _arm(mine[CHAMPION], failed.get((CHAMPION, state.champion), 0), state.champion)
    chal = _arm(mine[CHALLENGER], failed.get((CHALLENGER, state.challenger), 0), state.challenger)
    step_requests = sum(r["created_at"] >= state.step_started_at for r in mine[CHALLENGER])
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
    if min(chal.labelled, champ.labelled) >= MIN_FOR_VERDICT and accuracy.high < 0:
        worse.append(f"challenger accuracy {chal.accuracy:.3f} is significantly below champion's "
                     f"{champ.accuracy:.3f} (difference within [{accuracy.low:+.3f}, {accuracy.high:+.3f}])")
    if min(chal.requests, champ.requests) >= MIN_FOR_VERDICT and review.low > policy.review_margin:
        worse.append(f"challenger flags {chal.review_rate:.1%} for review vs champion's {champ.review_rate:.1%} "
                     f"(more by at least {review.low:.1%} > margin {policy.review_margin:.1%})")

    if min(chal.labelled, champ.labelled) < policy.min_labelled:
        pending.append(f"labelled texts: champion {champ.labelled}, challenger {chal.labelled} "
                       f"(need {policy.min_labelled} each)")
    elif accuracy.low <= -policy.accuracy_margin:
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
    return Assessment(decision, reasons, champ, chal, step_requests, accuracy, review, errors, state.share)


def _log_check(client: MlflowClient, state: RolloutState, a: Assessment) -> None:
    from mlflow.entities import Metric

    ms = int(a.at * 1000)
    values = {"share": a.share, "requests_champion": a.champion.requests, "requests_challenger": a.challenger.requests,
              "labelled_champion": a.champion.labelled, "labelled_challenger": a.challenger.labelled,
              "accuracy_champion": a.champion.accuracy, "accuracy_challenger": a.challenger.accuracy,
              "accuracy_diff_low": a.accuracy.low, "accuracy_diff_high": a.accuracy.high,
              "review_rate_champion": a.champion.review_rate, "review_rate_challenger": a.challenger.review_rate,
              "error_rate_challenger": a.challenger.error_rate}
    client.log_batch(state.run_id, metrics=[Metric(k, float(v), ms, state.checks) for k, v in values.items()
                                            if not math.isnan(float(v))])


def apply(client: MlflowClient, model: str, state: RolloutState, a: Assessment, who: str | None = None,
          report_dir: Path | None = None) -> RolloutState:
    """Carry out the decision under the model lock, unless another controller moved the rollout meanwhile."""
    with model_lock(client, model):
        fresh = _unchanged(client, model, state)
        _log_check(client, fresh, a)
        fresh = replace(fresh, checks=fresh.checks + 1)
        note = "; ".join(a.reasons)
        if a.decision == "advance":
            fresh = replace(fresh, step=fresh.step + 1, step_started_at=time.time())
            record(client, model, "rollout-advance", CHALLENGER, fresh.challenger, fresh.challenger,
                   f"share {a.share:.0%} -> {fresh.share:.0%}: {note}", who=who)
        elif a.decision == "rollback":
            fresh = replace(fresh, status=ROLLED_BACK, reason=note)
            confirm_lock(client, model)
            client.set_model_version_tag(model, fresh.challenger, ROLLOUT_OUTCOME, ROLLED_BACK)
            client.set_model_version_tag(model, fresh.challenger, ROLLOUT_REASON, note[:4000])
            record(client, model, "rollout-rollback", CHALLENGER, fresh.challenger, fresh.challenger,
                   f"all traffic back to champion v{fresh.champion}: {note}", who=who)
        elif a.decision == "promote":
            set_alias_checked(client, model, CHAMPION, fresh.challenger, fresh.champion, "rollout-promote",
                              f"A/B rollout finished: {note}", who=who)
            fresh = replace(fresh, status=PROMOTED, reason=note)
        _write_state(client, model, fresh)
    if fresh.status != RUNNING:
        write_report(client, model, fresh, report_dir)
    return fresh


def abort(client: MlflowClient, model: str, reason: str, who: str | None = None,
          report_dir: Path | None = None) -> RolloutState:
    """Stop a running rollout by hand: all traffic back to the champion, aliases unchanged."""
    with model_lock(client, model):
        state = read_state(client, model)
        if state is None or state.status != RUNNING:
            raise RolloutError(f"{model}: no rollout is running")
        state = replace(state, status=ABORTED, reason=reason)
        record(client, model, "rollout-abort", CHALLENGER, state.challenger, state.challenger,
               f"all traffic back to champion v{state.champion}: {reason}", who=who)
        _write_state(client, model, state)
    write_report(client, model, state, report_dir)
    return state


def check(client: MlflowClient, log: PredictionLog, model: str, policy: RolloutPolicy, act: bool = True,
          who: str | None = None, report_dir: Path | None = None) -> tuple[RolloutState, Assessment]:
    """One look at a running rollout: assess, and (act=True) advance, roll back or promote."""
    state = read_state(client, model)
    if state is None or state.status != RUNNING:
        raise RolloutError(f"{model}: no rollout is running" + (f" (last one: {state.status})" if state else ""))
    a = assess(log, model, state, policy)
    if act and a.decision != "hold":
        state = apply(client, model, state, a, who, report_dir)
    elif act:  # hold: count the check on the state as it is now, not as it was read before the lock
        with model_lock(client, model):
            fresh = _unchanged(client, model, state)
            _log_check(client, fresh, a)
            state = replace(fresh, checks=fresh.checks + 1)
            set_model_tag(client, model, STATE_TAG, json.dumps(asdict(state)))
    return state, a


def _unchanged(client: MlflowClient, model: str, state: RolloutState) -> RolloutState:
    """The rollout as stored now (call under the model lock), if it is still the one that was assessed."""
    fresh = read_state(client, model)
    if fresh is None or fresh.run_id != state.run_id or fresh.step != state.step or fresh.status != RUNNING:
        raise RolloutError(f"{model}: the rollout changed while it was being assessed (another controller?); "
                           f"nothing was written; check again")
    return fresh


def write_report(client: MlflowClient, model: str, state: RolloutState, out_dir: Path | None = None) -> Path:
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
