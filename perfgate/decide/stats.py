"""The numbers behind a verdict: intervals for the change between two arms, the test of a
change against its tolerance, multiplicity, error spending over looks, and power plans.

**Unit of replication: the server start.** On one GPU, starts of one vLLM build differed by
~9% in median TPOT while repeats on one start agreed to ~3%, and at concurrency 8 requests move
in lock-step waves, so requests are not independent either. Every metric is therefore reduced
to one value per server start (the start's median TPOT over its pooled requests, its p99, its
geometric-mean throughput over its repeats) and the arms are compared on those values:
Welch's t interval on the difference of mean logs (an interval for the ratio). A percentile of
a start is a per-start statistic like any other. Requests and repeats only make each start's
value more precise; they never narrow the between-start interval.

An arm with a single start has no start-to-start spread of its own. Borrowing the other arm's
(a pooled t) once gave a 1-degree-of-freedom interval that called noise a +16% regression, so
perfgate does not: such a comparison is unbounded, unless the user supplies a calibrated
between-start CV (from stored A/A runs), used as a known spread with its own degrees of freedom.

**Tests against the tolerance.** ``p_worse_than`` is the one-sided p-value of H0 "the change in
the bad direction is at most the tolerance" (the margin, on the log scale). Over a run's
family of gated metrics and accuracy, ``holm_adjusted`` (Holm 1979, step-down) keeps the
family-wise false-fail rate at most alpha with no assumption on how the metrics correlate.

**Looks.** A run with a budget looks after every round from the second. ``look_share`` splits
alpha over the looks in the manner of Haybittle (1971) and Peto et al. (1976): interim looks at
a stringent level (together 20% of alpha), the final look at nearly the nominal one. Each
look uses only its share, so by the union bound over looks the error stays within alpha
under any stopping rule (the exact group-sequential boundaries assume a known variance, which
these few starts never have; the union bound needs no such assumption). An alpha-spending
function that spends evenly (Lan-DeMets, Pocock-type) was tried first: under the union bound
its final look kept a quarter of alpha, and a budget of 8 starts decided "no change" in half
as many A/A runs as a fixed design of 8 (benchmarks/decision_rule.py).

**Plans.** ``starts_plan``: starts per arm that would tell no change from a change of the
tolerance at 90% power, at the measured between-start spread and at the ends of that spread's
80% interval (chi-square): the measured spread from 2-4 starts is itself uncertain by a factor
of two or more, so the plan says so instead of trusting its point estimate.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from perfgate.documents.compare import Interval


def statistic(kind: str) -> Callable[..., Any]:
    """'mean', 'median' or 'pNN' -> ``f(array, axis=None)``."""
    if kind == "mean":
        return lambda a, axis=None: np.mean(a, axis=axis)
    if kind == "median":
        return lambda a, axis=None: np.median(a, axis=axis)
    if kind.startswith("p"):
        q = float(kind[1:])
        return lambda a, axis=None: np.percentile(a, q, axis=axis)
    raise ValueError(f"unknown statistic {kind!r}")


def _logs(
    baseline: Sequence[float], candidate: Sequence[float]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Both arms' values as logs, or None when an arm is empty or holds a value <= 0 / NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.log(np.asarray(baseline, dtype=float))
        c = np.log(np.asarray(candidate, dtype=float))
    if b.size == 0 or c.size == 0 or not (np.all(np.isfinite(b)) and np.all(np.isfinite(c))):
        return None
    return b, c


def t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t with ``df`` degrees of freedom (normal for inf); scipy's
    special functions, which the simulations in benchmarks/ call millions of times."""
    return float(special.ndtri(q) if math.isinf(df) else special.stdtrit(df, q))


def t_sf(x: float, df: float) -> float:
    """Upper tail of Student's t (normal for inf)."""
    return float(special.ndtr(-x) if math.isinf(df) else special.stdtr(df, -x))


def _quantile(confidence: float, df: float) -> float:
    q = 0.5 + confidence / 2
    return t_ppf(q, df)


