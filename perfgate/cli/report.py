"""``perfgate report``: render a stored result again."""

from __future__ import annotations

from pathlib import Path

import click

from perfgate.cli.common import (
    fail,
    out_console,
    printable,
    show_markdown,
)
from perfgate.decide.judge import recompute as recompute_result
from perfgate.documents.bench import BenchResult
from perfgate.documents.compare import EXIT_FOR, INVALID, PASS
from perfgate.documents.eval import EvalRun
from perfgate.documents.io import (
    BENCH_SCHEMA,
    COMPARE_SCHEMA,
    EVAL_SCHEMA,
    ResultError,
    read_json,
)
from perfgate.documents.run import CompareRun
from perfgate.report.accuracy_md import render_accuracy_section
from perfgate.report.bench_text import render_bench_text
from perfgate.report.markdown import render_compare_markdown

EXIT_PASS, EXIT_INVALID = EXIT_FOR[PASS], EXIT_FOR[INVALID]


@click.command()
@click.argument("result", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["markdown", "text"]),
    default="markdown",
    show_default=True,
    help="Markdown for a PR description, or text for a terminal.",
)
@click.option(
    "--recompute",
    is_flag=True,
    help="Compare results: compute the comparison and verdict again from the stored repeats "
    "with this perfgate's statistics (the file is not changed).",
)
def report(result: Path, fmt: str, recompute: bool) -> None:
    """Render a stored result file (from bench --out, compare or eval --out) again.

    Exit codes: 0 rendered, 2 a file that cannot be read (named with what is wrong).

    \b
    Examples:
      perfgate report reports/run/results.json > report.md
      perfgate report docs/gpu/results/h100-120b-tiled.json.xz --recompute
    """
    try:
        doc = read_json(result)
    except ResultError as exc:
        fail(str(exc))
    schema = doc["schema"]
    if recompute and schema != COMPARE_SCHEMA:
        fail(f"{result}: --recompute needs a compare result (results.json), not {schema}")
    try:
        # read typed first: a damaged file is a message naming what is missing
        if schema == COMPARE_SCHEMA:
            if recompute:
                md = render_compare_markdown(*recompute_result(doc))
            else:
                md = render_compare_markdown(CompareRun.from_json(doc))
        elif schema == EVAL_SCHEMA:
            evaluated = EvalRun.from_json(doc)
            md = "\n".join(render_accuracy_section(evaluated.arms, evaluated.comparison))
        else:
            text = render_bench_text(BenchResult.from_json(doc))
    except ResultError as exc:
        fail(f"{result}: {exc}")
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        fail(
            f"{result}: a {schema} document with a missing or malformed part "
            f"({type(exc).__name__}: {exc}); was it edited or cut short? Write it again with "
            "perfgate"
        )
    if schema == BENCH_SCHEMA:
        out_console.print(text, end="")
    elif fmt == "markdown":
        click.echo(printable(md), nl=False)
    else:
        show_markdown(md)
