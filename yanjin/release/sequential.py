"""An always-valid comparison of two proportions, safe to look at after every batch of traffic.

A rollout re-tests the arms at every check; a fixed-sample test (t-test, chi-square) at alpha 0.05
looked at 20 times raises a false alarm far more often than 5%. We use the mixture sequential
probability ratio test (mSPRT) of Johari, Pekelis & Walsh ("Always valid inference", 2017), the
test behind Optimizely's stats engine: with a normal mixture N(0, tau^2) over the difference, the
likelihood ratio

    Lambda_n = sqrt(V / (V + tau^2)) * exp(tau^2 (d - d0)^2 / (2 V (V + tau^2)))

(d the observed difference, V its variance) stays below 1/alpha at *every* n with probability
>= 1 - alpha under d = d0. Inverting it gives a confidence sequence: an interval that holds
simultaneously at all looks, so "significantly worse" may be declared at whichever look it shows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Difference:
    """challenger - champion for one proportion (e.g. accuracy), with its always-valid interval."""
    champion: float
    challenger: float
    n_champion: int
    n_challenger: int
    low: float
    high: float

    @property
    def estimate(self) -> float:
        return self.challenger - self.champion


def _smoothed(successes: int, n: int) -> float:
    # (k+1)/(n+2): keeps the variance above zero when an arm is all right or all wrong so far
    return (successes + 1) / (n + 2)


def confidence_sequence(successes_a: int, n_a: int, successes_b: int, n_b: int,
                        alpha: float = 0.05, tau: float = 0.1) -> Difference:
    """Always-valid (1 - alpha) interval for p_b - p_a (b = challenger, a = champion)."""
    if n_a == 0 or n_b == 0:
        return Difference(successes_a / n_a if n_a else math.nan, successes_b / n_b if n_b else math.nan,
                          n_a, n_b, -1.0, 1.0)
    pa, pb = successes_a / n_a, successes_b / n_b
    va, vb = _smoothed(successes_a, n_a), _smoothed(successes_b, n_b)
    half = half_width(va * (1 - va) / n_a + vb * (1 - vb) / n_b, alpha, tau)
    return Difference(pa, pb, n_a, n_b, max(-1.0, pb - pa - half), min(1.0, pb - pa + half))


def half_width(v: float, alpha: float, tau: float) -> float:
    """Half the always-valid interval around an estimate whose variance is `v` (the mSPRT inverted)."""
    t2 = tau * tau
    return math.sqrt(v * (v + t2) / t2 * (2 * math.log(1 / alpha) + math.log((v + t2) / v)))
