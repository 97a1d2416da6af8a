import math

import numpy as np
import pytest

from perfgate.decide import stats, verdict
from perfgate.decide.stats import (
    Interval,
    _Arm,
    bootstrap_relative,
    welch_log_ratio,
)
from perfgate.decide.verdict import IMPROVED, INCONCLUSIVE, INVALID, NO_CHANGE, REGRESSED, decide


def arm(rng, median, repeats=3, n=40, sigma=0.3):
    return [[np.array([v]) for v in median * rng.lognormal(0, sigma, n)] for _ in range(repeats)]


def test_resampling_keeps_each_requests_values_together():
    a = _Arm([[np.array([1.0, 1.0]), np.array([5.0]), np.array([7.0, 7.0, 7.0])]])
    rng = np.random.default_rng(0)
    for _ in range(50):
        values = a.resample(rng)
        assert len(values) > 0
        # whole requests only: 1s come in pairs, 7s in triples
        assert np.sum(values == 1.0) % 2 == 0 and np.sum(values == 7.0) % 3 == 0


def test_bootstrap_interval_covers_the_true_difference_about_95_percent():
    rng = np.random.default_rng(1)
    true_diff, covered, sims = 0.05, 0, 200
    for i in range(sims):
        iv = bootstrap_relative(arm(rng, 10.0), arm(rng, 10.5), "median", resamples=300, seed=i)
        covered += iv.low <= true_diff <= iv.high
    assert 0.88 <= covered / sims <= 1.0


def test_identical_arms_false_fail_at_most_5_percent():
    rng = np.random.default_rng(2)
    regressed, sims = 0, 200
    for i in range(sims):
        iv = bootstrap_relative(arm(rng, 10.0), arm(rng, 10.0), "median", resamples=300, seed=i)
        d = decide(iv, higher_is_better=False, tolerance=0.0, repeats=3)
        regressed += d.verdict == REGRESSED
    assert regressed / sims <= 0.05


def test_a_real_regression_is_detected():
    rng = np.random.default_rng(3)
    iv = bootstrap_relative(arm(rng, 10.0, n=200), arm(rng, 12.0, n=200), "median", seed=0)
    assert iv.low > 0.1 and iv.p_value < 0.01
    d = decide(iv, higher_is_better=False, tolerance=0.05, repeats=3)
    assert d.verdict == REGRESSED


def test_welch_interval_covers_the_true_ratio_about_95_percent():
    rng = np.random.default_rng(4)
    covered, sims = 0, 400
    for _ in range(sims):
        b = 100 * np.exp(rng.normal(0, 0.02, 4))
        c = 103 * np.exp(rng.normal(0, 0.02, 4))
        iv = welch_log_ratio(b, c)
        covered += iv.low <= 0.03 <= iv.high
    assert 0.91 <= covered / sims <= 0.98


def test_one_repeat_cannot_give_a_run_level_interval():
    iv = welch_log_ratio([100.0], [90.0])
    assert iv.low == -math.inf and iv.high == math.inf
    d = decide(iv, higher_is_better=True, tolerance=0.02, repeats=1)
    assert d.verdict == INCONCLUSIVE and d.repeats_to_decide == 2


@pytest.mark.parametrize(
    ("estimate", "low", "high", "higher_is_better", "verdict"),
    [
        (0.10, 0.06, 0.14, False, REGRESSED),  # latency up 6-14%, tolerance 5%
        (-0.10, -0.14, -0.06, True, REGRESSED),  # throughput down 6-14%
        (-0.03, -0.05, -0.01, False, IMPROVED),
        (0.03, 0.01, 0.05, True, IMPROVED),
        (0.01, -0.02, 0.04, False, NO_CHANGE),  # within tolerance, either way
        (0.03, 0.01, 0.045, False, NO_CHANGE),  # significant but smaller than the tolerance
        (0.05, 0.02, 0.08, False, INCONCLUSIVE),  # straddles the tolerance
        (math.nan, math.nan, math.nan, False, INVALID),  # missing is not zero
    ],
)
def test_verdict_rule(estimate, low, high, higher_is_better, verdict):
    iv = Interval(estimate, low, high, 0.01, "test")
    assert decide(iv, higher_is_better=higher_is_better, tolerance=0.05, repeats=3).verdict == (
        verdict
    )


