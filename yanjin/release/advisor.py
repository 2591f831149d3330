"""Which family member to run: hard constraints first, then total cost of ownership over a horizon.

Figures are measured, not declared: accuracy, latency, memory and CPU-seconds per request come from
the family benchmark (`yanjin bench family`) of the versions that are registered now. Prices
(licence or fine-tuning up front, fees per call, $ per CPU-hour) come from the profile's `costs`.

    monthly cost = calls x (fee per call + CPU-s per call x $/CPU-hour / 3600 + error rate x cost per error)
    TCO(m)       = up-front cost + m x monthly cost
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .policy import CostParams


@dataclass(frozen=True)
class Candidate:
    variant: str
    model: str
    version: str
    accuracy: float
    latency_ms_p95: float      # ONNX Runtime, batch 1, as served
    memory_mb: float           # peak RSS of the measuring process (libraries included: an upper bound)
    cpu_s_per_call: float
    initial_usd: float
    per_call_usd: float

    @property
    def error_rate(self) -> float:
        return 1.0 - self.accuracy


@dataclass(frozen=True)
class Demand:
    calls_per_day: float
    months: int
    cost_per_error: float = 0.0
    cpu_hour_usd: float = 0.05
    days_per_month: float = 30.0

    @property
    def calls_per_month(self) -> float:
        return self.calls_per_day * self.days_per_month


@dataclass(frozen=True)
class Constraints:
    max_latency_ms: float = math.inf
    memory_gb: float = math.inf
    min_accuracy: float = 0.0


@dataclass(frozen=True)
class Advice:
    ranked: list[Candidate]                      # feasible, cheapest at the horizon first
    rejected: dict[str, list[str]]               # variant -> why it does not fit
    totals: dict[str, float]                     # variant -> TCO at the horizon
    monthly: dict[str, dict[str, float]]         # variant -> fees, compute, errors per month
    break_even_month: float | None = None        # when the top two's cumulative costs cross (None: never)
    pairs: list[dict] = field(default_factory=list)  # more accurate vs the winner: cost per error to win


def monthly_costs(c: Candidate, d: Demand) -> dict[str, float]:
    calls = d.calls_per_month
    return {"fees": calls * c.per_call_usd, "compute": calls * c.cpu_s_per_call * d.cpu_hour_usd / 3600,
            "errors": calls * c.error_rate * d.cost_per_error}


def total_cost(c: Candidate, d: Demand, months: float) -> float:
    return c.initial_usd + months * sum(monthly_costs(c, d).values())


def rejections(c: Candidate, limits: Constraints) -> list[str]:
    why = []
    if c.latency_ms_p95 > limits.max_latency_ms:
        why.append(f"p95 latency {c.latency_ms_p95:.2f} ms > {limits.max_latency_ms:g} ms")
    if c.memory_mb / 1024 > limits.memory_gb:
        why.append(f"memory {c.memory_mb / 1024:.2f} GB > {limits.memory_gb:g} GB")
    if c.accuracy < limits.min_accuracy:
        why.append(f"accuracy {c.accuracy:.4f} < {limits.min_accuracy:g}")
    return why


def break_even_month(a: Candidate, b: Candidate, d: Demand) -> float | None:
    """Month at which the cumulative costs of a and b are equal; None when the lines never cross."""
    ma, mb = sum(monthly_costs(a, d).values()), sum(monthly_costs(b, d).values())
    if ma == mb:
        return None
    month = (b.initial_usd - a.initial_usd) / (ma - mb)
    return month if month > 0 else None


def break_even_cost_per_error(accurate: Candidate, other: Candidate, d: Demand, months: float) -> float | None:
    """The cost of one error above which `accurate` is cheaper than `other` after `months`
    (0 when it already is; None when it is not more accurate, so errors cannot help it)."""
    error_gap = other.error_rate - accurate.error_rate
    no_error_cost = Demand(d.calls_per_day, d.months, 0.0, d.cpu_hour_usd, d.days_per_month)
    extra = total_cost(accurate, no_error_cost, months) - total_cost(other, no_error_cost, months)
    if extra <= 0:
        return 0.0
    if error_gap <= 0:
        return None
    return extra / (months * d.calls_per_month * error_gap)


def advise(candidates: list[Candidate], limits: Constraints, demand: Demand) -> Advice:
    rejected = {c.variant: why for c in candidates if (why := rejections(c, limits))}
    feasible = [c for c in candidates if c.variant not in rejected]
    totals = {c.variant: total_cost(c, demand, demand.months) for c in candidates}
    ranked = sorted(feasible, key=lambda c: totals[c.variant])
    crossing = break_even_month(ranked[0], ranked[1], demand) if len(ranked) > 1 else None
    pairs = []
    if ranked:
        winner = ranked[0]
        for c in ranked[1:]:
            if c.accuracy > winner.accuracy:
                pairs.append({"variant": c.variant, "versus": winner.variant, "months": demand.months,
                              "accuracy_gap": c.accuracy - winner.accuracy,
                              "break_even_cost_per_error": break_even_cost_per_error(c, winner, demand, demand.months)})
    return Advice(ranked, rejected, totals, {c.variant: monthly_costs(c, demand) for c in candidates}, crossing, pairs)


def candidates_from_family(family: dict, costs: CostParams, variants: list[str] | None = None,
                           gpu: str = "none") -> list[Candidate]:
    """Candidates from a family benchmark result (`family.json`); prices from the profile."""
    found = []
    for variant, m in family["versions"].items():
        if variants and variant not in variants:
            continue
        if gpu != "none":
            measured = m.get("gpu", {}).get(gpu)
            if measured is None:
                raise ValueError(f"{variant}: the family benchmark has no figures measured on {gpu}; run it on a "
                                 f"{gpu} node (benchmarks/gpu_check.sh) or choose --gpu none")
            latency, cpu_s = measured["latency_ms_p95_b1"], measured["gpu_s_per_1k_requests"] / 1000
        else:
            latency, cpu_s = m["ort_latency_ms_p95_b1"], m["cpu_s_per_1k_requests"] / 1000
        if variant not in costs.initial_usd or variant not in costs.per_call_usd:
            raise ValueError(f"{variant}: no price in the profile's costs.initial_usd / costs.per_call_usd")
        found.append(Candidate(variant, m["registered_model"], str(m["version"]), m["accuracy"], latency,
                               m["peak_rss_mb"], cpu_s, float(costs.initial_usd[variant]),
                               float(costs.per_call_usd[variant])))
    return found


def plot_cumulative(candidates: list[Candidate], demand: Demand, path: Path, advice: Advice | None = None) -> Path:
    """Cumulative cost per month, one line per version, as the table ranks them: the chosen one bold, an
    excluded one grey and dashed with its reason, lines that coincide named together."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    months = list(range(0, max(demand.months, 1) * 3 // 2 + 1))
    rejected = advice.rejected if advice else {}
    chosen = advice.ranked[0].variant if advice and advice.ranked else None
    lines = {c.variant: [round(total_cost(c, demand, m) / 1000, 6) for m in months] for c in candidates}
    # below, each line minus the reference (the chosen version): lines millions apart at a glance differ here
    reference = lines[chosen or candidates[0].variant]
    fig, (ax, diff) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    for c in candidates:
        same = [o.variant for o in candidates if o.variant != c.variant and lines[o.variant] == lines[c.variant]]
        label = f"{c.variant} #{c.version}" + (" — chosen" if c.variant == chosen else "") \
            + (f" — excluded: {'; '.join(rejected[c.variant])}" if c.variant in rejected else "") \
            + (f" (same line as {', '.join(same)})" if same else "")
        style = ({"color": "grey", "linestyle": "--", "alpha": 0.7} if c.variant in rejected
                 else {"linewidth": 3} if c.variant == chosen else {})
        line, = ax.plot(months, lines[c.variant], label=label, **style)
        diff.plot(months, [a - b for a, b in zip(lines[c.variant], reference)], color=line.get_color(),
                  **{k: v for k, v in style.items() if k != "color"})
    for a in (ax, diff):
        a.axvline(demand.months, color="grey", linestyle=":", label=f"horizon: {demand.months} months" if a is ax else None)
    ax.set_ylabel("cumulative cost (k USD)")
    diff.set_ylabel(f"minus {chosen or candidates[0].variant} (k USD)")
    diff.set_xlabel("month")
    ax.set_title(f"{demand.calls_per_day:,.0f} calls/day, ${demand.cost_per_error:,.2f} per error")
    ax.legend(fontsize=8)
    fig.tight_layout()
    # the legend as drawn, in the PNG's own text chunk: what a reader sees, checkable without OCR
    fig.savefig(path, dpi=110, metadata={"Title": ax.get_title(),
                                           "Description": "\n".join(t.get_text() for t in ax.get_legend().get_texts())})
    plt.close(fig)
    return path
