"""Promotion against a real MLflow registry (SQLite): compare-and-set under contention, rollback, audit."""
import threading

import pytest
from mlflow import MlflowClient

from yanjin.release.promotion import (CHAMPION, PromotionConflict, PromotionRefused, alias_version, history,
                                      lock_name, promote, rollback)

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
    client.set_registered_model_alias(MODEL, CHAMPION, "1")
    return client


def test_ten_concurrent_promoters_exactly_one_wins(client):
    seen = alias_version(client, MODEL, CHAMPION)
    barrier = threading.Barrier(10)
    won, conflicts, other = [], [], []

    def promoter(version: str) -> None:
        barrier.wait()
        try:
            promote(client, MODEL, version, f"thread for v{version}", expected=seen, who=f"t{version}")
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
    promotions = [e for e in history(client, MODEL) if e.action == "promote"]
    assert [(e.from_version, e.to_version, e.who) for e in promotions] == [("1", won[0], f"t{won[0]}")]
    assert lock_name(MODEL) not in [m.name for m in client.search_registered_models()]  # lock released


def test_stale_expectation_is_refused_and_names_who_moved_it(client):
    promote(client, MODEL, "2", "first", expected="1", who="alice")
    with pytest.raises(PromotionConflict, match=r"moved from v1 to v2 by alice .*first"):
        promote(client, MODEL, "3", "second", expected="1", who="bob")
    assert alias_version(client, MODEL, CHAMPION) == "2"


def test_a_move_made_outside_yanjin_is_detected(client):
    client.set_registered_model_alias(MODEL, CHAMPION, "4")  # as the MLflow UI would
    with pytest.raises(PromotionConflict, match="outside yanjin"):
        promote(client, MODEL, "2", "x", expected="1")


def test_gate_failures_need_force_and_are_recorded(client):
    with pytest.raises(PromotionRefused, match="gate"):
        promote(client, MODEL, "12", "hotfix", expected="1")
    assert alias_version(client, MODEL, CHAMPION) == "1"
    entry = promote(client, MODEL, "12", "hotfix", expected="1", force=True)
    assert entry.forced and history(client, MODEL)[-1].forced
    with pytest.raises(PromotionRefused, match="no version 99"):
        promote(client, MODEL, "99", "x", expected="12")
    with pytest.raises(PromotionRefused, match="reason"):
        promote(client, MODEL, "2", "  ", expected="12")


def test_rollback_walks_back_and_history_lists_every_change(client):
    promote(client, MODEL, "2", "better", expected="1", who="a")
    promote(client, MODEL, "3", "better still", expected="2", who="b")
    rollback(client, MODEL, "v3 misbehaves", who="c")
    assert alias_version(client, MODEL, CHAMPION) == "2"
    rollback(client, MODEL, "v2 too", who="d")           # a stack, not a toggle between 2 and 3
    assert alias_version(client, MODEL, CHAMPION) == "1"
    with pytest.raises(PromotionRefused, match="no earlier version"):
        rollback(client, MODEL, "again")
    changes = [(e.action, e.from_version, e.to_version, e.who, e.reason) for e in history(client, MODEL)]
    assert changes == [("promote", "1", "2", "a", "better"), ("promote", "2", "3", "b", "better still"),
                       ("rollback", "3", "2", "c", "v3 misbehaves"), ("rollback", "2", "1", "d", "v2 too")]