def _interval(d: float, se: float, df: float, confidence: float, method: str) -> Interval:
    """The interval ``d +- q * se`` on the log scale, as a relative difference."""
    e = math.expm1(d)
    if se == 0:
        return Interval(e, e, e, 0.0 if d else 1.0, method, df, confidence, 0.0)
    if not math.isfinite(se):
        return Interval(e, -math.inf, math.inf, math.nan, method, df, confidence, math.inf)
    q = _quantile(confidence, df)
    z = abs(d) / se
    p = 2 * t_sf(z, df)
    return Interval(
        e, math.expm1(d - q * se), math.expm1(d + q * se), p, method, df, confidence, se
    )


def welch_log_ratio(
    baseline: Sequence[float], candidate: Sequence[float], *, confidence: float = 0.95
) -> Interval:
    """Welch's t interval for the ratio of geometric means (one value per server start), as a
    relative difference; unbounded when an arm has a single value."""
    logs = _logs(baseline, candidate)
    if logs is None:
        return Interval(math.nan, math.nan, math.nan, math.nan, "welch-log")
    b, c = logs
    d = float(c.mean() - b.mean())
    if b.size < 2 or c.size < 2:
        return _interval(d, math.inf, math.nan, confidence, "welch-log (one start in an arm)")
    vb, vc = float(b.var(ddof=1)) / b.size, float(c.var(ddof=1)) / c.size
    se = math.sqrt(vb + vc)
    df = (vb + vc) ** 2 / (vb**2 / (b.size - 1) + vc**2 / (c.size - 1)) if se > 0 else math.inf
    return _interval(d, se, df, confidence, "welch-log")


CONFOUNDED = "confounded: arm and GPU coincide"


def blocked_log_ratio(
    baseline: Sequence[float],
    candidate: Sequence[float],
    blocks: tuple[Sequence[str], Sequence[str]],
    *,
    confidence: float = 0.95,
) -> Interval:
    """The ratio of the arms' values with a block effect in the model: least squares of the
    log values on an intercept, the arm, and one indicator per block but the first (each
    start's GPU, when the arms ran in parallel on two GPUs and swapped them every round), t
    interval with n - p degrees of freedom. Falls back to Welch when the blocks do not vary,
    do not match the values, or leave no degree of freedom; when the arm and the blocks
    coincide (every baseline start on one GPU, every candidate start on the other) the
    change cannot be told from the GPUs' difference: an unbounded interval, method
    CONFOUNDED, never a Welch interval that would credit the GPU's difference to the arm."""
    logs = _logs(baseline, candidate)
    labels = [*blocks[0], *blocks[1]]
    if logs is None or len(labels) != len(baseline) + len(candidate):
        return welch_log_ratio(baseline, candidate, confidence=confidence)
    b, c = logs
    levels = sorted(set(labels))
    if len(levels) < 2:
        return welch_log_ratio(baseline, candidate, confidence=confidence)
    y = np.concatenate([b, c])
    x = np.column_stack(
        [
            np.ones(y.size),
            np.r_[np.zeros(b.size), np.ones(c.size)],
            *[[1.0 if lab == lev else 0.0 for lab in labels] for lev in levels[1:]],
        ]
    )
    n, p = x.shape
    if np.linalg.matrix_rank(x) < p and np.linalg.matrix_rank(np.delete(x, 1, axis=1)) == p - 1:
        d = float(c.mean() - b.mean())  # the arm lies in the blocks' span: confounded
        return Interval(math.expm1(d), -math.inf, math.inf, math.nan, CONFOUNDED, math.nan,
                        confidence, math.inf)  # fmt: skip
    if n - p < 1 or np.linalg.matrix_rank(x) < p:
        return welch_log_ratio(baseline, candidate, confidence=confidence)
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ beta
    s2 = float(resid @ resid) / (n - p)
    se = math.sqrt(s2 * float(np.linalg.inv(x.T @ x)[1, 1]))
    return _interval(float(beta[1]), se, float(n - p), confidence, "ols-log (GPU as block)")


