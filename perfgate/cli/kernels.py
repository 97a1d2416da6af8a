"""``perfgate kernels``: a kernel table from torch-profiler traces, or a diff."""

from __future__ import annotations

from pathlib import Path

import click

from perfgate import profiling, steps
from perfgate.cli.common import (
    fail,
    printable,
)
from perfgate.documents.compare import EXIT_FOR, INVALID, PASS
from perfgate.documents.kernels import ProfileError
from perfgate.report.kernels_md import render_kernel_diff, render_kernel_table, render_steps

EXIT_PASS, EXIT_INVALID = EXIT_FOR[PASS], EXIT_FOR[INVALID]


@click.command()
@click.argument("traces", nargs=-1, required=True, type=click.Path(exists=False, path_type=Path))
@click.option(
    "--against",
    "against",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Baseline trace(s): print the difference, TRACES being the candidate.",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Rows of the table: the kernels with the most time.",
)
@click.option(
    "--steps",
    "show_steps",
    is_flag=True,
    help="Also the engine steps vLLM annotated in the trace: decode steps by batch size with "
    "their device time per step, prefill and mixed steps apart.",
)
def kernels(
    traces: tuple[Path, ...], against: tuple[Path, ...], top: int, show_steps: bool
) -> None:
    """Kernel table of torch-profiler trace(s) (files or folders), or a diff with --against.

    Exit codes: 0 printed, 2 no trace or an unreadable one.

    \b
    Examples:
      perfgate kernels reports/run/profile-candidate
      perfgate kernels cand.pt.trace.json.gz --against base.pt.trace.json.gz
      perfgate kernels reports/run/profile-candidate --steps
    """
    try:
        files = profiling.trace_files(traces)
        docs = profiling.load_traces(files)  # read once: for the table and the steps
        table = profiling.kernel_table(docs, [str(p) for p in files])
        base = profiling.table_from_files(profiling.trace_files(against)) if against else None
    except ProfileError as exc:
        fail(str(exc))
    if show_steps:
        for path, doc in zip(files, docs, strict=True):
            source, found = steps.steps_of(doc)
            click.echo(printable("\n".join(render_steps(str(path), source, steps.groups(found)))))
    if base is None:
        md = "\n".join(render_kernel_table(table, top))
    else:
        md = "\n".join(render_kernel_diff(base, table, top))
    click.echo(printable(md))  # Markdown as text: kernel names are too long for a terminal table