def test_inconclusive_says_how_many_repeats_would_decide():
    # estimate 8%, half-width 4%, tolerance 5%: gap 3% -> n * (4/3)^2 = 3 * 1.78 -> 6
    d = decide(
        Interval(0.08, 0.04, 0.12, 0.01, "t"), higher_is_better=False, tolerance=0.05, repeats=3
    )
    assert d.verdict == INCONCLUSIVE and d.repeats_to_decide == 6


def test_pooled_interval_borrows_the_spread_of_the_arm_with_two_or_more_units():
    # The candidate ran one server start: its start-to-start spread is unknown, so the
    # baseline's (two starts, 10% apart) stands for both arms, with one degree of freedom.
    iv = stats.pooled_log_ratio([2.0, 2.2], [2.1], confidence=0.95)
    assert iv.method == "pooled-t-log"
    assert iv.low < -0.5 and iv.high > 1.0  # t(1) = 12.7: nothing is decided on this
    assert abs(iv.estimate - (2.1 / math.sqrt(2.0 * 2.2) - 1)) < 1e-12
    # unequal sizes, plenty of units: close to Welch
    rng = np.random.default_rng(0)
    b, c = rng.lognormal(0, 0.05, 20), rng.lognormal(0.1, 0.05, 20)
    p, w = stats.pooled_log_ratio(b, c), stats.welch_log_ratio(b, c)
    assert abs(p.low - w.low) < 0.01 and abs(p.high - w.high) < 0.01
    # one unit each: no spread to borrow
    none = stats.pooled_log_ratio([2.0], [2.1])
    assert math.isinf(none.low) and math.isinf(none.high)


def test_repeats_to_decide_counts_the_t_quantile_falling_with_more_units():
    # Two starts per arm, 10% apart within each arm, 5% between the arms, 1% tolerance.
    iv = stats.welch_log_ratio([1.0, 1.1], [1.05, 1.155])
    d = verdict.decide(iv, higher_is_better=False, tolerance=0.01, repeats=2)
    assert d.verdict == INCONCLUSIVE and iv.df < 3
    n = d.repeats_to_decide
    naive = math.ceil(2 * ((iv.high - iv.low) / 2 / abs(d.worse - 0.01)) ** 2)
    assert n is not None and 2 < n < naive / 3
    # at n units Welch's interval, with the same spread, clears the tolerance; at n - 1 not
    rel = [1.0, 1.1]

    def lower_end(units):
        b = [rel[i % 2] for i in range(units)]
        return stats.welch_log_ratio(b, [x * 1.05 for x in b]).low

    assert lower_end(n) > 0.01  # the projection errs on the side of enough units
    assert lower_end(4) < 0.01


def test_between_unit_cv_is_the_pooled_spread_of_log_values():
    assert stats.between_unit_cv([1.0, 1.0], [2.0, 2.0]) == 0.0
    b = [math.exp(0.1), math.exp(-0.1)]
    assert stats.between_unit_cv(b, [1.0, 1.0]) == pytest.approx(0.1)
    assert math.isnan(stats.between_unit_cv([1.0], [2.0]))  # no degree of freedom


def test_min_detectable_change_from_an_intervals_width():
    # a normal interval of +-0.196 on the log scale: se 0.1, so (1.96 + 0.84) se = 0.280
    iv = Interval(0.0, math.expm1(-0.196), math.expm1(0.196), 0.5, "test")
    assert stats.min_detectable_change(iv) == pytest.approx(math.expm1(0.2802), rel=1e-3)
    wide = Interval(0.0, -0.5, math.inf, math.nan, "test")
    assert math.isnan(stats.min_detectable_change(wide))
