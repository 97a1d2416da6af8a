"""The nightly gate's rule: what tonight's night, the history's change points and (on a night
that measures it) accuracy by question decide, with the sentence that says why
(docs/nightly.md, "The rule")."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from perfgate.decide import stats
from perfgate.decide.stats import margin_log
from perfgate.documents.compare import (
    INCONCLUSIVE,
    INVALID,
    PASS,
    REGRESSED,
    AccuracyComparison,
    Interval,
)
from perfgate.documents.nightly import AT_ONCE, LEVEL, Change, Detection, Night, NightMetric
from perfgate.documents.spec import ChangeRule


def decide_night(
    night: Night, detection: Detection, rule: ChangeRule, answers: AccuracyComparison | None
) -> tuple[str, str]:
    """(verdict, reason): an accuracy drop counts the night it is seen; so does a metric that
    tonight's own comparison finds certainly worse than AT_ONCE_K x its tolerance; a level
    worse than the tolerance counts once established over ``rule.min_nights`` nights (the
    window ``judge_metric`` tests); until then it, or tonight's own regression, is pending."""
    if answers is not None and answers.verdict == REGRESSED:
        return REGRESSED, (
            f"accuracy {answers.candidate:.1%} against the baseline's {answers.baseline:.1%} "
            f"on the same {answers.n_questions} questions ({answers.diff:+.1%}): a drop beyond "
            f"{answers.max_drop:.1%}, which counts the night it is seen"
        )
    if detection.regressed:
        return REGRESSED, regressed_reason(detection.regressed[0])
    need = rule.min_nights
    if detection.pending:
        return INCONCLUSIVE, pending_reason(detection.pending[0])
    worse = [m for m, x in night.metrics.items() if x.verdict == REGRESSED]
    if worse:
        return INCONCLUSIVE, (
            f"pending: tonight {', '.join(worse)} regressed against the reference, within its "
            f"tolerance over the last {need} nights so far"
        )
    if night.verdict == INVALID:
        return INVALID, "tonight's comparison was invalid (a metric could not be measured)"
    # (invalid answers made tonight's verdict invalid: the line above)
    if answers is not None and answers.verdict == INCONCLUSIVE:
        return INCONCLUSIVE, (
            f"accuracy {answers.candidate:.1%} against the baseline's {answers.baseline:.1%}: "
            f"{answers.verdict} (the answers cannot rule out a drop beyond "
            f"{answers.max_drop:.1%})"
        )
    return PASS, "no metric is worse than its tolerance, tonight or over the recent nights"


def regressed_reason(c: Change) -> str:
    """Why a metric failed the night, in the words of the rule that failed it."""
    if c.rule == AT_ONCE:
        return (
            f"{c.metric} {c.level:+.1%} tonight, certainly worse than {AT_ONCE_K:g} x its "
            f"tolerance of {c.tolerance:.1%} (p = {c.p_value:.2g}): it fails the night it is "
            f"seen; worse than the tolerance from night {c.night + 1} ({c.first_date})"
        )
    return (
        f"{c.metric} at {c.level:+.1%} ({c.level_low:+.1%} to {c.level_high:+.1%}) against the "
        f"reference from night {c.night + 1} ({c.first_date}) on, {c.nights_after} nights: "
        f"beyond its tolerance of {c.tolerance:.1%} (p = {c.p_value:.2g})"
    )


def pending_reason(c: Change) -> str:
    return (
        f"pending: {c.metric} worse than its tolerance of {c.tolerance:.1%} on {c.nights_beyond} "
        f"of the {c.nights_needed} nights needed (level {c.level:+.1%} since night "
        f"{c.night + 1}, {c.first_date})"
    )


# The rule's constants (docs/nightly.md, "The rule"): tonight alone fails the gate when its own
# comparison rejects "worse by at most AT_ONCE_K x the tolerance" at AT_ONCE_ALPHA (99%
# one-sided confidence that the change is more than twice what is tolerated: a night that is
# wrong at that boundary still names a regression beyond the tolerance, and an unchanged
# build reaches it only from a deviation of twice the tolerance plus the interval's width);
# a level fails it when its test against the tolerance rejects at LEVEL_ALPHA.
AT_ONCE_K = 2.0
AT_ONCE_ALPHA = 0.01
LEVEL_ALPHA = 0.01


