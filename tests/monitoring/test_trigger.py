"""Debounced retraining trigger and the quarterly calendar (pure logic)."""
from datetime import datetime, timezone

from yanjin.monitoring.trigger import (QUARTERLY_CRON, TriggerState, next_quarter_start, observe, quarter_due,
                                       quarter_start)

HOUR = 3600.0
UTC = timezone.utc


def run(verdicts: list[str], every_s: float = HOUR, cooldown_s: float = 48 * HOUR) -> int:
    state, fired = TriggerState(), 0
    for i, v in enumerate(verdicts):
        fired += observe(state, v, i * every_s, checks=3, needed=2, cooldown_s=cooldown_s)
    return fired


def test_flapping_drift_never_triggers():
    assert run(["drift", "no_drift", "no_drift", "drift", "no_drift", "no_drift"] * 10) == 0


def test_sustained_drift_triggers_once_per_cooldown():
    assert run(["drift"] * 24) == 1                     # 24 hourly checks inside a 48-hour cooldown
    assert run(["drift"] * 60) == 2                     # the cooldown ended once
    assert run(["no_drift", "drift", "drift"]) == 1     # 2 of the last 3


def test_insufficient_data_is_not_a_vote():
    assert run(["drift", "insufficient_data", "insufficient_data", "no_drift"]) == 0
    assert run(["drift", "insufficient_data", "drift"]) == 1


def test_state_survives_a_round_trip():
    state = TriggerState()
    observe(state, "drift", 0.0, 3, 2, HOUR)
    again = TriggerState.from_json(state.to_json())
    assert observe(again, "drift", 10.0, 3, 2, HOUR) and again.last_retraining == 10.0


def test_next_quarter_across_a_year_boundary():
    assert next_quarter_start(datetime(2026, 11, 28, 22, 0, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert next_quarter_start(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert next_quarter_start(datetime(2027, 1, 1, 0, 0, 0, tzinfo=UTC)) == datetime(2027, 4, 1, tzinfo=UTC)
    assert next_quarter_start(datetime(2027, 9, 30, 12, tzinfo=UTC)) == datetime(2027, 10, 1, tzinfo=UTC)
    assert quarter_start(datetime(2027, 2, 14, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert QUARTERLY_CRON == "0 0 0 1 1,4,7,10 *"       # KFP: seconds first


def test_quarterly_runs_once_per_quarter_without_catch_up():
    ts = lambda *a: datetime(*a, tzinfo=UTC).timestamp()  # noqa: E731
    state = TriggerState()
    assert not quarter_due(state, ts(2026, 11, 28))      # a first start mid-quarter waits for the quarter
    assert not quarter_due(state, ts(2026, 12, 15))
    assert quarter_due(state, ts(2027, 1, 1, 0, 5))
    assert not quarter_due(state, ts(2027, 1, 1, 1, 5))  # the same quarter: no second run
    # down for 9 months: one run on restart, not three
    assert [quarter_due(state, ts(2027, 10, 2, 0, m)) for m in range(5)] == [True, False, False, False, False]


def test_kfp_recurring_run_is_quarterly_single_and_without_catch_up(tmp_path):
    from typer.testing import CliRunner

    from yanjin.cli import app
    from yanjin.pipelines.remote import recurring_run_options

    options = recurring_run_options("q", "exp-1", tmp_path / "p.yaml", {"registered_model": "banking77-lite"},
                                    QUARTERLY_CRON)
    assert (options["cron_expression"], options["max_concurrency"], options["no_catchup"], options["enable_caching"]) \
        == ("0 0 0 1 1,4,7,10 *", 1, True, False)
    five_fields = CliRunner().invoke(app, ["pipeline", "schedule", "--host", "http://kfp", "--cron", "0 0 1 */3 *"],
                                     env={"COLUMNS": "300"})
    assert five_fields.exit_code == 2 and "6 fields, seconds first" in five_fields.output
