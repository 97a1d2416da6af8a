"""The kernel-level A/B table: which kernels (GPU) or top-level operators (CPU) appeared,
disappeared or changed in the decode steps of the profiled windows, with the interval of each
change across server starts, and how much of the change in device time per step they explain.

Each start's window gives, per kernel, its time per decode step at the window's batch (0 where
it did not run: ``documents.kernels.Window.kernels``). A kernel's change is the difference of the
arms' mean time per step, with Welch's t interval over the starts (raw scale: a kernel can be 0
in one arm). Listed: every kernel that appeared or disappeared, and those whose change is at
least ``same_within`` of the baseline's time per step with an interval that excludes 0 (or is
unbounded: one start in an arm); largest change first, at most ``top``. The summary sets
their summed change beside the change in mean time per step (the sum over every kernel
equals it exactly, by construction).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from perfgate.decide.stats import welch_difference
from perfgate.documents.compare import KernelChange, KernelComparison
from perfgate.documents.kernels import Window


def _per_start(windows: Sequence[Window], name: str, attr: str) -> list[float]:
    out = []
    for w in windows:
        k = next((k for k in w.kernels if k.name == name), None)
        out.append(getattr(k, attr) if k is not None else 0.0)
    return out


def _mean_where_ran(windows: Sequence[Window], name: str, attr: str) -> float:
    ran = [getattr(k, attr) for w in windows for k in w.kernels if k.name == name]
    return statistics.fmean(ran) if ran else math.nan


def compare_kernels(
    baseline: Sequence[Window],
    candidate: Sequence[Window],
    *,
    confidence: float = 0.95,
    top: int = 15,
    same_within: float = 0.005,
) -> KernelComparison:
    """The table from each arm's windows (one per server start)."""
    nan = math.nan
    sources = {w.source for w in (*baseline, *candidate)}
    batches = {w.batch for w in (*baseline, *candidate)}
    steps_b = [sum(k.us_per_step for k in w.kernels) for w in baseline]
    steps_c = [sum(k.us_per_step for k in w.kernels) for w in candidate]
    head: dict[str, Any] = {
        "source": "/".join(sorted(sources)),
        "batch": min(batches) if batches else 0,
        "starts": (len(baseline), len(candidate)),
        "confidence": confidence,
    }
    problem = None
    if not baseline or not candidate:
        problem = "an arm has no profiled window"
    elif len(sources) > 1 or len(batches) > 1:
        problem = f"the windows differ in source ({sources}) or decode batch ({batches})"
    elif any(w.decode_steps == 0 for w in (*baseline, *candidate)):
        problem = "a window had no decode step at the batch"
    if problem:
        return KernelComparison(**head, baseline_step_us=nan, candidate_step_us=nan,
                                step_diff_us=nan, step_low=nan, step_high=nan,
                                listed_diff_us=nan, problem=problem)  # fmt: skip
    d, lo, hi = welch_difference(steps_b, steps_c, confidence=confidence)
    base_step = statistics.fmean(steps_b)
    names = {k.name for w in (*baseline, *candidate) for k in w.kernels}
    rows = []
    for name in names:
        b = _per_start(baseline, name, "us_per_step")
        c = _per_start(candidate, name, "us_per_step")
        kd, klo, khi = welch_difference(b, c, confidence=confidence)
        in_b = any(k.name == name for w in baseline for k in w.kernels)
        in_c = any(k.name == name for w in candidate for k in w.kernels)
        if in_b and in_c:
            within_noise = math.isfinite(klo) and not (klo > 0 or khi < 0)
            if within_noise or abs(kd) < same_within * base_step:
                continue
            change = "slower" if kd > 0 else "faster"
        else:
            change = "appeared" if in_c else "disappeared"
        rows.append(
            KernelChange(
                name=name,
                change=change,
                baseline_us_per_call=_mean_where_ran(baseline, name, "us_per_call"),
                candidate_us_per_call=_mean_where_ran(candidate, name, "us_per_call"),
                baseline_calls_per_step=statistics.fmean(
                    _per_start(baseline, name, "calls_per_step")
                ),
                candidate_calls_per_step=statistics.fmean(
                    _per_start(candidate, name, "calls_per_step")
                ),
                baseline_us_per_step=statistics.fmean(b),
                candidate_us_per_step=statistics.fmean(c),
                diff_us_per_step=kd,
                low=klo,
                high=khi,
            )
        )
    rows.sort(key=lambda r: (-abs(r.diff_us_per_step), r.name))
    rows = rows[:top]
    return KernelComparison(
        **head,
        baseline_step_us=base_step,
        candidate_step_us=statistics.fmean(steps_c),
        step_diff_us=d,
        step_low=lo,
        step_high=hi,
        listed_diff_us=sum(r.diff_us_per_step for r in rows),
        rows=rows,
    )