def judge_metric(
    nights: Sequence[Night],
    metric: str,
    series: Sequence[tuple[int, float]],
    cuts: Sequence[int],
    sigma: float,
    tolerance: float,
    higher_is_better: bool,
    rule: ChangeRule,
) -> tuple[Change | None, list[Change]]:
    """One metric over the history: (its current level, judged, or None without nights; the
    change points PELT cut, each with its step's p-value). ``series``: (night index, log
    ratio to the reference) for the nights that measured it, oldest first (missing nights
    dropped); ``cuts``: PELT's change points, as positions in ``series``; ``sigma``: the
    night-to-night SD of the log ratio (NaN while unknown).

    The current level is judged, not only the last step. Its first night is the first night
    beyond the tolerance from PELT's last cut on, when the segment after that cut is worse
    than the tolerance; else the first of the trailing run of nights worse than it; else the
    last cut (or the first night). A metric is
    regressed **at once** when tonight's own comparison is certainly worse than AT_ONCE_K x
    the tolerance; by its **level** when the current level has lasted ``min_nights`` nights
    and its mean log ratio is worse than the tolerance at LEVEL_ALPHA (sigma / sqrt(nights)
    its standard error); **pending** while a level (or tonight) is worse than the tolerance
    but not yet established; else within."""
    if not series:
        return None, []
    logs = [x for _, x in series]
    margin = margin_log(tolerance, higher_is_better)

    def worse(x: float) -> float:
        return -x if higher_is_better else x

    steps = [_step(nights, metric, series, cuts, k, sigma) for k in range(len(cuts))]
    first = _first_night([worse(x) - margin for x in logs], cuts)
    window = logs[first:]
    level = statistics.fmean(window)
    day = night_effect(nights, metric, series, sigma)
    # the level's mean over its nights, plus the reference's own day, which every night shares
    se = math.sqrt(sigma**2 / len(window) + day**2) if sigma > 0 else math.nan
    z = stats.t_ppf(0.975, math.inf)
    p_level = stats.t_sf((worse(level) - margin) / se, math.inf) if se > 0 else math.nan
    tonight = series[-1][0] == len(nights) - 1
    p_once = _p_at_once(nights[-1].metrics.get(metric), tolerance, higher_is_better, day)
    at_once = tonight and p_once < AT_ONCE_ALPHA
    need = rule.min_nights
    by_level = len(window) >= need and p_level < LEVEL_ALPHA
    pending = not (at_once or by_level) and (
        worse(level) > margin or (tonight and worse(logs[-1]) > margin)
    )
    # the step: from the level just before (the segment the first night ends) to this one
    since = max([0, *(c for c in cuts if c < first)])
    before = statistics.fmean(logs[since:first]) if first > since else 0.0
    night = series[first][0]
    current = Change(
        metric=metric,
        night=night,
        step=math.expm1(level - before),
        nights_after=len(series) - first,
        regressed=at_once or by_level,
        pending=pending,
        first_date=nights[night].date,
        commits=(nights[series[first - 1][0]].commit if first > 0 else None, nights[night].commit),
        rule=AT_ONCE if at_once else LEVEL,
        tolerance=tolerance,
        level=math.expm1(level),
        level_low=math.expm1(level - z * se) if se > 0 else math.nan,
        level_high=math.expm1(level + z * se) if se > 0 else math.nan,
        p_value=p_once if at_once else p_level,
        nights_beyond=sum(worse(x) > margin for x in logs[-need:]),
        nights_needed=need,
    )
    return current, steps


def _first_night(beyond: Sequence[float], cuts: Sequence[int]) -> int:
    """Where the current level starts, given each night's excess over the tolerance (in the
    bad direction): the first night beyond it from PELT's last cut on when that segment is
    beyond it on average (its shortest segment may pull in a night of the old level), else
    the first of the trailing run of nights beyond it, else the last cut (or night 0)."""
    if cuts and statistics.fmean(beyond[cuts[-1] :]) > 0:
        return next(k for k in range(cuts[-1], len(beyond)) if beyond[k] > 0)
    run = len(beyond)
    while run > 0 and beyond[run - 1] > 0:
        run -= 1
    if run < len(beyond):
        return run
    return cuts[-1] if cuts else 0


