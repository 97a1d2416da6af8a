"""Accuracy decided question by question: two arms' per-question correctness paired, the
drop's interval (a bootstrap over questions), and McNemar's exact test on the questions one
arm got right and the other wrong."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

from perfgate.decide import verdict as rule
from perfgate.documents.compare import INCONCLUSIVE, INVALID, AccuracyComparison
from perfgate.documents.eval import AccuracyError, AccuracySpec, ArmAccuracy

Z_ALPHA_ONE_SIDED = float(sps.norm.ppf(0.95))  # 5% one-sided


Z_POWER = float(sps.norm.ppf(0.80))  # 80% power


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
            INVALID,
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
    if verdict == INCONCLUSIVE:
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


def compare_arms(
    baseline: ArmAccuracy,
    candidate: ArmAccuracy,
    spec: AccuracySpec,
    *,
    confidence: float = 0.95,
) -> AccuracyComparison:
    """The two arms compared question by question; they must have answered the same ones.
    At temperature 0 the k evaluations of a question are replicas, not independent draws."""
    if baseline.questions != candidate.questions:
        raise AccuracyError("the arms answered different questions; cannot pair them")
    return paired_accuracy(
        baseline.correct,
        candidate.correct,
        max_drop=spec.max_drop,
        confidence=confidence,
        independent_repeats=spec.temperature > 0,
    )
