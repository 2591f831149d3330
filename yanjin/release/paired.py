"""The shadow verdict: is the new version at least as accurate as the champion, on the same texts, from few labels?

In shadow both versions score the same text. Where they agree, the difference of their correctness is
exactly 0 whatever the truth: no label can change it. The accuracy difference lives on the disagreements,
and which texts those are is known without a label. So reviewers are asked for labels where they decide
the question ("active testing", Kossen et al., ICML 2021): serving puts a disagreement on the review queue
with probability `pi` (traffic.sampling; policy `disagreement_p`, 1 by default) and records it. Per shadowed text i,

    z_i = S_i * (c'_i - c_i) / pi_i        c = champion correct, c' = challenger correct, S_i = asked

is unbiased for the text's difference (Horvitz-Thompson): E[z_i] = c'_i - c_i, and 0 on agreements. The
mean of z over the shadowed traffic estimates accuracy(challenger) - accuracy(champion) on that traffic.

It is tested with the always-valid normal-mixture sequential test (release.sequential), so it may be looked
at after every batch: non-inferior once the interval's low end is above -margin, worse once its high end is
below 0. Texts are taken in arrival order up to the first asked text still waiting for its label; one
not labelled within `label_wait_s` counts against the challenger (a loss, -1/pi), so reviewers skipping the
hard items can never make a worse version look good. A small uniform audit sample (policy `audit_p`) of
agreements is asked too: it estimates each version's absolute accuracy for the report (Horvitz-Thompson),
and keeps the reviewers' view of the traffic unbiased; it does not enter the difference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .sequential import half_width

NON_INFERIOR, WORSE, PENDING, INCONCLUSIVE = "non-inferior", "worse", "pending", "inconclusive"
MIN_LABELLED = 20   # labelled disagreements before a verdict: the test is a normal approximation


@dataclass(frozen=True)
class Pair:
    """One shadowed text: both versions' answers, the trusted label if any, and whether it was asked for."""
    champion: str
    challenger: str
    truth: str | None
    asked: bool                 # on the review queue for this comparison (disagreement or audit)
    inclusion_p: float          # the probability it was asked, given what was known when it was logged
    created_at: float = 0.0


@dataclass
class PairedEstimate:
    pairs: int = 0                  # shadowed texts taken into the estimate (the resolved prefix)
    disagreements: int = 0
    asked: int = 0                  # ... of them asked for a label (disagreements and audit items)
    labelled: int = 0               # labels given for asked disagreements
    labelled_audit: int = 0
    pending: int = 0                # asked, waiting for a label: the estimate stops at the first
    expired: int = 0                # asked and not labelled within the wait: counted as challenger losses
    estimate: float = math.nan      # accuracy(challenger) - accuracy(champion)
    low: float = -1.0
    high: float = 1.0
    champion_accuracy: float = math.nan     # Horvitz-Thompson over the asked items (audit included)
    challenger_accuracy: float = math.nan
    decision: str = PENDING
    reasons: list[str] = field(default_factory=list)

    @property
    def disagreement_rate(self) -> float:
        return self.disagreements / self.pairs if self.pairs else math.nan


def paired_estimate(pairs: list[Pair], now: float, margin: float, alpha: float, tau: float,
                    label_wait_s: float, min_labelled: int = MIN_LABELLED) -> PairedEstimate:
    """The always-valid paired comparison over `pairs` (arrival order)."""
    out = PairedEstimate()
    zs: list[float] = []
    champ_ht = chal_ht = 0.0
    for p in pairs:
        disagree = p.champion != p.challenger
        if p.asked and p.truth is None:
            if now - p.created_at < label_wait_s:
                out.pending = sum(q.asked and q.truth is None and now - q.created_at < label_wait_s
                                  for q in pairs[len(zs):])
                break
            out.expired += disagree
            zs.append(-1.0 / p.inclusion_p if disagree else 0.0)
            out.pairs += 1
            out.disagreements += disagree
            out.asked += 1
            continue
        z = 0.0
        if p.asked:
            out.asked += 1
            c, c2 = float(p.champion == p.truth), float(p.challenger == p.truth)
            champ_ht += c / p.inclusion_p
            chal_ht += c2 / p.inclusion_p
            if disagree:
                out.labelled += 1
                z = (c2 - c) / p.inclusion_p
            else:
                out.labelled_audit += 1
        zs.append(z)
        out.pairs += 1
        out.disagreements += disagree
    n = len(zs)
    if n == 0:
        out.reasons.append("no shadowed texts yet")
        return out
    mean = sum(zs) / n
    # one pseudo-observation of unit variance keeps the interval open while no disagreement is labelled
    variance = (sum((z - mean) ** 2 for z in zs) + 1.0) / n
    half = half_width(variance / n, alpha, tau)
    out.estimate, out.low, out.high = mean, max(-1.0, mean - half), min(1.0, mean + half)
    out.champion_accuracy, out.challenger_accuracy = champ_ht / n, chal_ht / n
    interval = f"[{out.low:+.3f}, {out.high:+.3f}] over {n} shadowed texts, {out.labelled} labelled disagreements"
    if out.labelled + out.expired < min_labelled:
        out.reasons.append(f"labelled disagreements: {out.labelled + out.expired} (need {min_labelled})")
    elif out.high < 0:
        out.decision = WORSE
        out.reasons.append(f"challenger is less accurate than the champion on the same texts: difference {interval}")
    elif out.low > -margin:
        out.decision = NON_INFERIOR
        out.reasons.append(f"challenger is not worse than the champion by {margin:.3f} or more: difference {interval}")
    else:
        out.reasons.append(f"difference {interval} does not yet exclude a loss of {margin:.3f}")
    return out
