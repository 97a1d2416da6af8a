"""Before a run: can its design decide each gated metric at the noise it expects?

From a scenario's calibrated between-start noise (``[compare] start_noise``: the CV of one
start's value, from stored A/A runs) and the most starts per arm its design allows, each gated
metric gets the starts per arm that would decide it (90% power to call an unchanged build "no
change" against its tolerance, at the final look's share of alpha; ``stats.starts_for``) and
the smallest tolerance those starts can decide. A tolerance below that is said before any
server starts ("median TPOT at 1% needs ~140 starts per arm at 9% noise; the design allows
8"), and refused under ``--strict``. A metric without calibrated noise is reported unchecked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from perfgate import registry
from perfgate.decide import stats
from perfgate.documents.spec import Threshold

POWER = 0.9  # as the plans of an inconclusive run (stats.starts_plan)
CAP = 10_000


@dataclass(frozen=True)
class Decidability:
    metric: str
    label: str
    tolerance: float
    cv: float | None  # calibrated between-start CV; None: not calibrated
    starts_allowed: int
    starts_needed: int | None  # None: more than CAP, or unknown without a CV
    smallest: float | None  # the smallest tolerance the allowed starts decide

    @property
    def checked(self) -> bool:
        return self.cv is not None

    @property
    def decidable(self) -> bool:
        return self.starts_needed is not None and self.starts_needed <= self.starts_allowed

    def message(self) -> str:
        tol = f"{self.tolerance * 100:g}%"
        if self.cv is None:
            return (
                f"{self.label} at {tol}: not checked (no calibrated start_noise for {self.metric})"
            )
        noise = f"{self.cv * 100:.2g}% noise"
        need = f"~{self.starts_needed}" if self.starts_needed is not None else f">{CAP}"
        smallest = "n/a" if self.smallest is None else f"{self.smallest * 100:.2g}%"
        if self.decidable:
            return (
                f"{self.label} at {tol}: decidable ({need} starts per arm at {noise}; the "
                f"design allows {self.starts_allowed}, enough for tolerances down to "
                f"{smallest})"
            )
        return (
            f"{self.label} at {tol} needs {need} starts per arm at {noise}; the design allows "
            f"{self.starts_allowed} (smallest decidable tolerance {smallest})"
        )


def smallest_tolerance(cv: float, starts: int, *, alpha: float, higher_is_better: bool) -> float:
    """The tolerance that ``starts`` per arm decide at ``POWER`` for between-start CV ``cv``
    (the inverse of ``stats.starts_for``), as a relative change in the bad direction."""
    if starts < 2:
        return math.inf
    df = 2 * starts - 2
    margin = (stats.t_ppf(1 - alpha, df) + stats.t_ppf(POWER, df)) * cv * math.sqrt(2 / starts)
    return -math.expm1(-margin) if higher_is_better else math.expm1(margin)


def check(
    thresholds: Sequence[Threshold],
    cv: Mapping[str, float],
    *,
    starts_allowed: int,
    alpha: float,
) -> list[Decidability]:
    """Each gated metric's decidability. ``alpha``: the one-sided level of the final analysis
    (half of 1 - confidence, times the final look's share under a budget)."""
    out = []
    for t in thresholds:
        metric = registry.get(t.metric)
        noise = cv.get(t.metric)
        needed = smallest = None
        if noise is not None:
            margin = stats.margin_log(t.tolerance, metric.higher_is_better)
            needed = stats.starts_for(noise, margin, alpha=alpha, power=POWER, cap=CAP)
            smallest = smallest_tolerance(
                noise, starts_allowed, alpha=alpha, higher_is_better=metric.higher_is_better
            )
        out.append(
            Decidability(
                metric=t.metric,
                label=metric.label,
                tolerance=t.tolerance,
                cv=noise,
                starts_allowed=starts_allowed,
                starts_needed=needed,
                smallest=smallest,
            )
        )
    return out
