"""``perfgate gate``: the nightly job.

Tonight's build is the scenario's candidate arm. Two ways to judge it:

- **against the stored baseline** (default): ``starts`` server starts of tonight's build; each
  gated metric's per-start values are compared with the baseline's stored per-start values
  (Welch on the logs, Holm over the family: the same rule as ``compare``, the baseline's
  starts standing in for a baseline arm measured on other nights);
- **paired** (``--paired``): a full ``compare`` of the scenario's baseline arm (a reference
  build on the same machine the same night, e.g. the last release's venv) against tonight's.

Either way the night is appended to the history (``perfgate.history``) with tonight's value and
its ratio to the reference per metric, and change points are found over the whole history. The
gate's verdict: **regressed** (exit 1) when a change point that persists (at least
``[gate] min_nights`` nights, reaching tonight) steps beyond the metric's tolerance in the bad
direction; **inconclusive** (exit 3) when such a change has not persisted long enough yet, or
tonight alone is worse beyond the tolerance; **invalid** (exit 2) for a run that did not
complete; else **pass** (exit 0). The machine must match the baseline's fingerprint
(``perfgate.baseline``), checked before any server starts.

With ``accuracy`` (``perfgate gate --accuracy``, on the nights the schedule picks), tonight's last
start also answers GPQA, judged question by question against the answers stored in the baseline
(the same paired test and margin as ``compare``, one more test in the Holm family). An accuracy
drop is **regressed** that night: unlike a speed change it needs no nights to persist, since
the paired test already holds every question's repeats and a wrong answer is not noise.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

from perfgate import baseline as bl
from perfgate import environment
from perfgate.decide import family
from perfgate.decide.accuracy import compare_arms
from perfgate.decide.comparison import compare_values, start_values
from perfgate.decide.nightly import decide_night, nightly_noise_problems
from perfgate.documents.compare import (
    COMPLETE,
    MetricComparison,
)
from perfgate.documents.io import write_text_private
from perfgate.documents.nightly import SAME_NIGHT, Baseline, GateOutcome, Night, NightMetric
from perfgate.documents.spec import Scenario, ScenarioError
from perfgate.history import append_night, check_history, judge_history, read_history
from perfgate.report.gate import render_gate_markdown
from perfgate.report.plots import compare_plots, trend
from perfgate.run import runner
from perfgate.run.preflight import preflight, resolve_model
from perfgate.run.state import LiveRun, SayFn, make_run_dir


def check_baseline(
    scenario: Scenario, base: Baseline, where: Path, *, paired: bool = False
) -> dict[str, Any]:
    """This machine's fingerprint; ScenarioError when the baseline is another's or lacks a
    gated metric, or when tonight's starts could not be measured as the baseline's were
    (before any server starts)."""
    env = environment.capture()
    now = bl.machine(env, scenario.to_json())
    if (problem := bl.mismatch(base.machine, now)) is not None:
        raise ScenarioError(
            f"{where} was recorded on another machine or scenario ({problem}): a baseline "
            "is per machine and scenario; record one here with perfgate baseline record"
        )
    if scenario.accuracy.enabled and not paired:
        check_reference_accuracy(scenario, base, where)
    missing = [t.metric for t in scenario.thresholds if t.metric not in base.metrics]
    if missing:
        raise ScenarioError(
            f"{where} has no stored values for {', '.join(missing)}; record the baseline from "
            "a run that gated them, or remove them from [thresholds]"
        )
    return now


# what defines an accuracy measurement: a stored answer sheet judges tonight's only if these match
ACCURACY_FIELDS = (
    "source", "path", "subset", "k", "limit", "endpoint", "temperature", "max_tokens",
    "reasoning_effort", "shuffle_seed",
)  # fmt: skip


def check_reference_accuracy(scenario: Scenario, base: Baseline, where: Path) -> None:
    """ScenarioError unless the baseline stores answers measured as tonight's will be."""
    if base.accuracy is None:
        raise ScenarioError(
            f"{where} stores no accuracy answers, so --accuracy has nothing to judge tonight "
            "against: record the baseline from a run that measured accuracy (a compare without "
            "--no-accuracy), or leave out --accuracy"
        )
    stored = base.accuracy.spec
    now = scenario.accuracy
    for name in ACCURACY_FIELDS:
        if getattr(stored, name) != getattr(now, name):
            raise ScenarioError(
                f"{where}: its accuracy answers were measured with [accuracy] {name} = "
                f"{getattr(stored, name)!r}, tonight's scenario has {getattr(now, name)!r}; "
                "answers are compared only when measured alike: record a new baseline"
            )


def _tonight(run: LiveRun, model: str, starts: int, say: SayFn) -> None:
    """``starts`` server starts of tonight's build (the candidate arm), one after another;
    accuracy, when the scenario has it, on the last (after its timed repeats)."""
    for i in range(starts):
        say(f"night: start {i + 1} of {starts}")
        last = i == starts - 1
        with_accuracy = run.scenario.accuracy.enabled and last
        runner._one_start(run, model, say, "candidate", with_accuracy=with_accuracy)


