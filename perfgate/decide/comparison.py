"""From two arms' repeats to per-metric changes, intervals and (before multiplicity) verdicts.

Input is plain data: each arm's list of repeats (each with its request records, run-level
metrics, and ``start``: which of the arm's server starts it ran on).

The unit is the **server start** (see ``perfgate.decide.stats``): each metric becomes one value
per start (a request-level statistic over the start's pooled requests; a run-level metric's
geometric mean over the start's repeats), and Welch's t interval on those values' logs gives
the change. Both arms need two or more starts; with one start in an arm the interval is
unbounded (verdict inconclusive, "start-to-start variation unsampled") unless the scenario
supplies a calibrated between-start CV for the metric. ``perfgate.decide.family`` then applies
the family-wise rule over all gated metrics and accuracy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from perfgate import registry
from perfgate.decide import stats, verdict
from perfgate.documents.compare import INCONCLUSIVE, MetricComparison, StartNoise
from perfgate.documents.records import RequestRecord
from perfgate.documents.spec import Threshold
from perfgate.registry import PerRequest


class Measured(Protocol):
    """One repeat of one arm, as the comparison reads it (``run.state.Repeat`` in a run)."""

    @property
    def records(self) -> Sequence[RequestRecord]: ...

    @property
    def metrics(self) -> Mapping[str, Any]: ...

    @property
    def start(self) -> int | None:  # which of the arm's server starts; None: not recorded
        ...


@dataclass(frozen=True)
class RepeatData:
    """A ``Measured`` made of plain values (simulations, tests)."""

    records: Sequence[RequestRecord]
    metrics: Mapping[str, Any]
    start: int | None = None


def request_values(docs: Sequence[Measured], fn: PerRequest) -> list[list[np.ndarray]]:
    """repeats -> successful measured requests -> that request's values (``fn``)."""
    out = []
    for doc in docs:
        reqs = []
        for r in doc.records:
            if r.warmup or not r.ok:
                continue
            values = fn(r)
            if values:
                reqs.append(np.asarray(values, dtype=float))
        out.append(reqs)
    return out


def _as_float(v: Any) -> float:
    return math.nan if v is None else float(v)


def group_by_start(starts: Sequence[int | None]) -> list[list[int]]:
    """Indices of repeats grouped by the server start they ran on; a repeat whose start is
    not recorded is a unit of its own."""
    groups: dict[Any, list[int]] = {}
    for i, start in enumerate(starts):
        groups.setdefault(("repeat", i) if start is None else start, []).append(i)
    return list(groups.values())


def _units(docs: Sequence[Measured]) -> list[list[Measured]]:
    return [[docs[i] for i in group] for group in group_by_start([d.start for d in docs])]


def start_values(
    threshold: Threshold,
    docs: Sequence[Measured],
    windows: Sequence[Mapping[str, float]] = (),
) -> list[float]:
    """One value of the metric per server start of one arm; a window-level metric's from the
    arm's profiled windows (``windows``: each start's figures; none -> no value)."""
    metric = registry.get(threshold.metric)
    if metric.from_window:
        return [_as_float(w.get(threshold.metric)) for w in windows]
    units = _units(docs)
    if metric.per_request is None:
        return [_geomean([_as_float(d.metrics.get(threshold.metric)) for d in u]) for u in units]
    stat = stats.statistic(str(metric.statistic))
    return [_pooled_stat(request_values(u, metric.per_request), stat) for u in units]


def compare_metric(
    threshold: Threshold,
    baseline: Sequence[Measured],
    candidate: Sequence[Measured],
    *,
    confidence: float,
    noise: StartNoise | None = None,
    primary: bool = True,
    plan_confidence: float | None = None,
    windows: tuple[Sequence[Mapping[str, float]], Sequence[Mapping[str, float]]] = ((), ()),
    blocks: tuple[Sequence[str], Sequence[str]] | None = None,
) -> MetricComparison:
    return compare_values(
        threshold,
        start_values(threshold, baseline, windows[0]),
        start_values(threshold, candidate, windows[1]),
        confidence=confidence,
        noise=noise,
        primary=primary,
        plan_confidence=plan_confidence,
        blocks=blocks,
    )


