"""Verdicts and exit codes: the rule for one metric, the rule for accuracy, the family-wise
gate over both, and how a run's status and verdict become an exit code. Nothing else decides.

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

``family`` then keeps a ``regressed`` only where Holm's procedure over every gated metric and
accuracy rejects "worse by at most the tolerance" at the run's alpha: the run's false-fail rate
over its whole family is at most alpha, however the metrics correlate. Primary metrics (all
gated ones unless the scenario names some) must each be decided for a pass; a secondary one
that is inconclusive is reported, and fails the gate only through that procedure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from perfgate.documents.compare import (
    IMPROVED,
    INCONCLUSIVE,
    INVALID,
    NO_CHANGE,
    PASS,
    REGRESSED,
    Interval,
)


def decide(interval: Interval, *, higher_is_better: bool, tolerance: float) -> str:
    """One metric's verdict from the interval of its relative change (before multiplicity)."""
    if higher_is_better:
        lo, hi = -interval.high, -interval.low
    else:
        lo, hi = interval.low, interval.high
    if any(math.isnan(x) for x in (interval.estimate, lo, hi)):
        return INVALID
    if lo > tolerance:
        return REGRESSED
    if hi < 0:
        return IMPROVED
    if hi <= tolerance:
        return NO_CHANGE
    return INCONCLUSIVE


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
