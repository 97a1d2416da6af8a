"""The gate over a run's whole family of tests: every gated metric and accuracy together.

Each gated metric's regression test ("worse by more than its tolerance", one-sided, against
the margin) and accuracy's ("a drop larger than max_drop") are one family. Holm's step-down
procedure over the family at the run's ``alpha`` decides which may say ``regressed``, so the
chance that a run of identical arms fails is at most alpha in all, not alpha per metric
(with five metrics and accuracy each tested alone, about 7-8% of A/A runs failed). A metric
whose interval lies beyond its tolerance but which Holm does not reject is ``inconclusive``.

Primary metrics (``[compare] primary``; every gated metric when none is named) and accuracy
must each be decided for a pass: an inconclusive one makes the run inconclusive. A secondary
metric is a **guard**: it fails the gate only through Holm, but a guard left inconclusive (its
estimate beyond its tolerance without significance, or its interval still reaching past the
tolerance) holds a pass back too: the run is inconclusive, "guards unverified", and a budget
keeps adding starts until the guards are decided. (A kernel change decided on GPU time per
step with a host-side regression of +10-30% in end-to-end TPOT passed 70-96% of simulated runs
when undecided guards did not count: docs/statistics.md, "Guards".) A row taken out of the
gate (ITL on a bursty repeat: no one-sided test, ``p_regress`` NaN) holds nothing back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from perfgate.decide import stats, verdict
from perfgate.documents.compare import (
    IMPROVED,
    INCONCLUSIVE,
    NO_CHANGE,
    REGRESSED,
    AccuracyComparison,
    MetricComparison,
)


def apply(
    rows: Sequence[MetricComparison],
    accuracy: AccuracyComparison | None,
    *,
    alpha: float,
    pending: int = 0,
    accuracy_alpha: float | None = None,
) -> tuple[list[MetricComparison], AccuracyComparison | None]:
    """The rows and accuracy with Holm-adjusted p-values and family-wise verdicts.
    ``pending``: tests of the family not run yet (accuracy, at a look before it is
    measured); they count in the family's size. ``accuracy_alpha`` (a budgeted run):
    accuracy is tested once, at that level, wherever the run stops, and the rows' Holm keeps
    its slot pending as at every look (see ``accuracy_share``)."""
    alone = accuracy_alpha is not None and accuracy is not None
    p = [r.p_regress for r in rows]
    if accuracy is not None and not alone:
        p.append(accuracy.p_margin)
    p += [float("nan")] * (pending + alone)
    adjusted = stats.holm_adjusted(p)
    m = len(p)
    why = (
        f"beyond the tolerance, but not significant over the run's {m} gated tests "
        f"(Holm-adjusted p = {{:.3g}} >= alpha {alpha:.3g})"
    )
    # "improved" under the same control: each metric's one-sided p of "no gain" (its
    # interval excludes 0 on the better side at alpha / 2), Holm over the metrics
    better = stats.holm_adjusted([_p_no_gain(r) for r in rows])
    out = []
    for row, adj, adj_better in zip(rows, adjusted, better, strict=False):
        if row.verdict == REGRESSED and not adj < alpha:
            row = replace(row, verdict=INCONCLUSIVE, reason=why.format(adj))
        if row.verdict == IMPROVED and not adj_better < alpha / 2:
            row = replace(
                row,
                verdict=NO_CHANGE,
                reason=f"better on its own, not significant over the run's {len(rows)} gated "
                f"metrics (Holm-adjusted p = {adj_better:.3g} >= {alpha / 2:.3g})",
            )
        out.append(replace(row, p_adjusted=adj, detectable_regression=_detectable(row, alpha / m)))
    if accuracy is not None and accuracy_alpha is not None:
        full = accuracy_alpha * m  # the family's alpha, of which accuracy holds 1 / m
        adj = min(1.0, accuracy.p_margin * m) if math.isfinite(accuracy.p_margin) else math.nan
        if accuracy.verdict == REGRESSED and not accuracy.p_margin < accuracy_alpha:
            accuracy = replace(accuracy, verdict=INCONCLUSIVE)
        accuracy = replace(
            accuracy,
            p_adjusted=adj,
            adjusted_by=f"tested once at alpha / {m} of the run's {full:.3g}, wherever a "
            "budgeted run stops (Bonferroni)",
        )
    elif accuracy is not None:
        adj = adjusted[len(rows)]
        if accuracy.verdict == REGRESSED and not adj < alpha:
            accuracy = replace(accuracy, verdict=INCONCLUSIVE)
        accuracy = replace(accuracy, p_adjusted=adj)
    return out, accuracy


def accuracy_share(alpha: float, rows: int) -> float:
    """The level a budgeted run tests accuracy at: alpha / (rows + 1). Accuracy is measured
    once and tested once, when the run stops. Every look's Holm counts it as a pending member
    of rows + 1 tests, so the timed metrics spend at most rows / (rows + 1) of each look's
    share (Holm's first step with one null never rejected), and at most that of alpha over
    all looks: the 1 / (rows + 1) left is accuracy's, whichever look stops the run. Testing
    it at the stopping look's share instead (2% of alpha at an interim look) would make a
    real drop inconclusive after an early stop."""
    return alpha / (rows + 1)


def _detectable(row: MetricComparison, alpha: float, power: float = 0.8) -> float:
    """The smallest regression (relative, in the bad direction) that the one-sided test
    against the tolerance rejects at ``alpha`` with ``power``: margin + (t_alpha + t_power)
    x se on the log scale. NaN without a standard error."""
    if row.se is None or not (math.isfinite(row.se) and row.se > 0):
        return math.nan
    df = _df(row)
    reach = stats.margin_log(row.tolerance, row.higher_is_better) + row.se * (
        stats.t_ppf(1 - alpha, df) + stats.t_ppf(power, df)
    )
    return -math.expm1(-reach) if row.higher_is_better else math.expm1(reach)


def _p_no_gain(row: MetricComparison) -> float:
    """One-sided p-value of "not better" for a row's change (NaN when unknown)."""
    if row.se is None or not (row.se > 0) or row.estimate is None or not row.estimate > -1:
        return math.nan
    d = math.log1p(row.estimate)
    gain = d if row.higher_is_better else -d
    return stats.t_sf(gain / row.se, _df(row))


def _df(row: MetricComparison) -> float:
    """A row's degrees of freedom; a normal interval's (or an unknown) as infinity."""
    return row.df if row.df and row.df > 0 else math.inf


def holds_back(row: MetricComparison) -> bool:
    """Whether an undecided row keeps the run from passing: a primary metric, or a guard that
    was tested (not one taken out of the gate)."""
    tested = row.p_regress is not None and not math.isnan(row.p_regress)  # stored NaN: None
    return row.verdict == INCONCLUSIVE and (row.primary or tested)


def unverified_guards(rows: Sequence[MetricComparison]) -> list[MetricComparison]:
    """The guards (secondary metrics) that hold a pass back."""
    return [r for r in rows if not r.primary and holds_back(r)]


def overall(rows: Sequence[MetricComparison], accuracy: AccuracyComparison | None) -> str:
    """The run's verdict: invalid if anything could not be measured, regressed if any test
    (primary or not) survived Holm, inconclusive if a primary metric, a guard or accuracy is
    undecided, else pass."""
    counted = [r.verdict for r in rows if r.verdict != INCONCLUSIVE or holds_back(r)]
    return verdict.overall(counted, accuracy.verdict if accuracy is not None else None)


def decided(rows: Sequence[MetricComparison]) -> bool:
    """Whether a look may stop adding starts: the timed metrics' verdict is no longer
    inconclusive (a regression survived Holm, or every primary metric is decided)."""
    return overall(rows, None) != INCONCLUSIVE
