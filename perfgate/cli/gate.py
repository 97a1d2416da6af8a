"""``perfgate gate``: tonight against a stored baseline and the history."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from perfgate import limits
from perfgate.cli.common import (
    arm_options,
    check_output_paths,
    ci_output_options,
    ci_outputs,
    fail,
    interruptible,
    out_console,
    run_dir_and_command,
    say,
    scenario_from_flags,
    scenario_options,
    show_markdown,
)
from perfgate.documents.compare import EXIT_FOR, INVALID, PASS
from perfgate.documents.io import (
    ResultError,
)
from perfgate.documents.spec import ScenarioError
from perfgate.history import locked
from perfgate.run.gate import run_gate
from perfgate.run.state import RunFailed
from perfgate.scenario import with_overrides

EXIT_PASS, EXIT_INVALID = EXIT_FOR[PASS], EXIT_FOR[INVALID]


@click.command()
@scenario_options
@click.option(
    "--baseline",
    "baseline_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The stored baseline (baselines/NAME.json, from perfgate baseline record).",
)
@click.option(
    "--history",
    "history_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The history file (JSONL, appended to; created when missing).",
)
@click.option("--commit", default=None, help="Tonight's commit (named in the bisect range).")
@click.option("--date", "date", default=None, help="Tonight's label (default: now).")
@click.option(
    "--starts",
    type=click.IntRange(min=2, max=limits.MAX_STARTS),
    default=None,
    help="Server starts of tonight's build (default: the scenario's starts).",
)
@click.option(
    "--paired",
    is_flag=True,
    help="Run the scenario's baseline arm the same night as the reference (a full compare) "
    "instead of judging against the stored baseline's values.",
)
@click.option(
    "--profile/--no-profile",
    "profile",
    default=None,
    help="Turn on (or off) a profiled window on every start. Default: the scenario's [profile].",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse, before any server starts, a gated metric whose night-to-night noise "
    "exceeds its tolerance (without it: a warning).",
)
@click.option(
    "--accuracy",
    "with_accuracy",
    is_flag=True,
    help="Also run the scenario's [accuracy] on tonight's last start and judge it per "
    "question against the answers stored in the baseline (default: speed only).",
)
@click.option(
    "--gpqa-path", default=None, help="Local GPQA file for --accuracy (implies source local)."
)
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Tonight's run directory. Default: reports/<scenario>-gate-<time>.",
)
@ci_output_options
@arm_options
def gate(
    scenario_path: str | None,
    builtin: str | None,
    baseline_path: Path,
    history_path: Path,
    commit: str | None,
    date: str | None,
    starts: int | None,
    paired: bool,
    profile: bool | None,
    strict: bool,
    with_accuracy: bool,
    gpqa_path: str | None,
    out_dir: Path | None,
    junit: Path | None,
    no_plots: bool,
    **arm_flags: Any,
) -> None:
    """The nightly job: tonight's build (the scenario's candidate arm) against a stored
    baseline, appended to a history; fails on a certain large regression tonight, or a level
    worse than the tolerance that has lasted [gate] min_nights.

    Exit codes: 0 pass, 1 regressed (at once, by its level, or with --accuracy an accuracy
    drop), 2 invalid or failed, 3 pending (worse than a tolerance, not yet established).

    \b
    Examples:
      perfgate gate --model gpt-oss-120b --baseline baselines/gpt-oss-120b-h200.json \\
          --history history/gpt-oss-120b.jsonl --commit $SHA \\
          --candidate-vllm /venvs/nightly/bin/vllm
    """

    try:
        scenario = scenario_from_flags(scenario_path, builtin, arm_flags)
        if with_accuracy and not (scenario.accuracy.enabled or gpqa_path):
            raise ScenarioError(
                f"--accuracy: {scenario.source} has no [accuracy] section; add one (or give "
                "--gpqa-path), or leave out --accuracy"
            )
        if gpqa_path is not None and not with_accuracy:
            raise ScenarioError("--gpqa-path is for --accuracy; add --accuracy or leave it out")
        scenario = with_overrides(
            scenario,
            arm_overrides={},
            starts=starts,
            skip_accuracy=not with_accuracy,
            gpqa_path=gpqa_path,
            profile=profile,
        )
    except ScenarioError as exc:
        fail(str(exc))
    check_output_paths((junit, "--junit"))
    run_dir, command = run_dir_and_command(out_dir, scenario.name, "gate")

    try:
        with interruptible(), locked(history_path):  # one night at a time per history
            outcome = run_gate(
                scenario,
                baseline_path,
                history_path,
                run_dir,
                command,
                commit=commit,
                date=date,
                paired=paired,
                say=say,
                plots=not no_plots,
                strict=strict,
            )
    except (ScenarioError, ResultError) as exc:
        fail(str(exc))
    except RunFailed as exc:
        where = exc.run.results_path if exc.run else run_dir / "results.json"
        if exc.run is not None:
            ci_outputs(junit, None, exc.run, scenario.name, exc.run.report_path, say)
        fail(f"{exc}\n(results so far: {where}; nothing was appended to the history)")
    report = outcome.report
    if report:
        show_markdown(report.read_text())
    else:
        out_console.print(outcome.reason)
    ci_outputs(junit, outcome, outcome.run, scenario.name, report, say)
    say(f"report: {report or '(not written)'}  history: {history_path}")
    sys.exit(outcome.exit_code)
