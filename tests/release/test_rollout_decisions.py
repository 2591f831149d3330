"""The rollout controller's verdicts, computed from a real prediction log (SQLite) and a real registry."""
import time
import uuid

import pytest
from mlflow import MlflowClient

from yanjin.release.policy import RolloutPolicy
from yanjin.registry import alias_version
from yanjin.release.promotion import CHAMPION, PromotionRefused, history
from yanjin.release.rollout import RolloutError, abort, assess, check, read_state, start
from yanjin.serving.predlog import PredictionLog
from yanjin.traffic.store import Prediction
from yanjin.registry import SHARE_TAG

from .conftest import release_for

MODEL = "demo-v1"
POLICY = RolloutPolicy(plan="10,50,100", shadow_share=0, min_labelled=40, min_step_requests=40, accuracy_margin=0.05,
                       review_margin=0.1)


@pytest.fixture()
def setup(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model(MODEL)
    for v in range(1, 4):
        client.create_model_version(MODEL, str(tmp_path), tags={"gate": "passed" if v < 3 else "reject"})
    client.set_registered_model_alias(MODEL, CHAMPION, "1")   # written before the ledger: migrated on first use
    log = PredictionLog(tmp_path / "predictions.db")
    yield release_for(client, tmp_path / "release.db"), log
    log.close()


def traffic(log: PredictionLog, arm: str, version: str, n: int, accuracy: float, review: float = 0.2,
            latency_ms: float = 2.0, model: str = MODEL) -> None:
    """n labelled predictions: the first accuracy*n right, the first review*n flagged."""
    now = time.time()
    rows = [Prediction(str(uuid.uuid4()), now, f"text {i}", "right" if i < accuracy * n else "wrong", 0.9,
                       model, version, "v1", arm, latency_ms, i < review * n) for i in range(n)]
    log.append(rows)
    for r in rows:
        log.review(r.id, "right", "reviewer")


def test_start_needs_a_gated_version_and_moves_only_the_challenger(setup):
    release, log = setup
    client = release.client
    with pytest.raises(PromotionRefused, match="gate"):
        start(release, MODEL, "3", POLICY, "try")
    with pytest.raises(RolloutError, match="already the champion"):
        start(release, MODEL, "1", POLICY, "try")
    state = start(release, MODEL, "2", POLICY, "try")
    assert (state.champion, state.challenger, state.share) == ("1", "2", 0.1)
    assert alias_version(client, MODEL, "challenger") == "2" and alias_version(client, MODEL, CHAMPION) == "1"
    assert client.get_registered_model(MODEL).tags[SHARE_TAG] == "0.1"
    with pytest.raises(RolloutError, match="already running"):
        start(release, MODEL, "2", POLICY, "again")


def test_too_little_evidence_holds(setup):
    release, log = setup
    client = release.client
    state = start(release, MODEL, "2", POLICY, "try")
    traffic(log, "champion", "1", 100, 0.9)
    traffic(log, "challenger", "2", 10, 0.0)
    a = assess(log, MODEL, state, POLICY)
    assert a.decision == "hold" and "need 40 each" in a.reasons[0]


def test_a_worse_challenger_is_rolled_back_and_marked(setup):
    release, log = setup
    client = release.client
    start(release, MODEL, "2", POLICY, "try")
    traffic(log, "champion", "1", 200, 0.9)
    traffic(log, "challenger", "2", 60, 0.5)
    state, a = check(release, log, MODEL, POLICY)
    assert a.decision == "rollback" and "significantly below" in a.reasons[0]
    assert state.status == "rolled_back" and client.get_registered_model(MODEL).tags[SHARE_TAG] == "0"
    assert alias_version(client, MODEL, CHAMPION) == "1"
    assert client.get_model_version(MODEL, "2").tags["rollout_outcome"] == "rolled_back"
    assert history(release, MODEL)[-1].action == "rollout-rollback"
    with pytest.raises(PromotionRefused, match="rolled back"):   # promoting it now needs --force
        from yanjin.release.promotion import promote
        promote(release, MODEL, "2", "anyway", expected="1")
    report = client.download_artifacts(state.run_id, "rollout/report.md")
    assert "rolled_back" in open(report).read()


def test_failures_and_slowness_roll_back(setup):
    release, log = setup
    client = release.client
    state = start(release, MODEL, "2", POLICY, "try")
    traffic(log, "champion", "1", 200, 0.9)
    traffic(log, "challenger", "2", 60, 0.9)
    log.failure(MODEL, "2", "challenger", 5, "RuntimeError: boom")
    a = assess(log, MODEL, state, POLICY)
    assert a.decision == "rollback" and any("error rate" in r or "fails" in r for r in a.reasons)
    abort(release, MODEL, "next case")

    state = start(release, MODEL, "2", POLICY, "try")
    traffic(log, "champion", "1", 100, 0.9, latency_ms=2.0)
    traffic(log, "challenger", "2", 60, 0.9, latency_ms=9.0)
    a = assess(log, MODEL, state, POLICY)
    assert a.decision == "rollback" and "latency" in a.reasons[0]


def test_a_good_challenger_walks_the_plan_and_is_promoted(setup):
    release, log = setup
    client = release.client
    start(release, MODEL, "2", POLICY, "try")
    decisions = []
    for _ in range(30):
        traffic(log, "champion", "1", 100, 0.9)
        traffic(log, "challenger", "2", 50, 0.96)
        state, a = check(release, log, MODEL, POLICY)
        decisions.append(a.decision)
        if state.status != "running":
            break
    assert [d for d in decisions if d != "hold"] == ["advance", "advance", "promote"], decisions
    assert decisions[0] == "hold"   # 50 labelled texts cannot yet rule out a 5-point loss
    assert alias_version(client, MODEL, CHAMPION) == "2"
    assert [e.action for e in history(release, MODEL)] == ["migrate", "rollout-start", "rollout-advance",
                                                          "rollout-advance", "rollout-promote"]
    assert read_state(release, MODEL).status == "promoted"


def test_cli_start_status_abort(setup, tmp_path):
    from typer.testing import CliRunner

    from yanjin.cli import app

    release, log = setup
    client = release.client
    uri = client.tracking_uri
    run = lambda *a: CliRunner().invoke(app, list(a) + ["--tracking-uri", uri], env={"COLUMNS": "300"})  # noqa: E731
    one_step = run("rollout", "start", MODEL, "--challenger", "3", "--plan", "100", "--profile", "tiny")
    assert "expected str" not in one_step.output and "gate" in one_step.output   # a one-step plan parses (v3 is gated)
    started = run("rollout", "start", MODEL, "--challenger", "2", "--plan", "20,100", "--profile", "tiny")
    assert started.exit_code == 0 and "shadow first, then plan 20%, 100%; now shadow (50% of texts)" in started.output, \
        started.output
    traffic(log, "champion", "1", 50, 0.9)
    status = run("rollout", "status", MODEL, "--profile", "tiny", "--prediction-log", str(tmp_path / "predictions.db"))
    assert status.exit_code == 0 and "decision: hold" in status.output and "requests 50" in status.output, status.output
    assert read_state(release, MODEL).checks == 0                      # without --apply nothing is recorded
    aborted = run("rollout", "abort", MODEL, "--reason", "change of plan")
    assert aborted.exit_code == 0 and client.get_registered_model(MODEL).tags[SHARE_TAG] == "0"
    again = run("rollout", "status", MODEL, "--profile", "tiny", "--prediction-log", str(tmp_path / "predictions.db"))
    assert again.exit_code == 1 and "no rollout is running (last one: aborted)" in again.output


def test_a_hold_never_writes_back_a_rollout_another_controller_moved(setup):
    """Two controllers (two cron pods): A reads the rollout and holds; B advances it meanwhile. Before,
    A's hold wrote its stale copy back (step 0 again while the share tag said 50%)."""
    import threading
    from dataclasses import replace

    from yanjin.release.rollout import _write_state

    from .conftest import as_principal

    release, log = setup
    client = release.client
    state = start(release, MODEL, "2", POLICY, "try")
    traffic(log, "champion", "1", 100, 0.9)
    traffic(log, "challenger", "2", 10, 0.9)  # too little evidence: A's verdict is hold
    outcome = {}

    def controller_a() -> None:
        try:
            outcome["a"] = check(release, log, MODEL, POLICY)
        except RolloutError as e:
            outcome["a"] = e

    b = as_principal(release, "controller-b")
    with b.holding(MODEL) as lease:  # B holds the lease while A reads, assesses and waits for it
        a = threading.Thread(target=controller_a)
        a.start()
        time.sleep(1.5)
        _write_state(b, lease, MODEL, replace(state, step=1, step_started_at=time.time()))  # B advanced to 50%
    a.join()
    assert isinstance(outcome["a"], RolloutError) and "changed while it was being assessed" in str(outcome["a"])
    now = read_state(release, MODEL)
    assert (now.step, now.share, client.get_registered_model(MODEL).tags[SHARE_TAG]) == (1, 0.5, "0.5")


def test_a_promotion_waits_for_its_approval_then_the_controller_completes_it(setup):
    """release.approvals = 1: the rollout reaches its verdict, proposes the promotion in its starter's name
    and keeps the champion; the starter cannot approve; another person can, and the controller promotes."""
    from yanjin.release.controller import tick
    from yanjin.release.policy import ReleasePolicy
    from yanjin.release.promotion import approve

    from .conftest import as_principal

    release, log = setup
    anna, ben = as_principal(release, "anna"), as_principal(release, "ben")
    anna.ledger.record_version(MODEL, "2", "carl")          # carl trained v2
    start(anna, MODEL, "2", replace_plan(POLICY, "100"), "try")
    traffic(log, "champion", "1", 800, 0.9)
    traffic(log, "challenger", "2", 800, 0.97)
    four_eyes = ReleasePolicy(approvals=1)
    done = tick(release, log, replace_plan(POLICY, "100"), four_eyes, [MODEL])
    assert alias_version(release.client, MODEL, CHAMPION) == "1"
    assert read_state(release, MODEL).reason.startswith("awaiting approval") and done.waiting, done
    for who in (anna, as_principal(release, "carl")):        # the proposer and the trainer may not approve
        with pytest.raises(PromotionRefused, match="someone else"):
            approve(who, MODEL, "2", "looks good")
    approve(ben, MODEL, "2", "CAB-123 approved")
    done = tick(release, log, replace_plan(POLICY, "100"), four_eyes, [MODEL])
    assert alias_version(release.client, MODEL, CHAMPION) == "2", done
    assert read_state(release, MODEL).status == "promoted"
    assert [a["principal"] for a in release.ledger.approvals_of(MODEL, "2")] == ["ben"]


def replace_plan(policy: RolloutPolicy, plan: str) -> RolloutPolicy:
    from dataclasses import replace

    return replace(policy, plan=plan)


def test_one_controller_leads_another_stands_by_and_takes_over_when_it_dies(setup):
    """Two replicas of `yanjin controller run`: the second stands by while the first's leadership lease is
    renewed, and takes over (audited) once it expires, as after a crash."""
    from yanjin.release.controller import _lead

    from .conftest import as_principal

    release, _ = setup
    a, b = as_principal(release, "controller-a"), as_principal(release, "controller-b")
    leader = _lead(a, None, ttl_s=1.0)
    assert leader is not None and _lead(b, None, ttl_s=1.0) is None
    assert _lead(a, leader, ttl_s=1.0) == leader                  # renewed, not taken again
    time.sleep(1.5)                                               # a crashed: no renewal
    taken = _lead(b, None, ttl_s=1.0)
    assert taken is not None and taken.epoch == leader.epoch + 1 and taken.broke.startswith("controller-a/")
    assert [e.action for e in release.ledger.history("__controller__")] == ["controller-takeover"]


def test_a_controller_stopped_with_sigterm_releases_its_leadership(setup, tmp_path):
    """As a rolling update or `docker stop` ends it: the lease is released at once, not left to expire."""
    import signal
    import subprocess
    import sys

    from yanjin.registry.ledger import CONTROLLER_LEASE, AliasConflict

    release, _ = setup
    uri = release.client.tracking_uri
    env = {k: v for k, v in __import__("os").environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen([sys.executable, "-m", "yanjin.cli", "controller", "run", "--interval", "1", "--profile",
                             "tiny", "--tracking-uri", uri, "--state-dir", str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    def held() -> bool:   # another replica asks for the lead: refused while someone holds it
        try:
            lease = release.ledger.acquire(CONTROLLER_LEASE, "probe", ttl_s=60, wait_s=0)
        except AliasConflict:
            return True
        release.ledger.release(lease)
        return False

    try:
        deadline = time.time() + 90
        while time.time() < deadline and not held():
            time.sleep(0.5)
        assert held(), "the controller never took the lead"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.stdout.read()
    finally:
        proc.kill()
    assert not held()


# -- shadow first ---------------------------------------------------------------------------------------------
SHADOWED = RolloutPolicy(plan="50,100", shadow_share=0.5, min_step_requests=40, accuracy_margin=0.02, audit_p=0.02,
                         label_budget=400)


def shadowed(log: PredictionLog, n: int, lose: float, win: float, seed: int, review: bool = True,
             version: str = "2") -> tuple[int, int]:
    """n texts answered by champion v1 and scored in shadow by `version`, sampled for review as serving does;
    the champion alone is right on `lose` of them, the challenger alone on `win`. A reviewer labels what is
    asked. Returns (texts asked, texts labelled)."""
    import random

    from yanjin.traffic.store import SHADOW
    from yanjin.traffic.sampling import review_selection

    rng, now, rows, asked = random.Random(seed), time.time(), [], []
    for i in range(n):
        u = rng.random()
        champion, challenger = ("right", "wrong") if u < lose else ("wrong", "right") if u < lose + win else \
            ("right", "right")
        reason, p = review_selection(champion, challenger, False, SHADOWED.disagreement_p, SHADOWED.audit_p, rng.random())
        pid = str(uuid.uuid4())
        rows.append(Prediction(pid, now, f"text {i}", champion, 0.9, MODEL, "1", "v1", "champion", 2.0, False,
                               review_reason=reason, inclusion_p=p))
        rows.append(Prediction(str(uuid.uuid4()), now, f"text {i}", challenger, 0.9, MODEL, version, "v1", SHADOW, 2.0,
                               False, pair_id=pid))
        if reason:
            asked.append(pid)
    log.append(rows)
    if review:
        for pid in asked:
            log.review(pid, "right", "reviewer")
    return len(asked), len(asked) if review else 0


def test_shadow_comes_first_and_serving_is_told_what_to_sample(setup):
    import json

    from yanjin.registry import SHADOW_TAG

    release, log = setup
    state = start(release, MODEL, "2", SHADOWED, "retrained")
    assert (state.phase, state.share) == ("shadow", 0.0)
    tags = release.client.get_registered_model(MODEL).tags
    assert tags[SHARE_TAG] == "0" and json.loads(tags[SHADOW_TAG]) == {"share": 0.5, "disagreement_p": 1.0,
                                                                         "audit_p": 0.02}
    asked, _ = shadowed(log, 300, 0.04, 0.04, seed=1, review=False)
    queue = log.review_queue(limit=500)
    assert len(queue) == asked and {r["arm"] for r in queue} == {"champion"}
    reasons = [r["review_reason"] for r in queue]
    assert reasons == sorted(reasons, key=["disagreement", "low_confidence", "audit"].index)  # what decides, first
    a = assess(log, MODEL, state, SHADOWED)
    assert a.decision == "hold" and a.paired.pending == asked and a.paired.pairs < 300   # waits for the reviewers


def test_an_equally_good_retrain_passes_shadow_on_few_labels_then_the_canary_promotes_it(setup):
    release, log = setup
    start(release, MODEL, "2", SHADOWED, "retrained")
    given, decisions = 0, []
    for batch in range(40):
        given += shadowed(log, 500, 0.035, 0.035, seed=batch)[1]
        state, a = check(release, log, MODEL, SHADOWED)
        decisions.append(a.decision)
        if state.phase != "shadow":
            break
    assert state.phase == "canary" and state.share == 0.5 and state.shadow_verdict == "non-inferior", a.reasons
    assert given < 500, given        # an unpaired A/B needs thousands per arm for a 2-point margin
    for _ in range(30):   # the canary is judged on failures, latency and review rate: no accuracy labels needed
        traffic(log, "champion", "1", 200, 0.9)
        traffic(log, "challenger", "2", 200, 0.9)
        state, a = check(release, log, MODEL, SHADOWED)
        if state.status != "running":
            break
    assert state.status == "promoted", a.reasons
    actions = [e.action for e in history(release, MODEL)]
    assert "rollout-shadow-verdict" in actions and actions[-1] == "rollout-promote"


def test_a_worse_retrain_is_rolled_back_in_shadow_and_never_sees_traffic(setup):
    release, log = setup
    client = release.client
    start(release, MODEL, "2", SHADOWED, "retrained")
    for batch in range(20):
        shadowed(log, 300, 0.08, 0.02, seed=100 + batch)
        state, a = check(release, log, MODEL, SHADOWED)
        if state.status != "running":
            break
    assert state.status == "rolled_back" and "less accurate" in state.reason
    assert client.get_registered_model(MODEL).tags[SHARE_TAG] == "0" and alias_version(client, MODEL, CHAMPION) == "1"


def test_no_verdict_within_the_label_budget_ends_inconclusive_keeping_the_champion(setup):
    release, log = setup
    client = release.client
    from dataclasses import replace

    policy = replace(SHADOWED, label_budget=60)
    start(release, MODEL, "2", policy, "retrained")
    for batch in range(40):   # a point worse: 60 labels can neither exclude a 2-point loss nor prove it below 0
        shadowed(log, 200, 0.045, 0.035, seed=200 + batch)
        state, a = check(release, log, MODEL, policy)
        if state.status != "running":
            break
    assert state.status == "inconclusive" and state.reason.startswith("inconclusive: keep the champion"), a.reasons
    assert client.get_model_version(MODEL, "2").tags["rollout_outcome"] == "inconclusive"
    assert alias_version(client, MODEL, CHAMPION) == "1"
