"""What a design can decide, said before anything runs: each gated metric's smallest decidable
tolerance at its calibrated noise and the starts allowed (``--strict`` refuses a design that
cannot decide one), and what else will keep a design from a speed verdict."""

from __future__ import annotations

from collections.abc import Callable

from perfgate.decide import decidability
from perfgate.decide.stats import FIRST_LOOK, look_share
from perfgate.documents.spec import Scenario, ScenarioError


def design_decidability(scenario: Scenario) -> list[decidability.Decidability]:
    """Each gated metric's decidability under the scenario's design and calibrated noise."""
    noise = scenario.start_noise
    most = scenario.budget.most_starts if scenario.budget else scenario.starts
    share = look_share(most, FIRST_LOOK, most, final=True) if scenario.budget else 1.0
    return decidability.check(
        scenario.thresholds,
        noise.cv if noise else {},
        starts_allowed=most,
        alpha=(1 - scenario.confidence) / 2 * share,
    )


def check_design(scenario: Scenario, say: Callable[[str], None], *, strict: bool) -> None:
    """Say, before anything runs, the smallest change the design can decide for each gated
    metric with calibrated noise; warn where a tolerance is below it, refuse under strict."""
    rows = design_decidability(scenario)
    if not any(r.checked for r in rows):
        return
    source = scenario.start_noise.source if scenario.start_noise else None
    say("decidability" + (f" (noise from {source})" if source else "") + ":")
    for row in rows:
        say(("  " if row.decidable or not row.checked else "  warning: ") + row.message())
    undecidable = [r for r in rows if r.checked and not r.decidable]
    if strict and undecidable:
        raise ScenarioError(
            f"{scenario.source}: --strict: the design cannot decide "
            + "; ".join(r.message() for r in undecidable)
            + ". Raise the tolerance (thresholds), the starts (budget or starts), or gate a "
            "quieter metric"
        )


def design_warnings(scenario: Scenario) -> list[str]:
    """What will keep this design from a speed verdict, said before anything runs."""
    out = []
    calibrated = set((scenario.start_noise.cv if scenario.start_noise else {}).keys())
    uncovered = [t.metric for t in scenario.thresholds if t.metric not in calibrated]
    for name, arm in scenario.arms.items():
        if arm.url and uncovered:
            out.append(
                f"the {name} is a running server (url): one server start, so "
                f"{', '.join(uncovered)} will be inconclusive (start-to-start variation "
                "unsampled); give [compare] start_noise from stored A/A runs, or let perfgate "
                "start that arm"
            )
    gpus = {name: arm.gpus for name, arm in scenario.arms.items() if not arm.url}
    crossover = scenario.parallel_gpus is not None  # both arms on both GPUs, in turn
    if len(gpus) == 2 and gpus["baseline"] != gpus["candidate"] and not crossover:
        out.append(
            f"the arms run on different GPUs (baseline {gpus['baseline'] or 'default'}, "
            f"candidate {gpus['candidate'] or 'default'}): the GPUs' own difference becomes "
            "part of the measured change; give both arms the same gpus"
        )
    if scenario.budget is None and scenario.starts >= 3 and scenario.starts % 2 == 1:
        out.append(
            f"starts = {scenario.starts} is odd: rounds are balanced in pairs (each arm first "
            f"once), so one arm goes first once more than the other, and whatever a start "
            f"inherits from the one before it biases the change by up to 1/{scenario.starts} "
            "of that effect; give an even number of starts"
        )
    if scenario.budget is None and scenario.starts < 2 and uncovered and not out:
        out.append(
            f"--starts {scenario.starts}: one server start per arm gives no speed verdict "
            "(start-to-start variation unsampled); use two or more, or a budget"
        )
    return out
