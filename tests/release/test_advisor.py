"""The version advisor on measured figures (benchmarks/results/family.json) and the seed's prices."""
import json
from pathlib import Path

import pytest

from yanjin.release.advisor import (Candidate, Constraints, Demand, advise, break_even_cost_per_error,
                                    break_even_month, candidates_from_family, total_cost)
from yanjin.release.policy import CostParams

FAMILY = json.loads((Path(__file__).resolve().parents[2] / "benchmarks/results/family.json").read_text())


@pytest.fixture()
def family():
    return {c.variant: c for c in candidates_from_family(FAMILY, CostParams())}


def test_with_fees_alone_pro_never_breaks_even_against_v2(family):
    demand = Demand(calls_per_day=100_000, months=18)
    assert break_even_month(family["pro"], family["v2"], demand) is None
    advice = advise([family["pro"], family["v2"]], Constraints(), demand)
    assert [c.variant for c in advice.ranked] == ["v2", "pro"]
    assert advice.totals["pro"] - advice.totals["v2"] == pytest.approx(7_000 + 18 * 3_000, abs=5)


def test_the_cost_per_error_that_makes_pro_win_at_18_months(family):
    pro, v2 = family["pro"], family["v2"]
    demand = Demand(calls_per_day=100_000, months=18)
    threshold = break_even_cost_per_error(pro, v2, demand, 18)
    by_hand = (7_000 + 18 * 3_000) / (18 * 3_000_000 * (pro.accuracy - v2.accuracy))
    assert threshold == pytest.approx(by_hand, rel=1e-3)      # compute costs are cents next to fees
    for price, winner in ((threshold * 0.98, "v2"), (threshold * 1.02, "pro")):
        advice = advise([pro, v2], Constraints(), Demand(100_000, 18, price))
        assert advice.ranked[0].variant == winner
    assert break_even_cost_per_error(v2, pro, demand, 18) == 0.0     # V2 is cheaper already, errors or not
    dearer_and_worse = Candidate("x", "m-x", "1", v2.accuracy - 0.01, 1, 100, 0.0, 20_000, 0.004)
    assert break_even_cost_per_error(dearer_and_worse, v2, demand, 18) is None


def test_constraints_filter_on_measured_latency_memory_and_accuracy(family):
    advice = advise(list(family.values()), Constraints(max_latency_ms=1.0, memory_gb=4, min_accuracy=0.9),
                    Demand(100_000, 24))
    assert [c.variant for c in advice.ranked] == ["lite"]
    assert all("p95 latency" in advice.rejected[v][0] for v in ("v1", "v2", "pro"))
    advice = advise(list(family.values()), Constraints(min_accuracy=0.92), Demand(100_000, 24))
    assert "lite" in advice.rejected and "accuracy 0.9149" in advice.rejected["lite"][0]


def test_break_even_month_and_error_costs_on_round_numbers():
    dear = Candidate("a", "m-a", "1", 0.95, 1, 100, 0.0, initial_usd=1_000, per_call_usd=0.0)
    cheap = Candidate("b", "m-b", "1", 0.90, 1, 100, 0.0, initial_usd=0, per_call_usd=0.0)
    demand = Demand(calls_per_day=10, months=12, cost_per_error=1.0, days_per_month=30)  # 300 calls a month
    # errors: a 15 $/month, b 30 $/month -> a's extra 1,000 up front is repaid after 1000/15 months
    assert break_even_month(dear, cheap, demand) == pytest.approx(1_000 / 15)
    assert total_cost(dear, demand, 12) == pytest.approx(1_000 + 12 * 15)


def test_gpu_needs_figures_measured_on_that_gpu():
    with pytest.raises(ValueError, match="no figures measured on t4"):
        candidates_from_family(FAMILY, CostParams(), gpu="t4")
