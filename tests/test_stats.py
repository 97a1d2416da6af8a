import math

import numpy as np
import pytest

from perfgate.decide import stats
from perfgate.decide.stats import welch_log_ratio
from perfgate.decide.verdict import decide
from perfgate.documents.compare import (
    IMPROVED,
    INCONCLUSIVE,
    INVALID,
    NO_CHANGE,
    REGRESSED,
    Interval,
)


def test_welch_interval_covers_the_true_ratio_about_95_percent():
    rng = np.random.default_rng(4)
    covered, sims = 0, 2000
    for _ in range(sims):
        b = 100 * np.exp(rng.normal(0, 0.02, 4))
        c = 103 * np.exp(rng.normal(0, 0.05, 3))  # unequal spreads and sizes: Welch's case
        iv = welch_log_ratio(b, c)
        covered += iv.low <= 0.03 <= iv.high
    assert 0.93 <= covered / sims <= 0.975


def test_welch_matches_scipy():
    from scipy import stats as sps

    b, c = [1.0, 1.1, 1.05], [1.2, 1.25, 1.18, 1.3]
    iv = welch_log_ratio(b, c)
    ref = sps.ttest_ind(np.log(c), np.log(b), equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert iv.low == pytest.approx(math.expm1(ci.low)) and iv.high == pytest.approx(
        math.expm1(ci.high)
    )
    assert iv.p_value == pytest.approx(ref.pvalue) and iv.df == pytest.approx(ref.df)


def test_one_start_in_an_arm_gives_no_interval_unless_the_noise_is_calibrated():
    # Borrowing the other arm's spread (a pooled t with 1 df) once called noise +16%.
    for b, c in (([100.0], [90.0]), ([100.0, 101.0], [90.0]), ([100.0], [90.0, 91.0])):
        iv = welch_log_ratio(b, c)
        assert iv.low == -math.inf and iv.high == math.inf
        assert decide(iv, higher_is_better=True, tolerance=0.02) == INCONCLUSIVE
    # a calibrated between-start CV of 2% (30 df): one start each, se = 0.02 * sqrt(2)
    iv = stats.calibrated_log_ratio([100.0], [90.0], cv=0.02, df=30)
    assert iv.se == pytest.approx(0.02 * math.sqrt(2)) and iv.df == 30
    assert decide(iv, higher_is_better=True, tolerance=0.02) == REGRESSED


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
    assert decide(iv, higher_is_better=higher_is_better, tolerance=0.05) == verdict


def test_the_regression_test_is_against_the_margin_not_zero():
    # a change exactly at the tolerance: p = 0.5, whatever the spread
    iv = Interval(0.05, 0.0, 0.1, 0.1, "t", df=10, se=0.02)
    assert stats.p_worse_than(iv, 0.05, higher_is_better=False) == pytest.approx(0.5)
    # higher is better: the margin is a ratio of 1 - tol
    iv = Interval(-0.05, -0.1, 0.0, 0.1, "t", df=10, se=0.02)
    assert stats.p_worse_than(iv, 0.05, higher_is_better=True) == pytest.approx(0.5)
    # far beyond it: small; an improvement: near 1; unbounded: 1; missing: NaN
    far = Interval(0.2, 0.1, 0.3, 0.0, "t", df=10, se=0.02)
    assert stats.p_worse_than(far, 0.05, higher_is_better=False) < 1e-4
    assert stats.p_worse_than(far, 0.05, higher_is_better=True) > 0.999
    unbounded = welch_log_ratio([1.0], [2.0])
    assert stats.p_worse_than(unbounded, 0.05, higher_is_better=False) == 1.0
    nan = Interval(math.nan, math.nan, math.nan, math.nan, "t")
    assert math.isnan(stats.p_worse_than(nan, 0.05, higher_is_better=False))


def test_holm_adjusted_p_values():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 -> 0.02, 0.03, 0.06, 0.04 -> monotone
    adj = stats.holm_adjusted([0.01, 0.04, 0.03, 0.005])
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # an untested member (NaN) counts as p = 1 and still enlarges the family
    assert stats.holm_adjusted([0.01, math.nan]) == pytest.approx([0.02, 1.0])


def test_alpha_over_looks_sums_to_one_and_the_final_look_keeps_most():
    for most in (2, 3, 8, 20):
        shares = [stats.look_share(n, 2, most) for n in range(2, most + 1)]
        assert sum(shares) == pytest.approx(1.0) and all(s > 0 for s in shares)
        assert shares[-1] >= 1 - stats.INTERIM_SHARE  # the final look keeps 80% or more
    # 2 to 8 starts: six interim looks at 0.2 / 6 each
    assert stats.look_share(2, 2, 8) == pytest.approx(0.2 / 6)
    # a budget that ends early (out of time) lets its last look take what is left
    early = stats.look_share(2, 2, 8) + stats.look_share(3, 2, 8, final=True)
    assert early == pytest.approx(1.0)


def test_the_plan_reaches_its_power_at_the_noise_it_assumes():
    # between-start SD 5%, tolerance 10%: the planned starts per arm tell no change from a
    # 10% change 90% of the time (hi <= tol of a 95% interval, with Welch)
    sd, tol = 0.05, 0.10
    plan = stats.starts_plan(sd, 1000, math.log1p(tol))
    n = plan.starts
    assert n is not None and plan.low <= n <= plan.high
    rng = np.random.default_rng(11)
    decided = 0
    sims = 2000
    for _ in range(sims):
        iv = welch_log_ratio(np.exp(rng.normal(0, sd, n)), np.exp(rng.normal(0, sd, n)))
        decided += iv.high <= tol
    assert decided / sims >= 0.87
    # one start fewer falls short
    decided = 0
    for _ in range(sims):
        iv = welch_log_ratio(np.exp(rng.normal(0, sd, n - 1)), np.exp(rng.normal(0, sd, n - 1)))
        decided += iv.high <= tol
    assert decided / sims < 0.9


def test_the_plan_shows_how_uncertain_a_spread_from_few_starts_is():
    # 2 + 2 starts (2 df) at a 9% spread, 1% tolerance: hundreds of starts, and a wide range
    plan = stats.starts_plan(0.09, 2, math.log1p(0.01))
    assert plan.starts is not None and plan.starts > 100
    assert plan.low is not None and plan.low < plan.starts / 2
    assert plan.high is None or plan.high > 3 * plan.starts
    assert stats.starts_plan(math.nan, 0, 0.01) == stats.Plan(None, None, None)


def test_between_unit_cv_is_the_pooled_spread_of_log_values():
    assert stats.between_unit_cv([1.0, 1.0], [2.0, 2.0]) == 0.0
    b = [math.exp(0.1), math.exp(-0.1)]
    assert stats.between_unit_cv(b, [1.0, 1.0]) == pytest.approx(0.1)
    assert math.isnan(stats.between_unit_cv([1.0], [2.0]))  # no degree of freedom


def test_min_detectable_change_from_an_intervals_standard_error():
    # a normal interval with se 0.1 on the log scale: (1.96 + 0.84) se = 0.280
    iv = Interval(0.0, math.expm1(-0.196), math.expm1(0.196), 0.5, "test", se=0.1)
    assert stats.min_detectable_change(iv) == pytest.approx(math.expm1(0.2802), rel=1e-3)
    wide = Interval(0.0, -math.inf, math.inf, math.nan, "test", se=math.inf)
    assert math.isnan(stats.min_detectable_change(wide))


def test_an_aa_run_says_improved_no_more_often_than_its_one_sided_alpha():
    """Five independent gated metrics of one build, 4000 simulated runs: before the family's
    control of "improved", about 1 - 0.975^5 = 12% of them had a metric "improved"; now at
    most alpha / 2 = 2.5% (docs/statistics.md)."""
    from dataclasses import replace

    from perfgate.decide import family
    from perfgate.decide.stats import _interval
    from perfgate.documents.compare import MetricComparison

    rng = np.random.default_rng(7)
    runs, metrics, se, df = 4000, 5, 0.01, 10.0
    with_gain = 0
    for _ in range(runs):
        rows = []
        for k in range(metrics):
            d = rng.standard_t(df) * se
            iv = _interval(d, se, df, 0.95, "sim")
            v = decide(iv, higher_is_better=False, tolerance=0.05)
            rows.append(
                MetricComparison(
                    f"m{k}",
                    f"m{k}",
                    False,
                    0.05,
                    1.0,
                    1.0,
                    iv.estimate,
                    iv.low,
                    iv.high,
                    iv.p_value,
                    "sim",
                    v,
                    se=se,
                    df=df,
                )
            )
        rows = [replace(r, p_regress=stats.p_worse_than(_iv(r), 0.05, higher_is_better=False))
                for r in rows]  # fmt: skip
        judged, _ = family.apply(rows, None, alpha=0.05)
        with_gain += any(r.verdict == "improved" for r in judged)
    assert with_gain / runs <= 0.03


def _iv(row):
    from perfgate.documents.compare import Interval

    return Interval(row.estimate, row.low, row.high, row.p_value, "sim", df=row.df, se=row.se)


def test_a_gpu_that_coincides_with_the_arm_is_said_confounded_not_read_as_the_change():
    from perfgate.decide.comparison import compare_values
    from perfgate.documents.spec import Threshold

    # every baseline start on GPU 0, every candidate start on GPU 1 (1% slower GPU): Welch
    # would call the GPU's 1% the change; the blocked model says it cannot tell
    base, cand = [100.0, 100.1, 99.9], [101.0, 101.1, 100.9]
    blocks = (["0", "0", "0"], ["1", "1", "1"])
    iv = stats.blocked_log_ratio(base, cand, blocks)
    assert iv.method == stats.CONFOUNDED and iv.low == -math.inf and iv.high == math.inf
    row = compare_values(Threshold("median_tpot_ms", 0.005), base, cand, confidence=0.95,
                         blocks=blocks)  # fmt: skip
    assert row.verdict == "inconclusive" and row.reason.startswith("confounded")
    # swapped every round, the same values are a proper blocked comparison
    crossed = (["0", "1", "0"], ["1", "0", "1"])
    assert stats.blocked_log_ratio(base, cand, crossed).method == "ols-log (GPU as block)"


def test_detectable_is_a_regression_against_the_tolerance_at_holms_strictest_level():
    from perfgate.decide import family
    from perfgate.documents.compare import MetricComparison

    rows = [
        MetricComparison(f"m{k}", f"m{k}", k == 0, 0.05, 1.0, 1.0, 0.0, -0.02, 0.02, 1.0, "sim",
                         "no change", se=0.01, df=math.inf, p_regress=0.5)
        for k in range(5)
    ]  # fmt: skip
    judged, _ = family.apply(rows, None, alpha=0.05)
    # lower is better: log(1.05) + 0.01 x (z_0.99 + z_0.8), alpha 0.05 over 5 tests
    reach = math.log(1.05) + 0.01 * (2.3263 + 0.8416)
    assert judged[1].detectable_regression == pytest.approx(math.expm1(reach), rel=1e-3)
    # higher is better: a drop, the tolerance's margin taken on the log scale of a drop
    reach_up = -math.log(0.95) + 0.01 * (2.3263 + 0.8416)
    assert judged[0].detectable_regression == pytest.approx(-math.expm1(-reach_up), rel=1e-3)
    assert all(r.detectable_regression > r.tolerance for r in judged)
