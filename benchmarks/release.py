"""Release control against a real PostgreSQL ledger and a real `mlflow server` with basic auth and several
users, each fault repeated over many trials; figures merged into benchmarks/results/faults.json.

Users: `admin` (MLflow admin), `release` (the release principal: EDIT on the models, the ledger's release
role), `serving` (read-only in MLflow, no ledger credentials), `anna`, `ben`, `carl` (people).

- lock_squat_blocks: `serving` creates the old lock model `yanjin-lock--<model>` in MLflow (any user may),
  then a promotion runs: promotions it blocked;
- stale_lock_double_holders / stale_lock_unbreakable: a crashed holder's lease, six other principals waiting
  at once, each holding longer than the TTL: trials with two inside at once / with a waiter never let in;
- fenced_late_writes_landed: a holder stalls past its lease (taken over, or only expired), then writes;
- audit_tampering_undetected: as the database owner (guard trigger disabled) an entry is edited, deleted,
  two are swapped, or the newest is deleted, in a copy of the ledger: changes `verify` (and the MLflow
  anchor) missed;
- unapproved_promotions / self_approvals_accepted: promotions to champion without an approval from someone
  other than the proposer and trainer (directly and through the controller), and approvals by either;
- steered_arm_share: 200 keys chosen offline to land on the challenger under the old unsalted sha256, their
  share on the challenger under the server's HMAC (configured share 0.1), per trial a new secret;
- concurrent_rollout_inconsistencies: two controllers (other principals) tick the same rollout at once:
  state, share tag and audited advances disagree;
- ui_alias_moves_unreported: `admin` moves @champion in MLflow (as the UI does): moves drift() missed.

    python benchmarks/release.py [--trials 20] [--parts squat,stale,fenced,audit,approvals,arms,controllers,ui]

Each part merges its keys into faults.json as soon as it ends.
"""
import argparse
import hashlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlflow import MlflowClient  # noqa: E402
from mlflow.server import get_app_client  # noqa: E402

from tests.integration import stack  # noqa: E402
from tests.release.test_promotion import most_holders_of_a_stale_lease  # noqa: E402
from tests.release.test_rollout_decisions import traffic  # noqa: E402
from yanjin import registry as R  # noqa: E402
from yanjin.registry.ledger import AliasConflict, Ledger  # noqa: E402
from yanjin.registry.mirror import Release, anchor_problems  # noqa: E402
from yanjin.release.controller import tick  # noqa: E402
from yanjin.release.policy import ReleasePolicy, RolloutPolicy  # noqa: E402
from yanjin.release.promotion import PromotionRefused, approve, promote  # noqa: E402
from yanjin.release.rollout import read_state, start  # noqa: E402
from yanjin.serving.predlog import PredictionLog  # noqa: E402
from yanjin.serving.routing import CHALLENGER, assign_arm  # noqa: E402

USERS = ("release", "serving", "anna", "ben", "carl")
PARTS = ("squat", "stale", "fenced", "audit", "approvals", "arms", "controllers", "ui")
RESULT = ROOT / "benchmarks" / "results" / "faults.json"


def merge(figures: dict) -> None:
    """Into faults.json at once, so a part that finished is kept whatever happens to the next."""
    RESULT.write_text(json.dumps((json.loads(RESULT.read_text()) if RESULT.is_file() else {}) | figures, indent=2) + "\n")
    print(json.dumps(figures), flush=True)
PASSWORD = "pw-" + secrets.token_hex(6)


class Registry:
    """MLflow's REST client reads credentials from the environment per request: one lock keeps each call
    under its own user's credentials."""

    def __init__(self, url: str, admin_password: str) -> None:
        self.url, self.admin_password = url, admin_password
        self.guard = threading.RLock()

    def call(self, user: str, fn):
        with self.guard:
            os.environ["MLFLOW_TRACKING_USERNAME"] = user
            os.environ["MLFLOW_TRACKING_PASSWORD"] = self.admin_password if user == "admin" else PASSWORD
            return fn(MlflowClient(self.url))


class AsUser:
    """An MlflowClient whose every call runs under one user's credentials (through Registry.call)."""

    def __init__(self, registry: Registry, user: str) -> None:
        self.registry, self.user = registry, user

    def __getattr__(self, name):
        return lambda *a, **k: self.registry.call(self.user, lambda c: getattr(c, name)(*a, **k))


def new_model(reg: Registry, auth, versions: int = 4) -> str:
    model = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AsUser(reg, "admin")
    admin.create_registered_model(model)
    exp = admin.create_experiment(model)
    run = admin.create_run(exp)
    for v in range(versions):
        admin.create_model_version(model, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id,
                                   tags=R.VersionTags(gate=R.GATE_PASSED).to_tags(), await_creation_for=0)
    admin.set_registered_model_alias(model, R.CHAMPION, "1")          # a registry from before the ledger
    reg.call("admin", lambda _: auth.grant_user_permission("release", "registered_model", model, "EDIT"))
    return model


