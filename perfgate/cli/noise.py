"""``perfgate noise``: a scenario's ``start_noise`` calibrated from stored compare results."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import click

from perfgate.cli.common import chosen_scenario, fail, printable, scenario_options
from perfgate.decide.calibration import Calibration, calibrate, provenance
from perfgate.decide.design import design_decidability
from perfgate.documents.compare import StartNoise
from perfgate.documents.io import COMPARE_SCHEMA, ResultError, read_json
from perfgate.documents.run import CompareRun
from perfgate.documents.spec import Scenario, ScenarioError
from perfgate.report.mdtext import md_text


def _read_run(path: Path) -> CompareRun:
    """A compare result from a file or a run directory (its results.json)."""
    if path.is_dir():
        path = path / "results.json"
    doc = read_json(path)
    if doc.get("schema") != COMPARE_SCHEMA:
        raise ResultError(
            f"{path}: a {doc.get('schema')} document; perfgate noise reads compare results "
            "(results.json of perfgate compare or gate)"
        )
    try:
        return CompareRun.from_json(doc)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise ResultError(
            f"{path}: a compare result with a missing or malformed part "
            f"({type(exc).__name__}: {exc}); was it edited or cut short?"
        ) from None


def _up(cv: float) -> float:
    """``cv`` rounded up to two significant digits: a calibration errs toward more noise."""
    digits = 1 - math.floor(math.log10(cv))
    return math.ceil(cv * 10**digits - 1e-9) / 10**digits


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x * 100:.2g}%"


def render(scenario: Scenario, rows: list[Calibration], source: str, notes: list[str]) -> str:
    usable = [r for r in rows if r.df > 0]
    calibrated = dataclasses.replace(
        scenario,
        start_noise=StartNoise(
            cv={r.metric: _up(r.cv) for r in usable}, df=min((r.df for r in usable), default=1)
        ),
    )
    decides = {d.metric: d for d in design_decidability(calibrated)}
    most = scenario.budget.most_starts if scenario.budget else scenario.starts
    lines = [
        f"## perfgate noise: {md_text(scenario.name)}",
        "",
        "Between-start spread of each gated metric (SD of the log per-start values, about a "
        "coefficient of variation), pooled over every arm of every run: the noise the decision "
        f"rule replicates. From {md_text(source)}.",
        "",
        f"| metric | noise | df | starts | widest arm | {most} starts/arm decide | tolerance |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        w = r.widest
        d = decides.get(r.metric)
        smallest = d.smallest if d is not None and d.checked else None
        tolerance = next(t.tolerance for t in scenario.thresholds if t.metric == r.metric)
        short = smallest is not None and smallest > tolerance
        lines.append(
            f"| {r.label} | {_pct(r.cv)} | {r.df} | {r.starts} | "
            + (f"{_pct(w.sd)} ({md_text(w.where)})" if w else "n/a")
            + f" | {_pct(smallest)} | {_pct(tolerance)}"
            + (" (below what the design decides)" if short else "")
            + " |"
        )
    if notes:
        lines += ["", *(f"- {n}" for n in notes)]
    if usable:
        noise = ", ".join(f"{r.metric} = {_up(r.cv):g}" for r in usable)
        lines += [
            "",
            "For the scenario's [compare] table (each noise rounded up; the smallest df):",
            "",
            "```toml",
            f"start_noise = {{ {noise} }}",
            f"start_noise_df = {min(r.df for r in usable)}",
            f"start_noise_source = {json.dumps(source)}",
            "```",
        ]
    return "\n".join(lines) + "\n"


@click.command()
@click.argument(
    "results", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="RESULTS..."
)
@scenario_options
def noise(results: tuple[Path, ...], scenario_path: str | None, builtin: str | None) -> None:
    """Calibrate a scenario's start_noise from stored compare results (results.json,
    .json.xz, or run directories): each gated metric's between-start spread, pooled over
    every arm of every run, the widest single arm beside it, what the scenario's design
    decides at that noise, and the [compare] lines to paste. A/A runs are the usual input;
    A/B runs count too (each arm's spread around its own level). Interrupted runs count
    with the starts they finished.

    Exit codes: 0 (it printed the calibration), 2 a file that cannot be read or no metric
    with two starts in an arm.

    \b
    Examples:
      perfgate noise docs/gpu/results/h100-120b-*.json.xz --scenario gpt-oss-120b
      perfgate noise reports/aa-night1 reports/aa-night2 --scenario my.toml
    """
    try:
        runs = [(p.name if p.is_file() else str(p), _read_run(p)) for p in results]
        if scenario_path is None and builtin is None:
            scenario = runs[0][1].scenario
        else:
            scenario = chosen_scenario(scenario_path, builtin)
    except (ResultError, ScenarioError) as exc:
        fail(str(exc))
    notes = [
        f"{name} is a run of scenario {md_text(run.scenario.name)}, not {md_text(scenario.name)}"
        for name, run in runs
        if run.scenario.name != scenario.name
    ]
    notes += [
        f"{name} ended {run.status}: the starts it finished count"
        for name, run in runs
        if run.status != "complete"
    ]
    rows = calibrate(runs, [t.metric for t in scenario.thresholds])
    notes += [
        f"{r.label}: {r.missing} start(s) without a value left out" for r in rows if r.missing
    ]
    if not any(r.df > 0 for r in rows):
        fail(
            "no gated metric has two starts with a value in any arm of these results; "
            "calibrate from runs of two or more starts per arm (starts = 2 or a budget)"
        )
    click.echo(printable(render(scenario, rows, provenance(runs), notes)), nl=False)