def test_cli_promote_conflict_history_and_select(client, tmp_path):
    import json
    import os

    from typer.testing import CliRunner

    from yanjin.cli import app

    uri = client.tracking_uri
    run = CliRunner().invoke
    env = {"COLUMNS": "300", "YANJIN_USER": "ops"}
    ok = run(app, ["promote", MODEL, "2", "--reason", "better on feedback", "--tracking-uri", uri], env=env)
    assert ok.exit_code == 0 and "v1 -> v2" in ok.output
    stale = run(app, ["promote", MODEL, "3", "--reason", "x", "--expected", "1", "--tracking-uri", uri], env=env)
    assert stale.exit_code == 1 and "moved from v1 to v2 by ops" in stale.output
    shown = run(app, ["history", MODEL, "--tracking-uri", uri], env=env)
    assert "ops" in shown.output and "better on feedback" in shown.output and "1 change(s)" in shown.output

    # the advisor only considers versions that are registered: register pro and v2 as the benchmark saw them
    for variant in ("pro", "v2"):
        client.create_registered_model(f"banking77-{variant}")
        client.create_model_version(f"banking77-{variant}", str(tmp_path))
    family = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "results", "family.json")
    out = run(app, ["select", "--family-json", family, "--months", "18", "--calls-per-day", "100000",
                    "--tracking-uri", uri, "--output-dir", str(tmp_path / "sel")], env=env)
    assert out.exit_code == 0, out.output
    assert "choose v2" in out.output and "pro (+0.0013 accuracy) beats v2 at 18 months only when an error costs more than $0.87" in out.output
    assert "banking77-v1 v1 is no longer registered" in out.output          # measured, but not in this registry
    saved = json.loads((tmp_path / "sel" / "select.json").read_text())
    assert saved["ranking"] == ["v2", "pro"] and (tmp_path / "sel" / "select.png").stat().st_size > 0


TTL_S = 2.0  # short, to keep the test short; renewals come every TTL_S / 4 even on a loaded 2-core machine


def most_holders_of_a_stale_lock(client, model: str, waiters: int = 6, ttl_s: float = TTL_S) -> tuple[int, int]:
    """A crashed holder's lock, `waiters` waiters released at once, each holding longer than the TTL:
    (most holders inside at the same time, waiters that got in). The fault benchmark runs it too."""
    import time

    from yanjin.release.promotion import model_lock

    client.create_registered_model(lock_name(model), tags={"owner": "crashed"})
    time.sleep(ttl_s + 0.5)
    inside, most, done, guard = [0], [0], [], threading.Lock()
    barrier = threading.Barrier(waiters)

    def waiter(i: int) -> None:
        barrier.wait()
        with model_lock(client, model, wait_s=120, ttl_s=ttl_s):
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


def test_a_stale_lock_is_broken_by_exactly_one_waiter_and_a_held_one_never(client):
    """A holder that crashed left its lock; six waiters find it stale at once. Before, two of them could
    both delete it and both enter. The registry's clock dates it, renewals keep a live holder's lock."""
    assert most_holders_of_a_stale_lock(client, MODEL) == (1, 6)
    names = {m.name for m in client.search_registered_models()}
    assert f"{lock_name(MODEL)}.broken.crashed" in names and lock_name(MODEL) not in names
    assert not [n for n in names if ".waiter." in n]  # every waiter's clock ticket is gone


def test_a_holder_that_lost_its_lock_writes_nothing_more(client):
    """A holder stalled past the TTL has its lock broken by a waiter; its next write is refused, so two
    controllers never both write. Before, nothing re-checked ownership before a write."""
    from yanjin.registry import AliasConflict, model_lock, record, set_alias

    with model_lock(client, MODEL):
        set_alias(client, MODEL, "challenger", "2")                        # ours: allowed
        client.rename_registered_model(lock_name(MODEL), lock_name(MODEL) + ".broken.me")  # a waiter broke it
        client.create_registered_model(lock_name(MODEL), tags={"owner": "the-other-controller"})
        with pytest.raises(AliasConflict, match="lost the alias lock"):
            set_alias(client, MODEL, "challenger", "3")
        with pytest.raises(AliasConflict, match="lost the alias lock"):
            record(client, MODEL, "promote", CHAMPION, "1", "3", "stale holder")
    assert alias_version(client, MODEL, "challenger") == "2"
    with pytest.raises(AliasConflict, match="without holding its lock"):
        set_alias(client, MODEL, "challenger", "4")                        # no lock at all


def test_two_audit_entries_with_the_same_sequence_number_both_survive(client):
    """Sequence numbers are read then written; a writer that bypassed the lock (or a broken one) could take
    the same number. The key carries the writer's suffix, so neither entry overwrites the other."""
    from unittest import mock

    from yanjin.registry import model_lock, record

    with model_lock(client, MODEL):
        first = record(client, MODEL, "promote", CHAMPION, "1", "2", "first writer")
        with mock.patch("yanjin.registry.history", return_value=[]):      # the second writer read before the first wrote
            second = record(client, MODEL, "promote", CHAMPION, "1", "3", "second writer")
    assert first.seq == second.seq == 1
    assert [e.reason for e in history(client, MODEL)] == ["first writer", "second writer"]