def night_effect(
    nights: Sequence[Night], metric: str, series: Sequence[tuple[int, float]], sigma: float
) -> float:
    """The day effect: the SD of a shift shared by one night's (or the reference day's)
    starts, which no night's own standard error sees. The night-to-night ``sigma`` holds it
    and the nights' own comparisons' noise; what ``sigma`` has beyond their typical standard
    error is the day's share (a random night effect; 0 where sigma is not larger, or
    unknown)."""
    own = [
        m.se
        for i, _ in series
        if (m := nights[i].metrics.get(metric)) is not None
        and m.se is not None
        and math.isfinite(m.se)
    ]
    if not (sigma > 0 and own):
        return 0.0
    return math.sqrt(max(0.0, sigma**2 - statistics.median(own) ** 2))


def _p_at_once(
    m: NightMetric | None, tolerance: float, higher_is_better: bool, day: float = 0.0
) -> float:
    """Tonight's own comparison against "worse by at most AT_ONCE_K x the tolerance", its
    standard error widened by tonight's day effect and the reference day's (``day`` each)."""
    if m is None or not m.ratio or m.ratio <= 0 or m.se is None or m.df is None:
        return math.nan
    if not (math.isfinite(m.se) and m.se > 0 and m.df > 0):
        return math.nan
    se = math.sqrt(m.se**2 + 2 * day**2)
    interval = Interval(m.ratio - 1, m.low, m.high, math.nan, "night", df=m.df, se=se)
    return stats.p_worse_than(interval, AT_ONCE_K * tolerance, higher_is_better=higher_is_better)


def _step(
    nights: Sequence[Night],
    metric: str,
    series: Sequence[tuple[int, float]],
    cuts: Sequence[int],
    k: int,
    sigma: float,
) -> Change:
    """PELT's k-th cut: the step between the segments either side, with the two-sided
    p-value of "no step" at the night-to-night sigma."""
    logs = [x for _, x in series]
    bounds = [0, *cuts, len(logs)]
    cut = cuts[k]
    before, after = logs[bounds[k] : cut], logs[cut : bounds[k + 2]]
    diff = statistics.fmean(after) - statistics.fmean(before)
    se = sigma * math.sqrt(1 / len(before) + 1 / len(after)) if sigma > 0 else math.nan
    p = 2 * stats.t_sf(abs(diff) / se, math.inf) if se > 0 else math.nan
    night = series[cut][0]
    return Change(
        metric=metric,
        night=night,
        step=math.expm1(diff),
        nights_after=len(logs) - cut,
        regressed=False,
        first_date=nights[night].date,
        commits=(nights[series[cut - 1][0]].commit, nights[night].commit),
        p_value=p,
    )


def nightly_noise_problems(
    tolerances: dict[str, float],
    night_noise: dict[str, float],
    start_cv: dict[str, float],
    starts: int,
) -> list[str]:
    """Before a night runs: each gated metric whose night-to-night noise (the baseline's
    calibration from a history, else its per-start CV / sqrt(tonight's starts), which leaves
    out any day effect) exceeds its tolerance cannot be gated nightly: a sentence per metric,
    naming what could be gated instead and how many starts a night would bring its noise to
    half the tolerance."""
    noise = {
        m: night_noise.get(m, start_cv.get(m, math.nan) / math.sqrt(max(starts, 1)))
        for m in tolerances
    }
    fine = [m for m, tol in tolerances.items() if noise[m] <= tol]
    out = []
    for metric, tol in tolerances.items():
        if not noise[metric] > tol:
            continue
        per_start = noise[metric] * math.sqrt(max(starts, 1))
        need = math.ceil((per_start / (tol / 2)) ** 2)
        source = "calibrated" if metric in night_noise else "from the baseline's starts"
        instead = f"gate {', '.join(fine)} instead, or " if fine else ""
        out.append(
            f"{metric} cannot be gated nightly at its {tol:.1%} tolerance: its night-to-night "
            f"noise is {noise[metric]:.1%} ({source}); {instead}raise the starts a night to "
            f"~{need} (--starts), or its tolerance"
        )
    return out
