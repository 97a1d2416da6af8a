"""The comparison documents: what a compare (or gate) run decided, as it is stored in
results.json and read back to render. Plain data: the rules that fill them live in
``perfgate.decide``.

- **Verdict words and exit codes.** A metric, accuracy and a run have a **verdict** (``pass``,
  ``regressed``, ``improved``, ``no change``, ``inconclusive``, ``invalid``); a run also has a
  **status**, how it ended (``complete``, ``invalid`` when what it measured is unfit to judge,
  ``failed``, ``interrupted``). The verdict ``invalid`` (a metric that could not be measured:
  missing is not zero) and the status ``invalid`` are named apart here (``INVALID`` and
  ``STATUS_INVALID``). Exit codes: 0 pass, 1 regressed, 2 invalid or a run that did not
  complete, 3 inconclusive.
- ``Interval``: one relative change with its confidence interval.
- ``MetricComparison``: one gated metric's row; ``AccuracyComparison``: accuracy paired by
  question; ``StartNoise``: the calibrated between-start noise a run used.
- ``KernelChange`` / ``KernelComparison``: the kernel table of the profiled windows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

PASS = "pass"

REGRESSED, IMPROVED, NO_CHANGE, INCONCLUSIVE, INVALID = (
    "regressed",
    "improved",
    "no change",
    "inconclusive",
    "invalid",
)

EXIT_FOR = {PASS: 0, REGRESSED: 1, INVALID: 2, INCONCLUSIVE: 3}

# run statuses (how a run ended), apart from the verdict words above
RUNNING, COMPLETE, STATUS_INVALID, FAILED, INTERRUPTED = (
    "running",
    "complete",
    "invalid",
    "failed",
    "interrupted",
)


def exit_code(status: str, verdict: str | None) -> int:
    """0 pass, 1 regressed, 3 inconclusive; 2 for an invalid verdict or an incomplete run."""
    if status != COMPLETE or verdict is None:
        return EXIT_FOR[INVALID]
    return EXIT_FOR[verdict]


@dataclass(frozen=True)
class Interval:
    estimate: float  # relative difference candidate vs baseline (0.02 = candidate 2% higher)
    low: float
    high: float
    p_value: float  # two-sided, against no change
    method: str
    df: float = math.inf  # the t interval's degrees of freedom (inf: normal)
    confidence: float = 0.95
    se: float = math.nan  # standard error of the log ratio (inf: unbounded)

    @property
    def log_ratio(self) -> float:
        return math.log1p(self.estimate) if self.estimate > -1 else math.nan


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
    p_adjusted: float = math.nan  # p_margin, adjusted over the run's family (``adjusted_by``)
    adjusted_by: str = "Holm over the run's gated tests"


@dataclass(frozen=True)
class StartNoise:
    """A calibrated between-start CV per metric (log-scale SD of one start's value, from
    stored A/A runs) and the degrees of freedom it was estimated with: what stands in for
    start-to-start variation when an arm has a single start (a running URL, a one-start run)."""

    cv: Mapping[str, float] = field(default_factory=dict)
    df: float = 10.0
    source: str | None = None  # where it was measured: machine, build, date, runs


@dataclass(frozen=True)
class MetricComparison:
    metric: str
    label: str
    higher_is_better: bool
    tolerance: float
    baseline: float  # geometric mean over the arm's starts of each start's value
    candidate: float
    estimate: float  # candidate / baseline - 1
    low: float
    high: float
    p_value: float  # two-sided, against no change
    method: str
    verdict: str
    unit: str = "server start"
    n_baseline: int = 0  # starts per arm
    n_candidate: int = 0
    starts_sampled: bool = True  # False: an arm had one start and no calibrated noise
    cv_between_units: float = math.nan  # spread of the per-start values (log scale ~ CV)
    min_detectable: float = math.nan  # smallest relative change this run detects (80%)
    se: float = math.nan  # standard error of the log ratio
    df: float = math.nan
    confidence: float = 0.95  # of this interval (below the scenario's at an interim look)
    p_regress: float = math.nan  # one-sided, H0: worse by at most the tolerance
    p_adjusted: float = math.nan  # Holm over the run's family (perfgate.decide.family)
    primary: bool = True  # its inconclusive verdict makes the run inconclusive
    reason: str | None = None  # why inconclusive / not regressed, when it is not obvious
    starts_to_decide: int | None = None  # inconclusive: the plan (stats.starts_plan)
    starts_to_decide_low: int | None = None
    starts_to_decide_high: int | None = None
    values_baseline: tuple[float, ...] = ()  # the per-start values compared, in start order
    values_candidate: tuple[float, ...] = ()
    # the smallest regression this run fails with 80% power: the tolerance plus the reach of
    # the test at Holm's strictest level (alpha / the family's size); None in older files,
    # whose "detectable" column is ``min_detectable`` (a change against none)
    detectable_regression: float | None = None
    # files of perfgate before server starts were the unit: the plan in repeats per arm
    repeats_to_decide: int | None = None

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        if self.repeats_to_decide is None:  # written only where an old file had it
            del doc["repeats_to_decide"]
        return doc


@dataclass(frozen=True)
class KernelChange:
    name: str
    change: str  # appeared | disappeared | slower | faster
    baseline_us_per_call: float  # mean over the arm's starts where it ran; NaN: never ran
    candidate_us_per_call: float
    baseline_calls_per_step: float
    candidate_calls_per_step: float
    baseline_us_per_step: float  # mean over the arm's starts (0 where it did not run)
    candidate_us_per_step: float
    diff_us_per_step: float
    low: float
    high: float


@dataclass(frozen=True)
class KernelComparison:
    source: str  # kernel | cpu_op
    batch: int
    starts: tuple[int, int]
    confidence: float
    baseline_step_us: float  # mean time per decode step (the kernels' sum)
    candidate_step_us: float
    step_diff_us: float
    step_low: float
    step_high: float
    listed_diff_us: float  # the listed kernels' summed change per step
    rows: list[KernelChange] = field(default_factory=list)
    problem: str | None = None  # why no table: different batches or sources

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