def _against_baseline(run: LiveRun, base: Baseline) -> None:
    sc = run.scenario
    windows = [w.metrics for w in run.windows["candidate"]]
    rows: list[MetricComparison] = []
    chosen = None if sc.primary is None else set(sc.primary)
    for t in sc.thresholds:
        rows.append(
            compare_values(
                t,
                bl.per_start(base, t),
                start_values(t, run.repeats["candidate"], windows),
                confidence=1 - run.alpha,
                primary=chosen is None or t.metric in chosen,
            )
        )
    answers = None
    if sc.accuracy.enabled:
        assert base.accuracy is not None, "check_baseline refuses a baseline without answers"
        reference = base.accuracy.arm
        run.accuracy["baseline"] = reference  # the stored answers stand in for a baseline arm
        answers = compare_arms(
            reference, run.accuracy["candidate"], sc.accuracy, confidence=1 - run.alpha
        )
    run.comparison, run.accuracy_comparison = family.apply(rows, answers, alpha=run.alpha)
    run.verdict = family.overall(run.comparison, run.accuracy_comparison)


def _check_night_noise(scenario: Scenario, base: Baseline, say: SayFn, *, strict: bool) -> None:
    """Before the night: a gated metric noisier a night than its tolerance is named (a
    warning; ``strict``: refused)."""
    problems = nightly_noise_problems(
        {t.metric: t.tolerance for t in scenario.thresholds},
        base.night_noise,
        {m: v.cv for m, v in base.metrics.items() if math.isfinite(v.cv)},
        scenario.starts,
    )
    if problems and strict:
        raise ScenarioError("--strict: " + "; ".join(problems) + " (without --strict: a warning)")
    for problem in problems:
        say(f"warning: {problem}")


def run_gate(
    scenario: Scenario,
    baseline_path: Path,
    history_path: Path,
    run_dir: Path,
    command: str,
    *,
    commit: str | None,
    date: str | None,
    paired: bool,
    say: SayFn,
    plots: bool = True,
    strict: bool = False,
) -> GateOutcome:
    """Run tonight, append it to the history, judge it, decide; ``RunFailed`` (results
    written, nothing appended) when tonight cannot complete. The caller holds the history
    (``history.locked``). A scenario that runs its arms at once measured its baseline beside
    the other arm, so tonight runs the reference beside the candidate (``--paired``)."""
    if not paired and (scenario.colocate or scenario.parallel_gpus):
        say(
            "the scenario runs its arms at once (colocate or parallel_gpus), as its baseline "
            "was measured: tonight runs the reference build beside the candidate (--paired)"
        )
        paired = True
    check_history(history_path)  # a damaged history would lose tonight after its whole run
    base = bl.load(baseline_path)
    fingerprint = check_baseline(scenario, base, baseline_path, paired=paired)
    _check_night_noise(scenario, base, say, strict=strict)
    if paired:
        run = runner.run_compare(scenario, run_dir, command, say, plots=plots)
    else:
        preflight(scenario)
        run = LiveRun(scenario=scenario, run_dir=run_dir, command=command)
        run.design = {**runner.new_design(scenario), "gate": "against the stored baseline"}
        make_run_dir(run_dir)
        run.save()
        with runner.recording(run):
            _tonight(run, resolve_model(scenario), scenario.starts, say)
            _against_baseline(run, base)
            run.status = COMPLETE
    night = Night(
        date=date or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        commit=commit,
        fingerprint={**fingerprint, **bl._software(run.to_json(), "candidate")},
        metrics={
            r.metric: NightMetric(
                value=r.candidate,
                ratio=1 + r.estimate,
                low=r.low,
                high=r.high,
                verdict=r.verdict,
                starts=r.n_candidate,
                se=r.se,
                df=r.df,
            )
            for r in run.comparison
        },
        verdict=str(run.verdict),
        run_dir=str(run_dir),
        reference=SAME_NIGHT if paired else base.identity,
    )
    append_night(history_path, night)
    nights = read_history(history_path)
    detection = judge_history(nights, scenario.thresholds, scenario.gate, base.night_noise)
    verdict, reason = decide_night(night, detection, scenario.gate, run.accuracy_comparison)
    outcome = GateOutcome(run, night, nights, detection, verdict, reason)
    if plots:
        with contextlib.suppress(Exception):  # a picture never costs the night
            out = run.results_path.parent
            if not paired:
                run.plots = compare_plots(run, out)
            run.plots += [
                name
                for t in scenario.thresholds
                if (name := trend(nights, detection, t.metric, t.tolerance, out))
            ]
            run.save()
    with contextlib.suppress(OSError):
        write_text_private(run.report_path, render_gate_markdown(outcome))
        outcome.report = run.report_path
    return outcome
