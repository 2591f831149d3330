"""The seed's version-selection example, priced with our measured family figures.

Seed: 100,000 calls a day; Pro costs $12,000 up front + $0.003 a call, V2 $5,000 fine-tuning +
$0.002 a call; the seed claims Pro wins after 18 months. With fees alone Pro never breaks even
(it costs more up front *and* per call), so the claim holds only when errors cost money. This
prints the cost per error above which Pro wins at 18 months, with Pro's and V2's measured
accuracies, and checks it by pricing errors just below and just above it. When Pro is not the more
accurate of the two, no price of an error makes it win: the result says so instead of a threshold.

    python benchmarks/select_seed_example.py    # -> benchmarks/results/select_seed_example.{json,png}
    python benchmarks/select_seed_example.py benchmarks/results/family_pro_side_by_side.json
        # another family -> benchmarks/results/select_seed_example_family_pro_side_by_side.{json,png}
"""
import json
import sys
from dataclasses import asdict
from pathlib import Path

from yanjin.release.advisor import (Constraints, Demand, advise, break_even_cost_per_error, break_even_month,
                                    candidates_from_family, plot_cumulative, total_cost)
from yanjin.release.policy import CostParams

RESULTS = Path(__file__).resolve().parent / "results"


def main(family_json: Path = RESULTS / "family.json") -> dict:
    family = json.loads(family_json.read_text())
    costs = CostParams()  # the seed's prices are the defaults
    pro, v2 = sorted(candidates_from_family(family, costs, ["pro", "v2"]), key=lambda c: c.variant != "pro")
    fees_only = Demand(calls_per_day=100_000, months=18, cpu_hour_usd=costs.cpu_hour_usd)
    threshold = break_even_cost_per_error(pro, v2, fees_only, 18)  # None: Pro is not more accurate
    at_issue_price = Demand(100_000, 18, 0.2, costs.cpu_hour_usd)
    whole_family = advise(candidates_from_family(family, costs), Constraints(50, 4, 0.9),
                          Demand(100_000, 24, 0.2, costs.cpu_hour_usd))
    result = {
        "break_even_cost_per_error_18_months": threshold,
        "pro_accuracy": pro.accuracy, "v2_accuracy": v2.accuracy,
        "accuracy_gap": pro.accuracy - v2.accuracy,
        "accuracy_gap_test_texts": round((pro.accuracy - v2.accuracy) * family["n_test"]),
        "n_test": family["n_test"],
        "fees_only": {"pro_tco_18": total_cost(pro, fees_only, 18), "v2_tco_18": total_cost(v2, fees_only, 18),
                      "break_even_month": break_even_month(pro, v2, fees_only)},
        "pro_never_wins": threshold is None,
        "at_0.20_per_error": {"pro_tco_18": total_cost(pro, at_issue_price, 18),
                              "v2_tco_18": total_cost(v2, at_issue_price, 18)},
        "whole_family_24_months_0.20_per_error": {"ranking": [c.variant for c in whole_family.ranked],
                                                  "tco_usd": whole_family.totals,
                                                  "rejected": whole_family.rejected},
        "prices": asdict(costs), "figures_from": str(family_json.resolve().relative_to(RESULTS.parent.parent)),
    }
    gap = (f"measured accuracy gap {result['accuracy_gap']:+.4f} = {result['accuracy_gap_test_texts']} of "
           f"{result['n_test']} test texts")
    if threshold is None:
        shown = at_issue_price
        verdict = f"Pro never wins against V2: it costs more and is not more accurate ({gap})"
    else:
        below, above = (Demand(100_000, 18, threshold * f, costs.cpu_hour_usd) for f in (0.99, 1.01))
        shown = Demand(100_000, 18, threshold * 2, costs.cpu_hour_usd)  # drawn where the lines part, not at the crossing
        result |= {"pro_wins_just_above_threshold": total_cost(pro, above, 18) < total_cost(v2, above, 18),
                   "v2_wins_just_below_threshold": total_cost(v2, below, 18) < total_cost(pro, below, 18)}
        verdict = f"Pro wins at 18 months only if an error costs more than ${threshold:.2f} ({gap})"
    stem = "select_seed_example" + ("" if family_json.name == "family.json" else f"_{family_json.stem}")
    plot_cumulative([pro, v2], shown, RESULTS / f"{stem}.png")
    (RESULTS / f"{stem}.json").write_text(json.dumps(result | {"verdict": verdict}, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k not in ("prices", "whole_family_24_months_0.20_per_error")},
                     indent=2))
    print(verdict)
    return result


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS / "family.json")