def welch_difference(
    baseline: Sequence[float], candidate: Sequence[float], *, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(mean difference candidate - baseline, low, high): Welch's t interval on the raw scale,
    for quantities that can be zero in an arm (a kernel's time per step where it never ran);
    unbounded with one value in an arm, NaN with none."""
    b, c = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    if b.size == 0 or c.size == 0 or not (np.isfinite(b).all() and np.isfinite(c).all()):
        return math.nan, math.nan, math.nan
    d = float(c.mean() - b.mean())
    if b.size < 2 or c.size < 2:
        return d, -math.inf, math.inf
    vb, vc = float(b.var(ddof=1)) / b.size, float(c.var(ddof=1)) / c.size
    se = math.sqrt(vb + vc)
    if se == 0:
        return d, d, d
    df = (vb + vc) ** 2 / (vb**2 / (b.size - 1) + vc**2 / (c.size - 1))
    q = _quantile(confidence, df)
    return d, d - q * se, d + q * se


def calibrated_log_ratio(
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    cv: float,
    df: float,
    confidence: float = 0.95,
) -> Interval:
    """The interval when start-to-start spread was not sampled in an arm, from a calibrated
    between-start ``cv`` (log-scale SD of one start's value, measured on stored A/A runs with
    ``df`` degrees of freedom): ``se = cv * sqrt(1/n_b + 1/n_c)``, t quantile with ``df``."""
    logs = _logs(baseline, candidate)
    if logs is None:
        return Interval(math.nan, math.nan, math.nan, math.nan, "calibrated start noise")
    b, c = logs
    se = cv * math.sqrt(1 / b.size + 1 / c.size)
    return _interval(float(c.mean() - b.mean()), se, df, confidence, "calibrated start noise")


def margin_log(tolerance: float, higher_is_better: bool) -> float:
    """The tolerance as a change of the log ratio in the bad direction: a ratio above
    ``1 + tol`` (lower is better) or below ``1 - tol`` (higher is better)."""
    if higher_is_better:
        return -math.log1p(-tolerance) if tolerance < 1 else math.inf
    return math.log1p(tolerance)


def p_worse_than(interval: Interval, tolerance: float, *, higher_is_better: bool) -> float:
    """One-sided p-value of H0 "worse by at most the tolerance" against H1 "worse by more"
    (a test against the margin, not against zero). NaN when the change is unknown; 1 when
    the interval is unbounded."""
    d = interval.log_ratio
    if math.isnan(d) or math.isnan(interval.se):
        return math.nan
    worse = -d if higher_is_better else d
    margin = margin_log(tolerance, higher_is_better)
    if not math.isfinite(interval.se) or math.isinf(margin):
        return 1.0
    if interval.se == 0:
        return 0.0 if worse > margin else 1.0
    z = (worse - margin) / interval.se
    return t_sf(z, interval.df)


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: reject hypothesis i at family-wise level alpha when
    its adjusted p is below alpha. A NaN p-value (not tested) counts as 1 in the family."""
    p = [1.0 if math.isnan(x) else float(x) for x in p_values]
    m = len(p)
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: p[j])):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


# The share of alpha all interim looks of a budget may spend together; the final look keeps
# the rest (at least 80%).
INTERIM_SHARE = 0.2


def look_share(starts: int, first: int, most: int, *, final: bool = False) -> float:
    """The share of alpha a look after ``starts`` starts per arm may use, looks running from
    ``first`` to ``most`` starts: a Haybittle-Peto-type split. The interim looks (``first`` to
    ``most - 1``) share ``INTERIM_SHARE`` equally, so they stop a run only on clear evidence
    (a gross regression, a change far inside the tolerance); the final look (``most``, or the
    last the budget allows: ``final``) takes everything the looks before it left, 80% or more.
    With the union bound over looks the total is alpha whatever the data, so stopping early
    when decided keeps the error rate."""
    per_look = INTERIM_SHARE / max(1, most - first)
    before = max(0, starts - first) * per_look
    if final or starts >= most:
        return 1.0 - before
    return per_look


