"""Confidence intervals for the relative difference between two arms, and the verdict rule.

Two kinds of metric, two methods:

- **Request-level** (TTFT, TPOT, E2EL per request; ITL gaps per request): a two-stage
  (hierarchical) bootstrap. Each resample draws the arm's repeats with replacement, then each
  drawn repeat's requests with replacement, pools them and computes the statistic (median,
  p99, mean). Drawing repeats captures run-to-run variation (server restarts, machine state);
  drawing requests captures request-to-request variation. The interval is the percentile
  interval of ``stat(candidate) / stat(baseline) - 1`` over the resamples.
- **Run-level** (throughputs, one value per repeat): Welch's t interval on the difference of
  mean log values, so it is an interval for the ratio; it needs at least two repeats per arm.

With two or three repeats the bootstrap's view of run-to-run spread is thin (resampling two
repeats understates their variance by half), so for request-level metrics perfgate also
computes Welch's interval on the per-repeat statistics and keeps the envelope of the two
(``envelope``): wider, never narrower, than either. Its coverage is at least each one's.

The verdict is a non-inferiority rule on the change in the bad direction, ``worse`` (positive =
worse), with tolerance ``tol`` and the interval ``[lo, hi]``:

- ``regressed``    lo > tol           (worse than the tolerance, and significantly so)
- ``improved``     hi < 0             (significantly better)
- ``no change``    hi <= tol          (a regression beyond the tolerance is ruled out)
- ``inconclusive`` otherwise          (the interval straddles the tolerance)

Identical arms regress only when ``lo > tol >= 0``: at most (1 - confidence) / 2 of the time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

Repeats = Sequence[Sequence[np.ndarray]]  # repeats -> requests -> values of that request


@dataclass(frozen=True)
class Interval:
    estimate: float  # relative difference candidate vs baseline (0.02 = candidate 2% higher)
    low: float
    high: float
    p_value: float
    method: str
    df: float = math.inf  # a t interval's degrees of freedom (inf: bootstrap / normal)
    confidence: float = 0.95


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


class _Arm:
    """One arm's repeats, flattened for fast resampling of whole requests."""

    def __init__(self, repeats: Repeats) -> None:
        self.repeats = []
        for reqs in repeats:
            lengths = np.array([len(r) for r in reqs], dtype=np.int64)
            values = np.concatenate([np.asarray(r, dtype=float) for r in reqs]) if reqs else None
            starts = np.concatenate(([0], np.cumsum(lengths)[:-1])) if len(lengths) else lengths
            self.repeats.append((values, lengths, starts))

    def matrix(self) -> np.ndarray | None:
        """(repeats, requests) when every request has one value and every repeat as many
        requests: then resampling vectorises."""
        if not self.repeats or any(v is None for v, _, _ in self.repeats):
            return None
        if any(np.any(lengths != 1) for _, lengths, _ in self.repeats):
            return None
        if len({len(lengths) for _, lengths, _ in self.repeats}) != 1:
            return None
        return np.stack([v for v, _, _ in self.repeats])  # type: ignore[misc]

    def resample_many(self, rng: np.random.Generator, count: int) -> np.ndarray | None:
        m = self.matrix()
        if m is None:
            return None
        r, n = m.shape
        reps = rng.integers(0, r, (count, r))
        reqs = rng.integers(0, n, (count, r, n))
        return m[reps[..., None], reqs].reshape(count, r * n)

    def pooled(self) -> np.ndarray:
        parts = [v for v, _, _ in self.repeats if v is not None]
        return np.concatenate(parts) if parts else np.array([])

    def resample(self, rng: np.random.Generator) -> np.ndarray:
        picks = rng.integers(0, len(self.repeats), len(self.repeats))
        out = []
        for k in picks:
            values, lengths, starts = self.repeats[k]
            if values is None or len(lengths) == 0:
                continue
            chosen = rng.integers(0, len(lengths), len(lengths))
            n = lengths[chosen]
            # indices of every value of every chosen request, without a Python loop
            offsets = np.repeat(starts[chosen] - np.concatenate(([0], np.cumsum(n)[:-1])), n)
            out.append(values[np.arange(n.sum()) + offsets])
        return np.concatenate(out) if out else np.array([])


