"""Release settings read from the profile (sections `rollout` and `costs`): plain dataclasses, no I/O."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RolloutPolicy:
    plan: str = "10,50,100"              # challenger traffic per step, percent; the last step must be 100
    accuracy_margin: float = 0.02        # advance while challenger accuracy >= champion's - margin (always-valid bound)
    review_margin: float = 0.05          # ... and its low-confidence (review) share <= champion's + margin
    min_labelled: int = 200              # labelled predictions per arm before the first verdict on accuracy
    min_step_requests: int = 200         # challenger predictions at the current step before it may advance
    max_step_requests: int = 20_000      # no verdict after this many at one step: inconclusive, roll back
    max_error_rate: float = 0.01         # failed challenger calls / its requests beyond which it rolls back
    max_latency_ratio: float = 1.5       # challenger p95 / champion p95 beyond which it rolls back
    alpha: float = 0.05                  # error rate of the always-valid test, over all looks together
    tau: float = 0.05                    # mSPRT mixture scale: the size of difference it is tuned to see

    def steps(self) -> list[float]:
        """The plan as shares in (0, 1], strictly rising, ending at 1."""
        try:
            shares = [float(p) / 100 for p in self.plan.split(",") if p.strip()]
        except ValueError:
            raise ValueError(f"rollout plan {self.plan!r}: expected percents like 10,50,100") from None
        if not shares or shares[-1] != 1.0 or any(not 0 < s <= 1 for s in shares) or shares != sorted(set(shares)):
            raise ValueError(f"rollout plan {self.plan!r}: percents must rise strictly within (0, 100] and end at 100")
        return shares


@dataclass(frozen=True)
class CostParams:
    """What running a version costs besides its measured compute. The defaults are the seed's example
    (Pro $12,000 up front + $0.003 a call; V2 $5,000 fine-tuning + $0.002 a call): replace them with
    your own contract's figures in the profile."""
    initial_usd: dict = field(default_factory=lambda: {"v1": 0.0, "v2": 5000.0, "pro": 12000.0, "lite": 0.0})
    per_call_usd: dict = field(default_factory=lambda: {"v1": 0.0, "v2": 0.002, "pro": 0.003, "lite": 0.0})
    cpu_hour_usd: float = 0.05           # one vCPU-hour on your nodes
    days_per_month: float = 30.0
