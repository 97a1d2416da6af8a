"""``perfgate baseline``: record or extend a stored baseline."""

from __future__ import annotations

from pathlib import Path

import click

from perfgate import baseline as bl
from perfgate.cli.common import (
    check_output_paths,
    fail,
)
from perfgate.documents.compare import EXIT_FOR, INVALID, PASS
from perfgate.documents.io import (
    COMPARE_SCHEMA,
    ResultError,
    read_json,
)
from perfgate.history import read_history

EXIT_PASS, EXIT_INVALID = EXIT_FOR[PASS], EXIT_FOR[INVALID]


@click.group()
def baseline() -> None:
    """Stored baselines for the nightly gate (baselines/*.json)."""


@baseline.command("record")
@click.argument("result", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The baseline file: created, or the run's starts added to it (same machine only).",
)
@click.option(
    "--arm",
    type=click.Choice(["baseline", "candidate"]),
    default="baseline",
    show_default=True,
    help="Which arm of the run is the reference build.",
)
@click.option(
    "--history",
    "history_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A history of unchanged nights: calibrate the night-to-night noise from it.",
)
def baseline_record(result: Path, out: Path, arm: str, history_path: Path | None) -> None:
    """Create or refresh a baseline from a compare (or gate) result's arm.

    Exit codes: 0 written, 2 a result that cannot be a baseline (incomplete, another
    machine or scenario) or a path that cannot be written.

    \b
    Examples:
      perfgate baseline record reports/run/results.json --out baselines/demo-cpu.json
    """
    check_output_paths((out, "--out"))  # no link or special file: before reading anything
    try:
        doc = read_json(result)
        if doc.get("schema") != COMPARE_SCHEMA:
            raise ResultError(f"{result}: a {doc.get('schema')} file; give a compare result")
        new = bl.from_run(doc, arm, str(result))
        if out.exists():
            new = bl.merge(bl.load(out), new, str(out))
        if history_path is not None:
            new.night_noise = bl.night_noise(read_history(history_path))
        bl.save(out, new)
    except ResultError as exc:
        fail(str(exc))
    starts = {k: len(m.per_start) for k, m in new.metrics.items()}
    click.echo(
        f"baseline {out}: {new.scenario} on {new.machine['gpu']} ({new.machine['cpu']}), "
        f"{max(starts.values(), default=0)} starts per metric"
        + (f", night-to-night noise from {history_path}" if history_path else "")
    )
