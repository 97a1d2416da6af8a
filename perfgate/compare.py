"""From two arms' repeats to per-metric differences, intervals and a gate verdict.

Input is plain data: each arm's list of bench result documents (one per repeat, with every
request's record). Request-level metrics (``median_tpot_ms``, ``p99_ttft_ms``, ...) are
compared over the pooled requests with the two-stage bootstrap of ``perfgate.stats``; run-level
throughputs over the per-repeat values with Welch's interval on log values. The gate:

- any gated metric that could not be measured -> ``invalid`` (exit 2; missing is not zero)
- any metric ``regressed`` -> exit 1
- else any metric ``inconclusive`` -> exit 3
- else pass -> exit 0
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from perfgate import stats
from perfgate.metrics import e2el_ms, itl_ms, itl_per_token_ms, tpot_ms, ttft_ms
from perfgate.records import RequestRecord
from perfgate.scenario import Threshold

PER_REQUEST: dict[str, Callable[[RequestRecord], list[float]]] = {
    "ttft": lambda r: [] if (v := ttft_ms(r)) is None else [v],
    "tpot": lambda r: [] if (v := tpot_ms(r)) is None else [v],
    "e2el": lambda r: [] if (v := e2el_ms(r)) is None else [v],
    "itl": itl_ms,
    "itl_per_token": itl_per_token_ms,
}

LABELS = {
    "ttft": "TTFT",
    "tpot": "TPOT",
    "itl": "ITL",
    "e2el": "E2EL",
    "itl_per_token": "ITL per token",
    "output_throughput": "Output token throughput (tok/s)",
    "request_throughput": "Request throughput (req/s)",
    "total_token_throughput": "Total token throughput (tok/s)",
}

EXIT_FOR = {"pass": 0, "regressed": 1, "invalid": 2, "inconclusive": 3}


def split_metric(metric: str) -> tuple[str, str] | None:
    """'median_tpot_ms' -> ('median', 'tpot'); None for run-level metrics."""
    if not metric.endswith("_ms"):
        return None
    kind, _, base = metric[: -len("_ms")].partition("_")
    return kind, base


def label(metric: str) -> str:
    parts = split_metric(metric)
    if parts is None:
        return LABELS.get(metric, metric)
    kind, base = parts
    return (
        f"{kind.capitalize() if kind in ('mean', 'median') else kind.upper()} "
        f"{LABELS.get(base, base)} (ms)"
    )


def request_values(docs: Sequence[dict[str, Any]], base: str) -> list[list[np.ndarray]]:
    """repeats -> successful measured requests -> that request's values of ``base``."""
    fn = PER_REQUEST[base]
    out = []
    for doc in docs:
        reqs = []
        for raw in doc["records"]:
            r = RequestRecord.from_json(raw)
            if r.warmup or not r.ok:
                continue
            values = fn(r)
            if values:
                reqs.append(np.asarray(values, dtype=float))
        out.append(reqs)
    return out


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


@dataclass(frozen=True)
class MetricComparison:
    metric: str
    label: str
    higher_is_better: bool
    tolerance: float
    baseline: float
    candidate: float
    estimate: float  # candidate / baseline - 1
    low: float
    high: float
    p_value: float
    method: str
    verdict: str
    repeats_to_decide: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def compare_metric(
    threshold: Threshold,
    baseline: Sequence[dict[str, Any]],
    candidate: Sequence[dict[str, Any]],
    *,
    confidence: float,
    resamples: int,
    seed: int = 0,
) -> MetricComparison:
    parts = split_metric(threshold.metric)
    if parts is None:
        b = [_num(d["metrics"].get(threshold.metric)) for d in baseline]
        c = [_num(d["metrics"].get(threshold.metric)) for d in candidate]
        iv = stats.welch_log_ratio(b, c, confidence=confidence)
        b_val = _geomean(b)
        c_val = _geomean(c)
    else:
        kind, base = parts
        bv, cv = request_values(baseline, base), request_values(candidate, base)
        iv = stats.bootstrap_relative(
            bv, cv, kind, confidence=confidence, resamples=resamples, seed=seed
        )
        stat = stats.statistic(kind)
        b_val = _pooled_stat(bv, stat)
        c_val = _pooled_stat(cv, stat)
    repeats = min(len(baseline), len(candidate))
    d = stats.decide(
        iv,
        higher_is_better=threshold.higher_is_better,
        tolerance=threshold.tolerance,
        repeats=repeats,
    )
    if repeats < 2 and d.verdict != stats.INVALID:
        # One repeat per arm shows request-to-request noise only; run-to-run noise (a server
        # start, the machine's state) is invisible. On an H100 an A/A pair of single repeats
        # "regressed" p99 TPOT by 12.8% (CI 12.5-13.1%): no verdict without a second repeat.
        d = replace(d, verdict=stats.INCONCLUSIVE, repeats_to_decide=2)
    return MetricComparison(
        metric=threshold.metric,
        label=label(threshold.metric),
        higher_is_better=threshold.higher_is_better,
        tolerance=threshold.tolerance,
        baseline=b_val,
        candidate=c_val,
        estimate=iv.estimate,
        low=iv.low,
        high=iv.high,
        p_value=iv.p_value,
        method=iv.method,
        verdict=d.verdict,
        repeats_to_decide=d.repeats_to_decide,
    )


def _geomean(values: list[float]) -> float:
    if not values or any(not (v > 0) for v in values):
        return math.nan
    return float(math.exp(statistics.fmean(math.log(v) for v in values)))


def _pooled_stat(repeats: list[list[np.ndarray]], stat: Callable[..., Any]) -> float:
    parts = [v for reqs in repeats for v in reqs]
    return float(stat(np.concatenate(parts))) if parts else math.nan


def compare(
    thresholds: Sequence[Threshold],
    baseline: Sequence[dict[str, Any]],
    candidate: Sequence[dict[str, Any]],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
) -> list[MetricComparison]:
    return [
        compare_metric(t, baseline, candidate, confidence=confidence, resamples=resamples, seed=i)
        for i, t in enumerate(thresholds)
    ]


def worst(verdicts: Iterable[str]) -> str:
    """The gate over verdicts: invalid, then regressed, then inconclusive; else pass."""
    seen = set(verdicts)
    for v in (stats.INVALID, stats.REGRESSED, stats.INCONCLUSIVE):
        if v in seen:
            return v
    return "pass"


def gate(rows: Sequence[MetricComparison]) -> str:
    return worst(r.verdict for r in rows)


def overall(perf: str, accuracy: Any | None) -> str:
    """The gate over the perf verdict and the accuracy comparison (if any), worst first."""
    return worst([perf] if accuracy is None else [perf, accuracy.verdict])