def compare_values(
    threshold: Threshold,
    b: Sequence[float],
    c: Sequence[float],
    *,
    confidence: float,
    noise: StartNoise | None = None,
    primary: bool = True,
    plan_confidence: float | None = None,
    blocks: tuple[Sequence[str], Sequence[str]] | None = None,
) -> MetricComparison:
    """The comparison of one metric from its per-start values (``b``, ``c``): what a run
    computes from its repeats, and what the simulations in benchmarks/ feed directly.
    ``confidence`` is this analysis's (below the scenario's at a look of a budget);
    ``plan_confidence`` (default: the same) the one a re-run with the plan would use;
    ``blocks`` each start's GPU when the arms ran in parallel on two (a block effect in the
    model: ``stats.blocked_log_ratio``)."""
    metric = registry.get(threshold.metric)
    sampled = min(len(b), len(c)) >= 2
    cv = None if sampled or noise is None else noise.cv.get(threshold.metric)
    if cv is not None and noise is not None:  # (noise is set whenever cv is)
        iv = stats.calibrated_log_ratio(b, c, cv=cv, df=noise.df, confidence=confidence)
    elif blocks is not None and sampled:
        iv = stats.blocked_log_ratio(b, c, blocks, confidence=confidence)
    else:
        iv = stats.welch_log_ratio(b, c, confidence=confidence)
    d = verdict.decide(iv, higher_is_better=metric.higher_is_better, tolerance=threshold.tolerance)
    sd, sd_df = stats.pooled_log_sd(b, c)
    reason = None
    plan = stats.Plan(None, None, None)
    if d == INCONCLUSIVE:
        if iv.method == stats.CONFOUNDED:
            reason = (
                "confounded: every start of one arm ran on one GPU and every start of the "
                "other on the other, so the change cannot be told from the GPUs' difference "
                "(swap the GPUs every round: parallel_gpus)"
            )
        elif not sampled and cv is None:
            reason = (
                "start-to-start variation unsampled: an arm had one server start (give each "
                "arm two or more, or a calibrated start_noise for this metric)"
            )
        plan = stats.starts_plan(
            sd,
            sd_df,
            stats.margin_log(threshold.tolerance, metric.higher_is_better),
            alpha=(1 - (plan_confidence or confidence)) / 2,
        )
    return MetricComparison(
        metric=threshold.metric,
        label=metric.label,
        higher_is_better=metric.higher_is_better,
        tolerance=threshold.tolerance,
        baseline=_geomean(list(b)),
        candidate=_geomean(list(c)),
        estimate=iv.estimate,
        low=iv.low,
        high=iv.high,
        p_value=iv.p_value,
        method=iv.method,
        verdict=d,
        n_baseline=len(b),
        n_candidate=len(c),
        starts_sampled=sampled or cv is not None,
        cv_between_units=sd,
        min_detectable=stats.min_detectable_change(iv),
        se=iv.se,
        df=iv.df,
        confidence=confidence,
        p_regress=stats.p_worse_than(
            iv, threshold.tolerance, higher_is_better=metric.higher_is_better
        ),
        primary=primary,
        reason=reason,
        starts_to_decide=plan.starts,
        starts_to_decide_low=plan.low,
        starts_to_decide_high=plan.high,
        values_baseline=tuple(float(v) for v in b),
        values_candidate=tuple(float(v) for v in c),
    )


def _geomean(values: list[float]) -> float:
    if not values or any(not (v > 0) for v in values):
        return math.nan
    return float(math.exp(statistics.fmean(math.log(v) for v in values)))


def _pooled_stat(repeats: list[list[np.ndarray]], stat: Callable[..., Any]) -> float:
    """A per-request statistic of one unit: computed over each repeat's requests, then the
    geometric mean over the unit's repeats. Never pooled across repeats: a running server's
    (url) arm is one unit holding every round's repeats, and a p99 over all of them would
    sit above the per-start p99s of the other arm (+8.9% between identical builds)."""
    values = [float(stat(np.concatenate(reqs))) for reqs in repeats if reqs]
    return _geomean(values) if values else math.nan


def compare(
    thresholds: Sequence[Threshold],
    baseline: Sequence[Measured],
    candidate: Sequence[Measured],
    *,
    confidence: float = 0.95,
    noise: StartNoise | None = None,
    primary: Iterable[str] | None = None,
    plan_confidence: float | None = None,
    windows: tuple[Sequence[Mapping[str, float]], Sequence[Mapping[str, float]]] = ((), ()),
    blocks: tuple[Sequence[str], Sequence[str]] | None = None,
) -> list[MetricComparison]:
    """Every gated metric; ``primary`` names the primary ones (None: all); ``windows``: each
    arm's per-start profiled-window figures (for window-level metrics)."""
    chosen = None if primary is None else set(primary)
    return [
        compare_metric(
            t,
            baseline,
            candidate,
            confidence=confidence,
            noise=noise,
            primary=chosen is None or t.metric in chosen,
            plan_confidence=plan_confidence,
            windows=windows,
            blocks=blocks,
        )
        for t in thresholds
    ]
