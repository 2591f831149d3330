"""The always-valid test keeps its error rate under repeated looks; a naive z-test does not."""
import math

import numpy as np

from yanjin.release.sequential import confidence_sequence

LOOKS = range(20, 1001, 20)   # a check after every 20 labelled texts per arm


def false_alarm_rates(p: float, runs: int = 300, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    always_valid = naive = 0
    for _ in range(runs):
        a, b = rng.random(1000) < p, rng.random(1000) < p
        av = nv = False
        for n in LOOKS:
            ka, kb = int(a[:n].sum()), int(b[:n].sum())
            d = confidence_sequence(ka, n, kb, n)
            av |= d.low > 0 or d.high < 0
            pa, pb = ka / n, kb / n
            se = math.sqrt(max(pa * (1 - pa) / n + pb * (1 - pb) / n, 1e-12))
            nv |= abs(pb - pa) / se > 1.96
        always_valid += av
        naive += nv
    return always_valid / runs, naive / runs


def test_no_difference_rarely_alarms_even_with_fifty_looks():
    always_valid, naive = false_alarm_rates(0.85)
    assert always_valid <= 0.05
    assert naive >= 0.15            # what peeking does to a fixed-sample test: the reason for this module


def test_a_real_difference_is_found_and_the_interval_covers_it():
    rng = np.random.default_rng(1)
    a, b = rng.random(400) < 0.85, rng.random(400) < 0.60
    d = confidence_sequence(int(a.sum()), 400, int(b.sum()), 400)
    assert d.high < 0 and d.low < -0.25 < d.high


def test_an_empty_arm_says_nothing():
    d = confidence_sequence(0, 0, 5, 10)
    assert (d.low, d.high) == (-1.0, 1.0)
