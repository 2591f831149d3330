"""Which served texts go on the review queue, why, and with what probability.

A reviewer's time is the scarce resource of a verdict. While a shadow comparison runs (release.paired),
the texts on which champion and challenger disagree decide it, and which those are is known without a
label: they are asked for first. An agreement says nothing about which version is better; a small uniform
audit sample of them is asked too, to estimate each version's absolute accuracy without bias. The champion's
low-confidence answers are asked as before. Each asked row records its inclusion probability, so estimates
over the labels can weight them back (Horvitz-Thompson).
"""
from __future__ import annotations

DISAGREEMENT, LOW_CONFIDENCE, AUDIT = "disagreement", "low_confidence", "audit"
TRUNCATED = "truncated"   # the model read only the start of a long text: a person reads the rest
QUEUE_ORDER = (DISAGREEMENT, LOW_CONFIDENCE, TRUNCATED, AUDIT)   # what helps most first


def review_selection(champion: str, challenger: str, flagged: bool, disagreement_p: float, audit_p: float,
                     u: float) -> tuple[str | None, float]:
    """(reason, inclusion probability) for a shadowed text, `u` a uniform draw: a disagreement is asked with
    `disagreement_p` (always when the champion's answer is flagged for review anyway), an agreement with
    `audit_p` (always when flagged); reason None when it is not asked (the probability is still recorded)."""
    if champion != challenger:
        p = 1.0 if flagged else disagreement_p
        return (DISAGREEMENT if u < p else None), p
    if flagged:
        return LOW_CONFIDENCE, 1.0
    return (AUDIT if u < audit_p else None), audit_p
