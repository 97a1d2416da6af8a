"""``perfgate history``: what the nightly rule finds in a stored history, running nothing."""

from __future__ import annotations

from pathlib import Path

import click

from perfgate import baseline as bl
from perfgate.cli.common import chosen_scenario, fail, printable, scenario_options
from perfgate.decide.nightly import decide_night
from perfgate.documents.compare import EXIT_FOR
from perfgate.documents.io import ResultError
from perfgate.documents.spec import ScenarioError
from perfgate.history import judge_history, read_history
from perfgate.report.gate import night_head, render_history_section
from perfgate.report.mdtext import md_text


@click.command()
@click.argument("history_path", metavar="HISTORY", type=click.Path(dir_okay=False, path_type=Path))
@scenario_options
@click.option(
    "--baseline",
    "baseline_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The gate's baseline: its calibrated night-to-night noise, where it has one "
    "(default: estimated from the history).",
)
def history(
    history_path: Path, scenario_path: str | None, builtin: str | None, baseline_path: Path | None
) -> None:
    """Judge a stored nightly history again, running nothing: per gated metric (the
    scenario's [thresholds] and [gate] rule, as they are now) its level against the reference
    with its interval, PELT's change points with their p-values, and what the gate would
    conclude on the history's last night. Edit a tolerance, run this, and see what it would
    have said.

    Exit codes: 0 (it printed the analysis), 2 a file that cannot be read.

    \b
    Examples:
      perfgate history history/gpt-oss-120b.jsonl --scenario gpt-oss-120b
      perfgate history reports/demo-cpu.jsonl --scenario my.toml --baseline baselines/demo.json
    """
    try:
        scenario = chosen_scenario(
            scenario_path, builtin, "its [thresholds] and [gate] judge the history; "
        )
        nights = read_history(history_path)
        if not nights:
            raise ResultError(f"{history_path}: no nights in it (or no such file)")
        noise = bl.load(baseline_path).night_noise if baseline_path is not None else {}
    except (ScenarioError, ResultError) as exc:
        fail(str(exc))
    detection = judge_history(nights, scenario.thresholds, scenario.gate, noise)
    verdict, reason = decide_night(nights[-1], detection, scenario.gate, None)
    head = night_head(verdict, reason, EXIT_FOR.get(verdict, 2))
    lines = [
        f"## perfgate history: {md_text(scenario.name)}, {len(nights)} nights",
        "",
        f"On its last night the gate would say: {head}",
        "",
        *render_history_section(
            nights, detection, [t.metric for t in scenario.thresholds], scenario.gate
        ),
    ]
    click.echo(printable("\n".join(lines)))
