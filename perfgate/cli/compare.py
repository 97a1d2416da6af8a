"""``perfgate compare``: paired servers, interleaved starts, a decision."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from perfgate import limits
from perfgate.cli.common import (
    BenchProgress,
    arm_options,
    check_output_paths,
    ci_output_options,
    ci_outputs,
    fail,
    interruptible,
    run_dir_and_command,
    say,
    scenario_from_flags,
    scenario_options,
    show_markdown,
)
from perfgate.documents.compare import EXIT_FOR, INVALID, PASS
from perfgate.documents.run import recorded
from perfgate.documents.spec import ScenarioError
from perfgate.report.markdown import (
    render_compare_markdown,
)
from perfgate.run.runner import run_compare
from perfgate.run.state import RunFailed
from perfgate.scenario import with_overrides

EXIT_PASS, EXIT_INVALID = EXIT_FOR[PASS], EXIT_FOR[INVALID]


@click.command()
@scenario_options
@click.option(
    "--starts",
    type=click.IntRange(min=1, max=limits.MAX_STARTS),
    default=None,
    help="Server starts per arm, a fixed design (overrides the scenario's starts and budget). "
    "A verdict needs two or more.",
)
@click.option(
    "--repeats-per-start",
    type=click.IntRange(min=1, max=limits.MAX_REPEATS),
    default=None,
    help="Timed repeats on each server start (overrides the scenario).",
)
@click.option(
    "--budget",
    default=None,
    metavar="N|TIME|N,TIME",
    help="Add rounds of starts until every primary metric is decided, at most N starts per "
    'arm and/or TIME (45m, 2h); "none" for the fixed design. Overrides the scenario.',
)
@click.option(
    "--seed",
    type=click.IntRange(min=0, max=limits.MAX_SEED),
    default=None,
    help="Seed of the rounds' random order (default: the scenario's, else drawn and recorded).",
)
@click.option(
    "--repeats",
    hidden=True,
    default=None,
    help="Replaced by --starts and --repeats-per-start.",
)
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run directory. Default: reports/<scenario>-<time>.",
)
@click.option(
    "--no-accuracy",
    "skip_accuracy",
    is_flag=True,
    help="Leave out the scenario's GPQA accuracy phase.",
)
@click.option(  # the earlier name of --no-accuracy
    "--skip-accuracy", "skip_accuracy_alias", is_flag=True, hidden=True, help="--no-accuracy."
)
@click.option(
    "--profile/--no-profile",
    "profile",
    default=None,
    help="Turn on (or off) the profiled window at the end of every server start: device time "
    "per decode step (gateable), kernel tables and the scenario's expect/forbid kernel "
    "assertions. Default: the scenario's [profile].",
)
@ci_output_options
@click.option(
    "--gpqa-path",
    type=click.Path(dir_okay=False),
    default=None,
    help="A local GPQA file (CSV/JSONL in the hub's schema) for the accuracy phase.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse, before any server starts, a design that cannot decide a gated metric at "
    "the scenario's calibrated start_noise (without it: a warning).",
)
@arm_options
def compare(
    scenario_path: str | None,
    builtin: str | None,
    starts: int | None,
    repeats_per_start: int | None,
    budget: str | None,
    seed: int | None,
    repeats: str | None,
    out_dir: Path | None,
    skip_accuracy: bool,
    skip_accuracy_alias: bool,
    gpqa_path: str | None,
    profile: bool | None,
    junit: Path | None,
    no_plots: bool,
    strict: bool,
    **arm_flags: Any,
) -> None:
    """Compare a baseline and a candidate vLLM and gate on the difference.

    Runs rounds of one server start per arm (or uses an arm's URL), in a random balanced
    order, with the scenario's workload repeated on each start; compares every gated metric
    over the starts with a confidence interval, gates on the whole family of tests, and writes
    results.json, report.md and the server logs to the run directory. With a budget, rounds
    are added until the comparison is decided or the budget is spent.

    Exit codes: 0 pass, 1 regression, 2 invalid or failed run, 3 inconclusive.

    \b
    Examples:
      perfgate compare --model gpt-oss-120b --candidate-vllm /venvs/pr/bin/vllm
      perfgate compare --scenario scenarios/demo-cpu.toml --candidate-arg=--max-num-seqs=2
    """
    try:
        if repeats is not None:
            raise ScenarioError(
                "--repeats was replaced: the unit is now the server start. Use --starts N "
                "(server starts per arm) and --repeats-per-start M, or --budget N"
            )
        scenario = scenario_from_flags(scenario_path, builtin, arm_flags)
        scenario = with_overrides(
            scenario,
            arm_overrides={},
            starts=starts,
            repeats_per_start=repeats_per_start,
            budget=budget,
            seed=seed,
            skip_accuracy=skip_accuracy or skip_accuracy_alias,
            gpqa_path=gpqa_path,
            profile=profile,
        )
    except ScenarioError as exc:
        fail(str(exc))
    check_output_paths((junit, "--junit"))
    run_dir, command = run_dir_and_command(out_dir, scenario.name, "compare")

    try:
        with interruptible(), BenchProgress() as bar:
            run = run_compare(
                scenario,
                run_dir,
                command,
                say,
                bar if bar.tty else None,
                plots=not no_plots,
                strict=strict,
            )
    except ScenarioError as exc:
        fail(str(exc))
    except RunFailed as exc:
        where = exc.run.results_path if exc.run else run_dir / "results.json"
        if exc.run is not None:
            if exc.run.save_error:
                say(f"warning: {exc.run.save_error}; results went to {where.parent} instead")
            ci_outputs(junit, None, exc.run, scenario.name, exc.run.report_path, say)
        fail(f"{exc}\n(results so far: {where})")
    show_markdown(render_compare_markdown(recorded(run)))
    if run.save_error:
        say(f"warning: {run.save_error}; results went to {run.results_path.parent} instead")
    ci_outputs(junit, None, run, scenario.name, run.report_path, say)
    say(f"report: {run.report_path}  results: {run.results_path}")
    sys.exit(run.exit_code)
