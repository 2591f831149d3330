"""The paired shadow verdict: unbiased from disagreement labels alone, error rates held under repeated looks
(checked by simulation at the traffic the demo's V1 and Lite show: they disagree on 7.6% of texts)."""
import numpy as np

from yanjin.release.paired import NON_INFERIOR, PENDING, WORSE, Pair, paired_estimate
from yanjin.traffic.sampling import AUDIT, DISAGREEMENT, LOW_CONFIDENCE, review_selection

MARGIN, ALPHA, TAU = 0.02, 0.05, 0.05
LOOKS = (250, 500, 1000, 1500, 2000, 3000, 4000, 6000)


def season(rng, n: int, delta: float, disagree: float = 0.076, both_wrong: float = 0.01, p: float = 1.0,
           audit: float = 0.0) -> list[Pair]:
    """n shadowed texts; among disagreements the challenger is right `delta` more often."""
    lose = (disagree - both_wrong - delta) / 2          # disagreement, champion right
    win = lose + delta                                  # disagreement, challenger right
    kind = rng.choice(4, size=n, p=[1 - disagree, lose, win, both_wrong])
    u = rng.random(n)
    pairs = []
    for i, (k, ui) in enumerate(zip(kind, u)):
        truth = "a"
        agreed = ("a", "a") if ui < 0.9 else ("b", "b")    # right or wrong together: nothing to learn
        champion, challenger = {0: agreed, 1: ("a", "b"), 2: ("b", "a"), 3: ("b", "c")}[int(k)]
        reason, pi = review_selection(champion, challenger, False, p, audit, rng.random())
        pairs.append(Pair(champion, challenger, truth if reason else None, reason is not None, pi, float(i)))
    return pairs


def verdict_over_looks(pairs: list[Pair]) -> tuple[str, int]:
    """The first look's decision that is not pending, and the labels given by then."""
    for n in LOOKS:
        e = paired_estimate(pairs[:n], now=float(n), margin=MARGIN, alpha=ALPHA, tau=TAU, label_wait_s=1e9)
        if e.decision != PENDING:
            return e.decision, e.labelled
    return PENDING, e.labelled


def test_selection_asks_where_the_versions_disagree():
    assert review_selection("a", "b", False, 1.0, 0.02, 0.99) == (DISAGREEMENT, 1.0)
    assert review_selection("a", "b", False, 0.5, 0.02, 0.7) == (None, 0.5)   # not drawn: recorded, not asked
    assert review_selection("a", "b", True, 0.5, 0.02, 0.7) == (DISAGREEMENT, 1.0)
    assert review_selection("a", "a", True, 1.0, 0.02, 0.5) == (LOW_CONFIDENCE, 1.0)
    assert review_selection("a", "a", False, 1.0, 0.02, 0.01) == (AUDIT, 0.02)
    assert review_selection("a", "a", False, 1.0, 0.02, 0.5) == (None, 0.02)


def test_the_estimate_is_unbiased_when_only_some_disagreements_are_labelled():
    rng = np.random.default_rng(0)
    estimates = [paired_estimate(season(rng, 3000, -0.01, p=0.4), 3000.0, MARGIN, ALPHA, TAU, 1e9).estimate
                 for _ in range(60)]
    assert abs(np.mean(estimates) - (-0.01)) < 0.004


def test_a_version_worse_by_the_margin_is_rarely_called_non_inferior_however_often_one_looks():
    rng = np.random.default_rng(1)
    runs = [verdict_over_looks(season(rng, LOOKS[-1], -MARGIN)) for _ in range(150)]
    wrong = sum(d == NON_INFERIOR for d, _ in runs) / len(runs)
    assert wrong <= ALPHA


def test_an_equally_good_version_passes_and_a_clearly_worse_one_fails_from_a_few_hundred_labels():
    rng = np.random.default_rng(2)
    equal = [verdict_over_looks(season(rng, LOOKS[-1], 0.0)) for _ in range(30)]
    worse = [verdict_over_looks(season(rng, LOOKS[-1], -0.05)) for _ in range(30)]
    assert sum(d == NON_INFERIOR for d, _ in equal) >= 27
    assert all(d == WORSE for d, _ in worse)
    assert np.median([n for _, n in equal]) < 400 and np.median([n for _, n in worse]) < 150


def test_unanswered_asks_count_against_the_challenger():
    pairs = [Pair("a", "b", None, True, 1.0, 0.0) for _ in range(30)] + [Pair("a", "a", None, False, 0.0, 1.0)] * 500
    waiting = paired_estimate(pairs, now=10.0, margin=MARGIN, alpha=ALPHA, tau=TAU, label_wait_s=3600)
    assert waiting.pairs == 0 and waiting.pending == 30 and waiting.decision == PENDING
    expired = paired_estimate(pairs, now=7200.0, margin=MARGIN, alpha=ALPHA, tau=TAU, label_wait_s=3600)
    assert expired.expired == 30 and expired.estimate < 0 and expired.decision == WORSE
