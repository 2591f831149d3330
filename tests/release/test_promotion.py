"""Promotion against a real MLflow registry and a real release ledger (SQLite): compare-and-set under
contention, approvals by other people, rollback, an audit whose tampering is found, fenced leases."""
import threading

import pytest
from mlflow import MlflowClient

from yanjin.registry import alias_version, lock_name
from yanjin.release.promotion import (CHAMPION, ApprovalMissing, PromotionConflict, PromotionRefused, approve,
                                      history, promote, rollback)

from .conftest import as_principal, release_for

MODEL = "demo-v1"


@pytest.fixture()
def client(tmp_path):
    """A registry with versions 1..12 (1 is champion); 12 never passed its gate."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model(MODEL)
    source = tmp_path / "artifacts"
    source.mkdir()
    for v in range(1, 13):
        client.create_model_version(MODEL, str(source), tags={"gate": "passed" if v < 12 else "reject"})
    client.set_registered_model_alias(MODEL, CHAMPION, "1")   # as a registry written before the ledger
    return client


@pytest.fixture()
def release(client, tmp_path):
    return release_for(client, tmp_path / "release.db")


def test_ten_concurrent_promoters_exactly_one_wins(client, release):
    seen = alias_version(client, MODEL, CHAMPION)
    barrier = threading.Barrier(10)
    won, conflicts, other = [], [], []

    def promoter(version: str) -> None:
        barrier.wait()
        try:
            promote(as_principal(release, f"t{version}"), MODEL, version, f"thread for v{version}", expected=seen)
            won.append(version)
        except PromotionConflict as e:
            conflicts.append(str(e))
        except Exception as e:  # noqa: BLE001 - anything else is a failure of the test
            other.append(repr(e))

    threads = [threading.Thread(target=promoter, args=(str(v),)) for v in range(2, 12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert other == []
    assert len(won) == 1 and len(conflicts) == 9
    assert alias_version(client, MODEL, CHAMPION) == won[0]
    assert all("moved from v1 to v" + won[0] in c for c in conflicts), conflicts[:2]
    promotions = [e for e in history(release, MODEL) if e.action == "promote"]
    assert [(e.from_version, e.to_version, e.who) for e in promotions] == [("1", won[0], f"t{won[0]}")]
    assert lock_name(MODEL) not in [m.name for m in client.search_registered_models()]  # no lock in MLflow any more
    assert release.ledger.verify() == []


def test_stale_expectation_is_refused_and_names_who_moved_it(client, release):
    promote(as_principal(release, "alice"), MODEL, "2", "first", expected="1")
    with pytest.raises(PromotionConflict, match=r"moved from v1 to v2 by alice .*first"):
        promote(as_principal(release, "bob"), MODEL, "3", "second", expected="1")
    assert alias_version(client, MODEL, CHAMPION) == "2"


def test_a_move_made_outside_yanjin_is_reported_and_undone_only_on_request(client, release):
    release.migrate(MODEL)
    client.set_registered_model_alias(MODEL, CHAMPION, "4")  # as the MLflow UI would
    [d] = release.drift(MODEL)
    assert (d.ledger, d.mlflow, d.unconfirmed) == ("1", "4", False) and "outside yanjin" in str(d)
    with pytest.raises(PromotionConflict, match="outside yanjin"):
        promote(release, MODEL, "2", "x", expected="1")
    assert alias_version(client, MODEL, CHAMPION) == "4"          # nothing undone behind anyone's back
    assert release.reconcile(MODEL, adopt=False, reason="not approved") == [f"{MODEL}@champion: MLflow set back to v1"]
    assert alias_version(client, MODEL, CHAMPION) == "1" and release.drift(MODEL) == []
    client.set_registered_model_alias(MODEL, CHAMPION, "5")
    release.reconcile(MODEL, adopt=True, reason="hotfix approved by CAB-9")
    assert release.ledger.alias(MODEL, CHAMPION) == "5" and release.drift(MODEL) == []


def test_gate_failures_need_force_and_are_recorded(client, release):
    with pytest.raises(PromotionRefused, match="gate"):
        promote(release, MODEL, "12", "hotfix", expected="1")
    assert alias_version(client, MODEL, CHAMPION) == "1"
    entry = promote(release, MODEL, "12", "hotfix", expected="1", force=True)
    assert entry.forced and history(release, MODEL)[-1].forced
    with pytest.raises(PromotionRefused, match="no version 99"):
        promote(release, MODEL, "99", "x", expected="12")
    with pytest.raises(PromotionRefused, match="reason"):
        promote(release, MODEL, "2", "  ", expected="12")


def test_rollback_walks_back_and_history_lists_every_change(client, release):
    promote(as_principal(release, "a"), MODEL, "2", "better", expected="1")
    promote(as_principal(release, "b"), MODEL, "3", "better still", expected="2")
    rollback(as_principal(release, "c"), MODEL, "v3 misbehaves")
    assert alias_version(client, MODEL, CHAMPION) == "2"
    rollback(as_principal(release, "d"), MODEL, "v2 too")           # a stack, not a toggle between 2 and 3
    assert alias_version(client, MODEL, CHAMPION) == "1"
    with pytest.raises(PromotionRefused, match="no earlier version"):
        rollback(release, MODEL, "again")
    changes = [(e.action, e.from_version, e.to_version, e.who, e.reason) for e in history(release, MODEL)
               if e.action != "migrate"]
    assert changes == [("promote", "1", "2", "a", "better"), ("promote", "2", "3", "b", "better still"),
                       ("rollback", "3", "2", "c", "v3 misbehaves"), ("rollback", "2", "1", "d", "v2 too")]


def test_cli_promote_conflict_history_and_select(client, tmp_path):
    from yanjin.registry.principal import os_principal

    import json
    import os

    from typer.testing import CliRunner

    from yanjin.cli import app

    uri = client.tracking_uri
    run = CliRunner().invoke
    env = {"COLUMNS": "300", "YANJIN_USER": "someone-else"}   # a name one types is never the principal
    me = os_principal()
    ok = run(app, ["promote", MODEL, "2", "--reason", "better on feedback", "--tracking-uri", uri], env=env)
    assert ok.exit_code == 0 and "v1 -> v2" in ok.output
    stale = run(app, ["promote", MODEL, "3", "--reason", "x", "--expected", "1", "--tracking-uri", uri], env=env)
    assert stale.exit_code == 1 and f"moved from v1 to v2 by {me}" in stale.output and "Traceback" not in stale.output
    shown = run(app, ["history", MODEL, "--tracking-uri", uri, "--verify"], env=env)
    assert me in shown.output and "someone-else" not in shown.output and "better on feedback" in shown.output
    assert "2 change(s)" in shown.output and "audit chain verified" in shown.output   # the migration, the promotion
    four_eyes = run(app, ["promote", MODEL, "3", "--reason", "x", "--profile", "full", "--tracking-uri", uri], env=env)
    assert four_eyes.exit_code == 1 and "needs 1 approval" in four_eyes.output and "yanjin approve" in four_eyes.output
    own = run(app, ["approve", MODEL, "3", "--reason", "mine", "--tracking-uri", uri], env=env)
    assert own.exit_code == 1 and f"{me} proposed" in own.output

    # the advisor only considers versions that are registered: register pro and v2 as the benchmark saw them
    for variant in ("pro", "v2"):
        client.create_registered_model(f"banking77-{variant}")
        client.create_model_version(f"banking77-{variant}", str(tmp_path))
    family = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "results", "family.json")
    out = run(app, ["select", "--family-json", family, "--months", "18", "--calls-per-day", "100000",
                    "--tracking-uri", uri, "--output-dir", str(tmp_path / "sel")], env=env)
    assert out.exit_code == 0, out.output
    assert "choose v2" in out.output and "pro (+0.0013 accuracy) is cheaper than v2 over 18 months once an error costs more than $0.87" in out.output
    assert "banking77-v1 v1 is no longer registered" in out.output          # measured, but not in this registry
    saved = json.loads((tmp_path / "sel" / "select.json").read_text())
    assert saved["ranking"] == ["v2", "pro"] and (tmp_path / "sel" / "select.png").stat().st_size > 0



def test_four_eyes_approval_from_neither_the_proposer_nor_the_trainer(client, release):
    anna, ben, carl = (as_principal(release, n) for n in ("anna", "ben", "carl"))
    release.ledger.record_version(MODEL, "2", "carl")                 # carl trained v2
    with pytest.raises(ApprovalMissing, match=r"needs 1 approval.*anna \(who proposed it\).*carl \(who trained it\)"):
        promote(anna, MODEL, "2", "better", approvals=1)
    assert alias_version(client, MODEL, CHAMPION) == "1"
    assert [(p["version"], p["proposer"]) for p in release.ledger.pending(MODEL)] == [("2", "anna")]
    for who, why in ((anna, "proposed"), (carl, "trained")):
        with pytest.raises(PromotionRefused, match=f"{who.principal} {why}"):
            approve(who, MODEL, "2", "self")
    approve(ben, MODEL, "2", "CAB-123")
    with pytest.raises(PromotionRefused, match="approved .* already"):
        approve(ben, MODEL, "2", "twice")
    assert promote(carl, MODEL, "2", "now", approvals=1, proposer="anna").to_version == "2"
    with pytest.raises(ApprovalMissing, match="needs 2 approval"):   # ben alone is not two people
        promote(anna, MODEL, "3", "next", approvals=2)


def test_a_crashed_holders_lease_is_taken_over_by_exactly_one_waiter(client, release):
    """A holder that crashed left its lease; six other principals wait at once, each holding longer than the
    TTL (renewals keep the others out). Any release principal takes an expired lease over, no admin needed."""
    assert most_holders_of_a_stale_lease(release, MODEL) == (1, 6)
    takeovers = [e for e in release.ledger.history(MODEL) if e.action == "lease-takeover"]
    assert len(takeovers) == 1 and "crashed" in takeovers[0].reason


TTL_S = 2.0  # short, to keep the test short; renewals come every TTL_S / 4 even on a loaded 2-core machine


def most_holders_of_a_stale_lease(release, model: str, waiters: int = 6, ttl_s: float = TTL_S) -> tuple[int, int]:
    """A crashed holder's lease, `waiters` principals released at once, each holding longer than the TTL:
    (most holders inside at the same time, waiters that got in). The fault benchmark runs it too."""
    import time

    release.ledger.acquire(model, "crashed", ttl_s)      # and never released or renewed
    time.sleep(ttl_s + 0.5)
    inside, most, done, guard = [0], [0], [], threading.Lock()
    barrier = threading.Barrier(waiters)

    def waiter(i: int) -> None:
        me = as_principal(release, f"waiter-{i}")
        me.lease_ttl_s = ttl_s
        barrier.wait()
        with me.holding(model, wait_s=120):
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(ttl_s + 0.5)  # longer than the ttl: only renewals keep the others out
            with guard:
                inside[0] -= 1
        done.append(i)

    threads = [threading.Thread(target=waiter, args=(i,)) for i in range(waiters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return most[0], len(done)


def test_a_holder_whose_lease_was_taken_over_writes_nothing_more(client, release):
    """A holder stalled past its lease; another took it over. Its next write is refused by the database
    (the fencing epoch), not by a re-read in the client."""
    import time

    from yanjin.registry.ledger import Fenced

    release.migrate(MODEL)
    stalled = release.ledger.acquire(MODEL, "stalled", ttl_s=0.5)
    time.sleep(0.8)
    other = release.ledger.acquire(MODEL, "other", ttl_s=30)
    assert other.epoch == stalled.epoch + 1 and other.broke == "stalled"
    with pytest.raises(Fenced, match="refused the write"):
        release.move(stalled, MODEL, CHAMPION, "1", "3", "promote", "late write")
    assert release.ledger.alias(MODEL, CHAMPION) == "1" and alias_version(client, MODEL, CHAMPION) == "1"
    release.move(other, MODEL, CHAMPION, "1", "2", "promote", "the current holder")
    assert alias_version(client, MODEL, CHAMPION) == "2"


def test_deleted_edited_and_reordered_audit_entries_are_found(client, release, tmp_path):
    """The release role cannot update or delete audit rows (a trigger; on PostgreSQL also its grants, see the
    integration test). Someone with the database file can: the hash chain finds what they changed."""
    import shutil
    import sqlite3

    import sqlalchemy as sa

    from yanjin.registry.ledger import Ledger

    for v in ("2", "3", "4"):
        promote(release, MODEL, v, f"to {v}", expected=str(int(v) - 1))
    assert release.ledger.verify() == []
    with pytest.raises(sa.exc.IntegrityError, match="append-only"):
        with release.ledger.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE release_audit SET principal = 'someone-else' WHERE seq = 2")
    original = tmp_path / "release.db"
    tampering = {
        "edited": ["UPDATE release_audit SET principal = 'someone-else', reason = 'forged' WHERE seq = 3"],
        "deleted": ["DELETE FROM release_audit WHERE seq = 3"],
        "reordered": ["UPDATE release_audit SET seq = -1 WHERE seq = 3", "UPDATE release_audit SET seq = 3 WHERE seq = 4",
                      "UPDATE release_audit SET seq = 4 WHERE seq = -1"],
        "tail deleted": [f"DELETE FROM release_audit WHERE seq = (SELECT max(seq) FROM release_audit)"],
    }
    for what, statements in tampering.items():
        copy = tmp_path / f"{what}.db"
        release.ledger.engine.dispose()
        shutil.copy(original, copy)
        with sqlite3.connect(copy) as db:   # as someone with the file: drops the guards first
            db.execute("DROP TRIGGER release_audit_no_update")
            db.execute("DROP TRIGGER release_audit_no_delete")
            for statement in statements:
                db.execute(statement)
        problems = Ledger(f"sqlite:///{copy}", create=False).verify()
        assert problems, f"{what}: not detected"
