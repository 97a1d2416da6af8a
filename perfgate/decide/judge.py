"""A compare run judged as a whole, from its document: every gated metric over the starts, the
bursty-stream rule, accuracy by question, Holm over the family, the kernel comparison and the
run's verdict; the same for a stored file again (``recompute``)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from perfgate import __version__
from perfgate.decide import family, kernels
from perfgate.decide.accuracy import compare_arms
from perfgate.decide.comparison import compare
from perfgate.documents.compare import COMPLETE, INCONCLUSIVE, AccuracyComparison
from perfgate.documents.run import ARMS, CompareRun, Recomputed, recorded

# The bursty-stream rule: when tokens reached the client in bursts (``documents.bench.Bursts``),
# chunk gaps describe delivery, not generation, so these metrics are no basis for a verdict.
ITL_METRICS = tuple(
    f"{stat}_{base}_ms" for base in ("itl", "itl_per_token") for stat in ("mean", "median", "p99")
)


def recompute(doc: dict[str, Any]) -> tuple[CompareRun, Recomputed]:
    """A stored compare result whose comparison and verdict this perfgate's statistics compute
    again from the stored repeats (the file itself is not changed), with what the run itself
    reported; old files pass through ``migrate`` first. A sequential run is judged again at
    the alpha share its final look used."""
    run = CompareRun.from_json(doc)
    was = Recomputed(
        perfgate_version=__version__,
        verdict=run.verdict if run.status == COMPLETE else run.status,
        exit_code=run.exit_code,
    )
    judge_run(run, accuracy=all(arm in run.accuracy for arm in ARMS))
    if run.status != COMPLETE:  # a run that did not complete keeps its status
        run.verdict = None
    return recorded(run), was


def compare_repeats(run: CompareRun) -> None:
    """Every gated metric compared over the run's starts, at the current look's confidence
    (before the family-wise rule)."""
    sc = run.scenario
    run.comparison = compare(
        sc.thresholds,
        run.repeats["baseline"],
        run.repeats["candidate"],
        confidence=1 - run.alpha,
        noise=sc.start_noise,
        primary=sc.primary,
        plan_confidence=sc.confidence,  # a plan is for a fixed design at the scenario's
        windows=(
            [w.metrics for w in run.windows["baseline"]],
            [w.metrics for w in run.windows["candidate"]],
        ),
        blocks=_gpu_blocks(run),
    )
    bursty = [
        f"{arm} start {r.start if r.start is not None else '?'} repeat {r.repeat}"
        for arm in ARMS
        for r in run.repeats[arm]
        if r.result.bursts is not None and r.result.bursts.bursty
    ]
    if bursty:  # chunk gaps that describe delivery, not generation: not a basis for a verdict
        why = (
            "not gated: tokens reached the client in bursts in "
            + ", ".join(bursty[:3])
            + (f" and {len(bursty) - 3} more" if len(bursty) > 3 else "")
            + " (the repeats' warnings say where)"
        )
        # reported, but neither passing nor failing the run: secondary, undecided, and out of
        # the family's multiplicity (the other metrics are judged as usual)
        run.comparison = [
            replace(row, verdict=INCONCLUSIVE, primary=False, p_regress=math.nan, reason=why)
            if row.metric in ITL_METRICS
            else row
            for row in run.comparison
        ]


def _gpu_blocks(run: CompareRun) -> tuple[list[str], list[str]] | None:
    """Each start's GPU, in start order, when the arms ran in parallel on two GPUs."""
    if not run.scenario.parallel_gpus:
        return None
    b, c = ([str(s.get("gpus")) for s in run.servers[arm] if not s.get("profile")] for arm in ARMS)
    return b, c


def judge_run(run: CompareRun, *, accuracy: bool) -> None:
    """The final analysis: every gated metric, accuracy (``accuracy``: when both arms have
    it), Holm over the family, and the run's verdict."""
    compare_repeats(run)
    run.accuracy_comparison = compare_accuracy(run) if accuracy else None
    budgeted = run.design.get("budget") is not None  # looked at after every round
    run.comparison, run.accuracy_comparison = family.apply(
        run.comparison,
        run.accuracy_comparison,
        alpha=run.alpha,
        accuracy_alpha=family.accuracy_share(1 - run.scenario.confidence, len(run.comparison))
        if budgeted and run.accuracy_comparison is not None
        else None,
    )
    run.verdict = family.overall(run.comparison, run.accuracy_comparison)
    if all(run.windows[a] for a in ARMS):
        run.kernel_comparison = kernels.compare_kernels(
            [w.window for w in run.windows["baseline"]],
            [w.window for w in run.windows["candidate"]],
            confidence=run.scenario.confidence,
            top=run.scenario.profile.top,
        ).to_json()


def compare_accuracy(run: CompareRun) -> AccuracyComparison:
    """Accuracy paired by question; ``AccuracyError`` when the arms answered different
    questions."""
    return compare_arms(
        run.accuracy["baseline"],
        run.accuracy["candidate"],
        run.scenario.accuracy,
        confidence=run.scenario.confidence,
    )