def between_unit_cv(baseline: Sequence[float], candidate: Sequence[float]) -> float:
    """How much the per-start values spread around their arm's mean, pooled over both arms, on
    the log scale: about the coefficient of variation between starts. NaN with no degree of
    freedom left (one start per arm)."""
    return pooled_log_sd(baseline, candidate)[0]


def pooled_log_sd(baseline: Sequence[float], candidate: Sequence[float]) -> tuple[float, int]:
    """(pooled log-scale SD of the per-start values, its degrees of freedom)."""
    logs = _logs(baseline, candidate)
    if logs is None:
        return math.nan, 0
    b, c = logs
    df = b.size + c.size - 2
    if df < 1:
        return math.nan, 0
    ss = float(((b - b.mean()) ** 2).sum() + ((c - c.mean()) ** 2).sum())
    return math.sqrt(ss / df), df


def min_detectable_change(interval: Interval, power: float = 0.8) -> float:
    """The smallest relative change a run with this interval detects with ``power``: its
    standard error times the quantiles of the confidence and of the power (t with the
    interval's degrees of freedom, or normal). NaN for an unbounded or undefined interval."""
    se = interval.se
    if not (math.isfinite(se) and se > 0):
        return math.nan
    df = interval.df
    t_q = _quantile(interval.confidence, df)
    t_p = t_ppf(power, df)
    return math.expm1((t_q + t_p) * se)


@dataclass(frozen=True)
class Plan:
    """Starts per arm to tell no change from a change of the tolerance: at the measured
    between-start spread (``starts``), and at the low and high ends of that spread's 80%
    interval (``low``, ``high``). None: more than ``cap`` starts, or no spread measured."""

    starts: int | None
    low: int | None
    high: int | None


@functools.lru_cache(maxsize=4096)
def _t_ppf(q: float, df: int) -> float:
    return t_ppf(q, df)


def starts_for(sd: float, margin: float, *, alpha: float, power: float, cap: int) -> int | None:
    """The smallest n per arm at which Welch's test of a change at the margin against none
    has ``power`` at one-sided level ``alpha`` (t with 2n - 2 degrees of freedom)."""
    if not (sd > 0 and margin > 0 and math.isfinite(sd)):
        return None
    if math.isinf(margin):
        return 2

    def enough(n: int) -> bool:
        q = _t_ppf(1 - alpha, 2 * n - 2) + _t_ppf(power, 2 * n - 2)
        return q * sd * math.sqrt(2 / n) <= margin

    # the normal approximation is a lower bound (t quantiles exceed normal ones): step up
    z = t_ppf(1 - alpha, math.inf) + t_ppf(power, math.inf)
    n = max(2, math.ceil(2 * (z * sd / margin) ** 2))
    if n > cap:
        return None
    step = 1
    while not enough(n):
        if n >= cap:
            return None
        low, n = n, min(cap, n + step)
        step *= 2
        if enough(n):
            while low + 1 < n:  # the smallest enough n in (low, n]
                mid = (low + n) // 2
                low, n = (low, mid) if enough(mid) else (mid, n)
            return n
    return n


def starts_plan(
    sd: float,
    df: int,
    margin: float,
    *,
    alpha: float = 0.025,
    power: float = 0.9,
    cap: int = 10_000,
) -> Plan:
    """How many starts per arm would decide, with the uncertainty of the spread it assumes."""
    if not (df >= 1 and sd > 0 and math.isfinite(sd)):
        return Plan(None, None, None)
    lo_sd = sd * math.sqrt(df / float(special.chdtri(df, 0.10)))  # chi2 upper 10% point
    hi_sd = sd * math.sqrt(df / float(special.chdtri(df, 0.90)))  # lower 10% point
    return Plan(
        starts_for(sd, margin, alpha=alpha, power=power, cap=cap),
        starts_for(lo_sd, margin, alpha=alpha, power=power, cap=cap),
        starts_for(hi_sd, margin, alpha=alpha, power=power, cap=cap),
    )


# A look needs two starts per arm: below that no spread is sampled.
FIRST_LOOK = 2