def release_as(reg: Registry, ledger: Ledger, principal: str, ttl: float = 120.0) -> Release:
    return Release(AsUser(reg, "release"), ledger, principal, ttl)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--parts", default=",".join(PARTS), help="which scenarios, comma-separated")
    args = ap.parse_args()
    n = args.trials
    parts = args.parts.split(",")
    out: dict = {"release_trials": n, "release_users": ["admin", *USERS], "release_backend": "PostgreSQL ledger, "
                 "mlflow server (basic auth, PostgreSQL store)"}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp, stack.postgres() as pg, stack.mlflow_server(pg, Path(tmp)) as server:
        reg = Registry(server.url, server.password)
        os.environ.update(server.credentials)
        auth = get_app_client("basic-auth", tracking_uri=server.url)
        for u in USERS:
            auth.create_user(u, PASSWORD)
        subprocess.run([sys.executable, "-m", "yanjin.cli", "ledger", "init"], check=True, capture_output=True,
                       env=os.environ | {"YANJIN_LEDGER_URL": f"{pg}release"})
        grants = (ROOT / "infra/k8s/base/least-privilege.yaml").read_text()
        sql = grants.split("release-role.sql: |\n", 1)[1].split("\n  mlflow-users.py", 1)[0]
        (Path(tmp) / "release-role.sql").write_text("\n".join(line[4:] for line in sql.splitlines()))
        subprocess.run([str(stack.pg_bin() / "psql"), f"{pg}release", "-v", "ON_ERROR_STOP=1", "-v",
                        "release_password=rel", "-f", str(Path(tmp) / "release-role.sql")], check=True,
                       capture_output=True)
        role_url = pg.replace("postgresql://yanjin@", "postgresql://yanjin_release:rel@") + "release"
        ledger = Ledger(role_url, create=False)
        done = set(out)
        merge(out)

        # -- lock squat ----------------------------------------------------------------------------------
        if "squat" in parts:
            blocked = 0
            for _ in range(n):
                model = new_model(reg, auth)
                AsUser(reg, "serving").create_registered_model(R.lock_name(model))   # any MLflow user may: it did
                try:
                    promote(release_as(reg, ledger, "anna"), model, "2", "squat trial", expected="1")
                except (AliasConflict, PromotionRefused):
                    blocked += 1
            out["lock_squat_blocks"] = blocked
            merge({k: v for k, v in out.items() if k not in done})
            done |= set(out)

        # -- stale lease across principals ------------------------------------------------------------------
        if "stale" in parts:
            doubles = unbroken = 0
            for _ in range(n):
                model = new_model(reg, auth)
                most, got_in = most_holders_of_a_stale_lease(release_as(reg, ledger, "crashed-holder"), model,
                                                             waiters=6, ttl_s=2.0)
                doubles += most > 1
                unbroken += got_in < 6
            out["stale_lock_double_holders"], out["stale_lock_unbreakable"] = doubles, unbroken
            merge({k: v for k, v in out.items() if k not in done})
            done |= set(out)

        # -- a write delayed past its lease ------------------------------------------------------------------
        if "fenced" in parts:
            landed = 0
            for t in range(n):
                model = new_model(reg, auth)
                rel = release_as(reg, ledger, "slow-holder")
                rel.migrate(model)
                stalled = ledger.acquire(model, "slow-holder", ttl_s=0.5)
                time.sleep(0.8)
                if t % 2 == 0:
                    ledger.acquire(model, "next-holder", ttl_s=30)      # taken over; odd trials: only expired
                try:
                    rel.move(stalled, model, R.CHAMPION, "1", "3", "promote", "delayed write")
                    landed += 1
                except AliasConflict:
                    pass
            out["fenced_late_writes_landed"] = landed
            merge({k: v for k, v in out.items() if k not in done})
            done |= set(out)

        # -- audit tampering ------------------------------------------------------------------------------------
        if "audit" in parts:
            model = new_model(reg, auth)
            rel = release_as(reg, ledger, "anna")
            for v in ("2", "3", "4"):
                promote(rel, model, v, f"to {v}", expected=str(int(v) - 1))
            undetected, kinds = 0, ("edited", "deleted", "reordered", "tail deleted")
            for t in range(n):
                kind = kinds[t % len(kinds)]
                copy = f"tamper_{t}"
                ledger.engine.dispose()   # a template database may have no open connection
                subprocess.run([str(stack.pg_bin() / "createdb"), "-h", "127.0.0.1", "-p", pg.rsplit(":", 1)[1].strip("/"),
                                "-U", "yanjin", "-T", "release", copy], check=True, capture_output=True)
                owner = Ledger(f"{pg}{copy}", create=False)
                seqs = [e.seq for e in owner.history()]
                target = seqs[1 + t % (len(seqs) - 2)]
                with owner.engine.begin() as conn:   # the owner, guard disabled: what a DBA (or an attacker) could do
                    conn.exec_driver_sql("ALTER TABLE release_audit DISABLE TRIGGER release_audit_guard")
                    statements = {
                        "edited": [f"UPDATE release_audit SET principal = 'someone-else', reason = 'forged' WHERE seq = {target}"],
                        "deleted": [f"DELETE FROM release_audit WHERE seq = {target}"],
                        "reordered": [f"UPDATE release_audit SET seq = -1 WHERE seq = {target}",
                                      f"UPDATE release_audit SET seq = {target} WHERE seq = {target + 1}",
                                      f"UPDATE release_audit SET seq = {target + 1} WHERE seq = -1"],
                        "tail deleted": [f"DELETE FROM release_audit WHERE seq = {seqs[-1]}"],
                    }[kind]
                    for s in statements:
                        conn.exec_driver_sql(s)
                problems = owner.verify() + anchor_problems(Release(AsUser(reg, "release"), owner, "auditor"),
                                                            owner.models())
                undetected += not problems
                owner.close()
            out["audit_tampering_undetected"], out["audit_tampering_kinds"] = undetected, list(kinds)
            merge({k: v for k, v in out.items() if k not in done})
            done |= set(out)

        # -- approvals -------------------------------------------------------------------------------------------
        if "approvals" in parts:
            unapproved = self_approved = 0
            for _ in range(n):
                model = new_model(reg, auth)
                ledger.record_version(model, "2", "carl")
                anna, carl = release_as(reg, ledger, "anna"), release_as(reg, ledger, "carl")
                for who in (anna, carl):
                    try:
                        promote(who, model, "2", "no approval", approvals=1)
                        unapproved += 1
                    except PromotionRefused:
                        pass
                for who in (anna, carl):
                    try:
                        approve(who, model, "2", "my own")
                        self_approved += 1
                    except PromotionRefused:
                        pass
                result = tick(release_as(reg, ledger, "controller"), None, RolloutPolicy(), ReleasePolicy(approvals=1),
                              [model])
                unapproved += ledger.alias(model, R.CHAMPION) != "1" or bool(result.actions)
            out["unapproved_promotions"], out["self_approvals_accepted"] = unapproved, self_approved
            merge({k: v for k, v in out.items() if k not in done})
            done |= set(out)

        # -- steering the arms --------------------------------------------------------------------------------
        if "arms" in parts:
            picked = [k for k in (f"pick-{i}" for i in range(10_000))
                      if int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "big") / 2**64 < 0.1][:200]
            shares = [sum(assign_arm(k, 0.1, secrets.token_bytes(32)) == CHALLENGER for k in picked) / len(picked)
                      for _ in range(n)]
            out["steered_arm_share"] = round(sum(shares) / n, 4)
            out["steered_arm_share_configured"] = 0.1
            out["steered_arm_share_before"] = 1.0   # the same keys under the unsalted sha256: all on the challenger
            merge({k: v for k, v in out.items() if k not in done})
            done |= set(out)

        # -- two controllers at once ----------------------------------------------------------------------------
        if "controllers" in parts:
            policy = RolloutPolicy(plan="10,50,100", shadow_share=0, min_labelled=40, min_step_requests=40, accuracy_margin=0.05,
                                   review_margin=0.1)
            inconsistent = 0
            for t in range(n):
                model = new_model(reg, auth)
                log = PredictionLog(Path(tmp) / f"pred-{t}.db")
                start(release_as(reg, ledger, "anna"), model, "2", policy, "concurrency trial")
                for _ in range(3):
                    traffic(log, R.CHAMPION, "1", 100, 0.9, model=model)
                    traffic(log, R.CHALLENGER, "2", 100, 0.96, model=model)
                    controllers = [release_as(reg, ledger, f"controller-{i}") for i in (1, 2)]
                    threads = [threading.Thread(target=tick, args=(c, log, policy, ReleasePolicy(), [model]))
                               for c in controllers]
                    for th in threads:
                        th.start()
                    for th in threads:
                        th.join()
                state = read_state(release_as(reg, ledger, "auditor"), model)
                tags = AsUser(reg, "admin").get_registered_model(model).tags
                advances = sum(e.action == "rollout-advance" for e in ledger.history(model))
                expected_share = state.share if state.status == "running" else 0.0
                if state.step != min(advances, len(state.plan) - 1) or float(tags[R.SHARE_TAG]) != expected_share:
                    inconsistent += 1
                log.close()
            out["concurrent_rollout_inconsistencies"], out["concurrent_rollout_trials"] = inconsistent, n
            merge({k: v for k, v in out.items() if k not in done})
            done |= set(out)

        # -- moves in the MLflow UI --------------------------------------------------------------------------
        if "ui" in parts:
            unreported = 0
            for _ in range(n):
                model = new_model(reg, auth)
                rel = release_as(reg, ledger, "auditor")
                rel.migrate(model)
                AsUser(reg, "admin").set_registered_model_alias(model, R.CHAMPION, "3")
                unreported += not any(d.alias == R.CHAMPION and not d.unconfirmed for d in rel.drift(model))
            out["ui_alias_moves_unreported"] = unreported
            merge({k: v for k, v in out.items() if k not in done})
            done |= set(out)

    merge({"release_seconds": round(time.time() - t0, 1), "release_parts_last_run": parts})


if __name__ == "__main__":
    main()