def bootstrap_relative(
    baseline: Repeats,
    candidate: Repeats,
    kind: str,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Two-stage bootstrap interval for ``stat(candidate) / stat(baseline) - 1``."""
    stat = statistic(kind)
    base, cand = _Arm(baseline), _Arm(candidate)
    pooled_b, pooled_c = base.pooled(), cand.pooled()
    if pooled_b.size == 0 or pooled_c.size == 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, "bootstrap")
    sb = float(stat(pooled_b))
    if sb == 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, "bootstrap")
    estimate = float(stat(pooled_c)) / sb - 1
    rng = np.random.default_rng(seed)
    many_b, many_c = base.resample_many(rng, resamples), cand.resample_many(rng, resamples)
    if many_b is not None and many_c is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            diffs = stat(many_c, axis=1) / stat(many_b, axis=1) - 1
    else:
        diffs = np.empty(resamples)
        for i in range(resamples):
            b = float(stat(base.resample(rng)))
            diffs[i] = float(stat(cand.resample(rng))) / b - 1 if b != 0 else math.nan
    diffs = diffs[np.isfinite(diffs)]
    alpha = 1 - confidence
    low, high = np.percentile(diffs, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    below, above = np.mean(diffs <= 0), np.mean(diffs >= 0)
    p = min(1.0, 2 * min(below, above))
    return Interval(float(estimate), float(low), float(high), float(p), "two-stage bootstrap")


def _logs(
    baseline: Sequence[float], candidate: Sequence[float]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Both arms' values as logs, or None when an arm is empty or holds a value <= 0 / NaN."""
    b = np.log(np.asarray(baseline, dtype=float))
    c = np.log(np.asarray(candidate, dtype=float))
    if b.size == 0 or c.size == 0 or not (np.all(np.isfinite(b)) and np.all(np.isfinite(c))):
        return None
    return b, c


def _t_interval(
    b: np.ndarray, c: np.ndarray, *, equal_var: bool, confidence: float, method: str
) -> Interval:
    """The t interval (scipy's ``ttest_ind``) for the difference of mean logs ``c - b``, as
    a relative difference. No spread at all: the difference is exact."""
    d = float(c.mean() - b.mean())
    e = math.expm1(d)
    if float(((b - b.mean()) ** 2).sum() + ((c - c.mean()) ** 2).sum()) == 0:
        return Interval(e, e, e, 0.0 if d else 1.0, method)
    res = sps.ttest_ind(c, b, equal_var=equal_var)
    ci = res.confidence_interval(confidence_level=confidence)
    return Interval(
        e,
        math.expm1(float(ci.low)),
        math.expm1(float(ci.high)),
        float(res.pvalue),
        method,
        float(res.df),
        confidence,
    )


def welch_log_ratio(
    baseline: Sequence[float], candidate: Sequence[float], *, confidence: float = 0.95
) -> Interval:
    """Welch t interval for the ratio of geometric means, as a relative difference."""
    logs = _logs(baseline, candidate)
    if logs is None:
        return Interval(math.nan, math.nan, math.nan, math.nan, "welch-log")
    b, c = logs
    if b.size < 2 or c.size < 2:
        d = float(c.mean() - b.mean())
        return Interval(math.expm1(d), -math.inf, math.inf, math.nan, "welch-log (1 repeat)")
    return _t_interval(b, c, equal_var=False, confidence=confidence, method="welch-log")


def pooled_log_ratio(
    baseline: Sequence[float], candidate: Sequence[float], *, confidence: float = 0.95
) -> Interval:
    """Student's t interval on mean log values with one pooled variance: for an arm with a
    single unit (one server start), whose own spread is unknown, the other arm's spread
    stands for both (df = n_b + n_c - 2). Unbounded when neither arm has two units."""
    logs = _logs(baseline, candidate)
    if logs is None:
        return Interval(math.nan, math.nan, math.nan, math.nan, "pooled-t-log")
    b, c = logs
    if b.size + c.size - 2 < 1:
        d = float(c.mean() - b.mean())
        return Interval(math.expm1(d), -math.inf, math.inf, math.nan, "pooled-t-log (1 unit)")
    return _t_interval(b, c, equal_var=True, confidence=confidence, method="pooled-t-log")


def envelope(a: Interval, b: Interval) -> Interval:
    """The union of two intervals for the same quantity (estimate from ``a``): conservative,
    it covers at least as often as either. ``b`` without finite bounds (Welch with one unit
    per arm) adds nothing and is left out."""
    if not (math.isfinite(b.low) and math.isfinite(b.high)):
        return a
    p = max(a.p_value, b.p_value) if not math.isnan(b.p_value) else a.p_value
    widened = b.low < a.low or b.high > a.high
    return Interval(
        a.estimate,
        min(a.low, b.low),
        max(a.high, b.high),
        p,
        f"{a.method} + {b.method} envelope",
        min(a.df, b.df) if widened else a.df,
        a.confidence,
    )


def between_unit_cv(baseline: Sequence[float], candidate: Sequence[float]) -> float:
    """How much the per-unit values (one per server start) spread around their arm's mean,
    pooled over both arms, on the log scale: about the coefficient of variation between
    starts. NaN with no degree of freedom left (one unit per arm)."""
    logs = _logs(baseline, candidate)
    if logs is None:
        return math.nan
    b, c = logs
    df = b.size + c.size - 2
    if df < 1:
        return math.nan
    ss = float(((b - b.mean()) ** 2).sum() + ((c - c.mean()) ** 2).sum())
    return math.sqrt(ss / df)


def min_detectable_change(interval: Interval, power: float = 0.8) -> float:
    """The smallest relative change a run with this interval detects with ``power``: the
    interval's standard error (its width on the log scale over twice its quantile) times the
    quantiles of the confidence and of the power (t with the interval's degrees of freedom,
    or normal). NaN for an unbounded or undefined interval."""
    lo, hi = interval.low, interval.high
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= -1 or hi <= lo:
        return math.nan
    q = 0.5 + interval.confidence / 2
    if math.isfinite(interval.df):
        t_q, t_p = float(sps.t.ppf(q, interval.df)), float(sps.t.ppf(power, interval.df))
    else:
        t_q, t_p = float(sps.norm.ppf(q)), float(sps.norm.ppf(power))
    se = (math.log1p(hi) - math.log1p(lo)) / (2 * t_q)
    return math.expm1((t_q + t_p) * se)


def repeats_to_decide(
    worse: float,
    lo: float,
    hi: float,
    tolerance: float,
    repeats: int,
    *,
    df: float = math.inf,
    confidence: float = 0.95,
) -> int | None:
    """Units per arm at which the interval would clear the tolerance on one side if the
    estimate held: its half-width shrinks as 1/sqrt(n), and, for a t interval with ``df``
    degrees of freedom, its quantile falls as df grows with n (t(1) is 12.7, t(30) 2.0; left
    out, two starts per arm would ask for thousands). None when it cannot be estimated."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return max(2, repeats + 1) if repeats < 2 else None
    half = (hi - lo) / 2
    gap = abs(worse - tolerance)
    if gap == 0 or half == 0:
        return None
    if not math.isfinite(df):
        return max(repeats + 1, math.ceil(repeats * (half / gap) ** 2))
    q = 0.5 + confidence / 2
    now = float(sps.t.ppf(q, df))

    def projected(n: int) -> float:
        return half * float(sps.t.ppf(q, df * n / repeats)) / now * math.sqrt(repeats / n)

    high = repeats + 1
    while projected(high) >= gap:
        if high > 1_000_000:
            return None
        high *= 2
    low = max(repeats + 1, high // 2)
    while low < high:  # smallest n with projected(n) < gap
        mid = (low + high) // 2
        low, high = (mid + 1, high) if projected(mid) >= gap else (low, mid)
    return low


# ---------------------------------------------------------------- paired accuracy

Z_ALPHA_ONE_SIDED = float(sps.norm.ppf(0.95))  # 5% one-sided
Z_POWER = float(sps.norm.ppf(0.80))  # 80% power


@dataclass(frozen=True)
class AccuracyComparison:
    """Candidate vs baseline accuracy on the same questions, paired by question."""

    n_questions: int
    k_baseline: int
    k_candidate: int
    baseline: float
    baseline_low: float
    baseline_high: float
    candidate: float
    candidate_low: float
    candidate_high: float
    diff: float  # candidate - baseline (negative = accuracy dropped)
    diff_low: float
    diff_high: float
    p_value: float  # one-sided: H1 = the candidate is less accurate
    test: str
    min_detectable_drop: float  # at 5% one-sided, 80% power, this n and k
    max_drop: float
    verdict: str
    k_to_decide: int | None  # inconclusive, independent repeats: k that would likely decide
    confidence: float = 0.95
    # one-sided p-value against the margin: H0 drop <= max_drop, H1 drop > max_drop
    p_margin: float = math.nan
    questions_to_decide: int | None = None  # inconclusive: questions that would likely decide


def _bootstrap_mean_ci(
    x: np.ndarray, confidence: float, rng: np.random.Generator, resamples: int
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (scipy's ``bootstrap``); exact when every
    value is the same (a model that answers nothing right: 0%)."""
    if x.size < 2 or float(np.ptp(x)) == 0:
        return float(x.mean()), float(x.mean())
    ci = sps.bootstrap(
        (x,),
        np.mean,
        confidence_level=confidence,
        n_resamples=resamples,
        method="percentile",
        rng=rng,
    ).confidence_interval
    return float(ci.low), float(ci.high)


def mcnemar_one_sided(baseline: np.ndarray, candidate: np.ndarray) -> float:
    """Exact McNemar p-value for "candidate is worse", single outcomes per question (k = 1)."""
    worse = int(np.sum((baseline == 1) & (candidate == 0)))
    better = int(np.sum((baseline == 0) & (candidate == 1)))
    n = worse + better
    if n == 0:
        return 1.0
    return float(sps.binomtest(worse, n, 0.5, alternative="greater").pvalue)


def paired_accuracy(
    baseline: Sequence[Sequence[int]],
    candidate: Sequence[Sequence[int]],
    *,
    max_drop: float,
    confidence: float = 0.95,
    resamples: int = 4000,
    seed: int = 0,
    independent_repeats: bool = True,
) -> AccuracyComparison:
    """Rows are questions (the same, in the same order, for both arms), columns repeats.

    The drop is tested against the margin (a non-inferiority test): ``p_margin`` is the
    one-sided paired t p-value on per-question differences shifted by ``max_drop`` (H1: the
    candidate is worse by more than ``max_drop``; at k = 1 a large-sample approximation).
    ``p_value`` is the test against no difference (exact McNemar at k = 1), for the report.
    ``independent_repeats`` is False at temperature 0, where the k evaluations of a question
    are replicas: more k cannot decide, only more questions."""
    from perfgate.decide import verdict as rule  # the rule lives there, the numbers here

    if len(baseline) != len(candidate):
        raise ValueError("both arms must answer the same questions")
    n = len(baseline)
    kb = min((len(r) for r in baseline), default=0)
    kc = min((len(r) for r in candidate), default=0)
    if n == 0 or kb == 0 or kc == 0:
        nan = math.nan
        return AccuracyComparison(
            n,
            kb,
            kc,
            nan,
            nan,
            nan,
            nan,
            nan,
            nan,
            nan,
            nan,
            nan,
            nan,
            "none",
            nan,
            max_drop,
            rule.INVALID,
            None,
        )
    b = np.array([np.mean(r) for r in baseline])
    c = np.array([np.mean(r) for r in candidate])
    d = c - b
    rng = np.random.default_rng(seed)
    b_lo, b_hi = _bootstrap_mean_ci(b, confidence, rng, resamples)
    c_lo, c_hi = _bootstrap_mean_ci(c, confidence, rng, resamples)
    d_lo, d_hi = _bootstrap_mean_ci(d, confidence, rng, resamples)
    mean_d = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    if kb == 1 and kc == 1:
        test = "exact McNemar (one-sided)"
        p = mcnemar_one_sided(
            np.array([r[0] for r in baseline]), np.array([r[0] for r in candidate])
        )
    else:
        test = "paired t on per-question means (one-sided)"
        if sd == 0:
            p = 0.0 if mean_d < 0 else 1.0
        else:
            p = float(sps.ttest_1samp(d, 0.0, alternative="less").pvalue)
    if sd == 0:
        p_margin = 0.0 if mean_d < -max_drop else 1.0
    else:
        p_margin = float(sps.ttest_1samp(d, -max_drop, alternative="less").pvalue)
    # With no variation seen, plan with coin-flip questions: the worst case.
    planning_sd = sd if sd > 0 else math.sqrt(0.25 / kb + 0.25 / kc)
    mde = (Z_ALPHA_ONE_SIDED + Z_POWER) * planning_sd / math.sqrt(n)

    drop = -mean_d
    verdict = rule.decide_accuracy(
        p_margin=p_margin, diff_low=d_lo, max_drop=max_drop, alpha=1 - confidence
    )
    k_to_decide = questions_to_decide = None
    if verdict == rule.INCONCLUSIVE:
        half, gap = (d_hi - d_lo) / 2, abs(drop - max_drop)
        if gap > 0 and half > 0:
            # the interval narrows as 1/sqrt(questions), or 1/sqrt(k) for independent repeats
            questions_to_decide = max(n + 1, math.ceil(n * (half / gap) ** 2))
            if independent_repeats:
                k_now = min(kb, kc)
                k_to_decide = max(k_now + 1, math.ceil(k_now * (half / gap) ** 2))
    return AccuracyComparison(
        n_questions=n,
        k_baseline=kb,
        k_candidate=kc,
        baseline=float(b.mean()),
        baseline_low=b_lo,
        baseline_high=b_hi,
        candidate=float(c.mean()),
        candidate_low=c_lo,
        candidate_high=c_hi,
        diff=mean_d,
        diff_low=d_lo,
        diff_high=d_hi,
        p_value=p,
        test=test,
        min_detectable_drop=mde,
        max_drop=max_drop,
        verdict=verdict,
        k_to_decide=k_to_decide,
        confidence=confidence,
        p_margin=p_margin,
        questions_to_decide=questions_to_decide,
    )
