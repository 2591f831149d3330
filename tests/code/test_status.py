"""`yanjin status` renders what the system keeps: a running rollout, a drift verdict, a retraining."""
from datetime import datetime, timezone

from yanjin import registry as R
from yanjin.monitoring.status import FamilyStatus, MemberStatus, VersionLine, age, render

NOW = 1_800_000_000.0


def test_one_screen_holds_every_member_and_the_family_wide_lines():
    rollout = {"champion": "3", R.CHALLENGER: "4", "plan": [0.1, 0.5, 1.0], "step": 1, "status": R.ROLLOUT_RUNNING,
               "step_started_at": NOW - 7200}
    lite = MemberStatus("lite", "banking77-lite", True, 4, VersionLine("3", "0.9149", NOW - 10 * 86400),
                        VersionLine("4", "0.9201", NOW - 3600), rollout,
                        {"verdict": "drift", "at": NOW - 600, "version": "3"},
                        {"version": "4", "reason": "drift in 2 of the last 3 checks", "at": NOW - 3600})
    status = FamilyStatus(NOW, [MemberStatus("v1", "banking77-v1", False), lite], 17, "/s/predictions.db",
                          datetime(2027, 1, 1, tzinfo=timezone.utc))
    text = render(status)
    row = next(line for line in text.splitlines() if line.startswith("lite"))
    assert "#3 0.9149 (10d old)" in row and "#4 0.9201 (1h old)" in row
    assert "#4 canary step 2/3 at 50% of traffic, 2h in step" in row
    shadow = rollout | {"phase": R.ROLLOUT_SHADOW, "shadow": {"share": 0.5}, "started_at": NOW - 3600}
    in_shadow = render(FamilyStatus(NOW, [MemberStatus(**{**vars(lite), "rollout": shadow})], 3, "/s/p.db",
                                    datetime(2027, 1, 1, tzinfo=timezone.utc)))
    assert "#4 in shadow on 50% of texts, 1h: awaiting the paired verdict" in in_shadow
    assert "drift (10m ago)" in row and "#4 1h ago: drift in 2 of the last 3 checks" in row
    assert next(line for line in text.splitlines() if line.startswith("v1")).split()[1:3] == ["not", "registered"]
    assert "17 prediction(s) waiting" in text and "2027-01-01 00:00 UTC" in text


def test_ages_read_as_people_say_them():
    assert [age(s) for s in (5, 90, 7200, 3 * 86400)] == ["5s", "2m", "2h", "3d"]
