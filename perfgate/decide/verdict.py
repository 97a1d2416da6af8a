"""Verdicts and exit codes: the rule for one metric, the rule for accuracy, the gate over
both, and how a run's status and verdict become an exit code. Nothing else decides.

A run has a **status** (``complete``, or how it ended: ``invalid`` when what it measured is
unfit to judge, ``failed``, ``interrupted``) and, once complete, a **verdict** from the
per-metric and accuracy verdicts. A metric that could not be measured has the verdict
``invalid`` (missing is not zero). Exit codes: 0 pass, 1 regressed, 2 invalid or a run that
did not complete, 3 inconclusive.

The per-metric rule is non-inferiority on the change in the bad direction, ``worse`` (positive
= worse), with tolerance ``tol`` and the interval ``[lo, hi]``:

- ``regressed``    lo > tol           (worse than the tolerance, and significantly so)
- ``improved``     hi < 0             (significantly better)
- ``no change``    hi <= tol          (a regression beyond the tolerance is ruled out)
- ``inconclusive`` otherwise          (the interval straddles the tolerance)

Identical arms regress only when ``lo > tol >= 0``: at most (1 - confidence) / 2 of the time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from perfgate.decide import stats

PASS = "pass"
REGRESSED, IMPROVED, NO_CHANGE, INCONCLUSIVE, INVALID = (
    "regressed",
    "improved",
    "no change",
    "inconclusive",
    "invalid",
)
EXIT_FOR = {PASS: 0, REGRESSED: 1, INVALID: 2, INCONCLUSIVE: 3}
COMPLETE = "complete"


@dataclass(frozen=True)
class Decision:
    verdict: str
    worse: float  # estimate in the bad direction (positive = worse)
    worse_low: float
    worse_high: float
    repeats_to_decide: int | None  # inconclusive only: repeats per arm that would likely decide


def decide(
    interval: stats.Interval, *, higher_is_better: bool, tolerance: float, repeats: int
) -> Decision:
    """One metric's verdict from the interval of its relative change."""
    if higher_is_better:
        worse, lo, hi = -interval.estimate, -interval.high, -interval.low
    else:
        worse, lo, hi = interval.estimate, interval.low, interval.high
    if any(math.isnan(x) for x in (worse, lo, hi)):
        return Decision(INVALID, worse, lo, hi, None)
    if lo > tolerance:
        return Decision(REGRESSED, worse, lo, hi, None)
    if hi < 0:
        return Decision(IMPROVED, worse, lo, hi, None)
    if hi <= tolerance:
        return Decision(NO_CHANGE, worse, lo, hi, None)
    return Decision(
        INCONCLUSIVE,
        worse,
        lo,
        hi,
        stats.repeats_to_decide(
            worse, lo, hi, tolerance, repeats, df=interval.df, confidence=interval.confidence
        ),
    )


def decide_accuracy(*, p_margin: float, diff_low: float, max_drop: float, alpha: float) -> str:
    """Accuracy's verdict, a non-inferiority rule on the margin ``max_drop``:

    - ``regressed``    the drop is significantly larger than the margin (``p_margin`` < alpha,
                       a test against the margin, not against 0: a true drop equal to the
                       margin fails at most alpha of the time)
    - ``improved``     the interval of candidate - baseline lies above 0
    - ``no change``    the interval rules out a drop beyond the margin (diff_low >= -max_drop)
    - ``inconclusive`` otherwise
    """
    if p_margin < alpha:
        return REGRESSED
    if diff_low > 0:
        return IMPROVED
    if -diff_low <= max_drop:
        return NO_CHANGE
    return INCONCLUSIVE


def worst(verdicts: Iterable[str]) -> str:
    """The gate over verdicts: invalid, then regressed, then inconclusive; else pass."""
    seen = set(verdicts)
    for v in (INVALID, REGRESSED, INCONCLUSIVE):
        if v in seen:
            return v
    return PASS


def overall(metric_verdicts: Iterable[str], accuracy_verdict: str | None = None) -> str:
    """The run's verdict over its gated metrics and its accuracy comparison (if any)."""
    return worst([*metric_verdicts, *([accuracy_verdict] if accuracy_verdict else [])])


def exit_code(status: str, verdict: str | None) -> int:
    """0 pass, 1 regressed, 3 inconclusive; 2 for an invalid verdict or an incomplete run."""
    if status != COMPLETE or verdict is None:
        return EXIT_FOR[INVALID]
    return EXIT_FOR[verdict]
