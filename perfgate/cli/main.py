"""The ``perfgate`` command group: one thin module per command, each parsing its flags,
handing the job to the module that owns it, rendering, and picking the exit code.

Exit codes: 0 = pass (a valid run), 1 = regression found, 2 = the run failed or was invalid
(bad input, server unreachable, failed requests, wrong lengths), 3 = inconclusive.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.text import Text

from perfgate import __version__
from perfgate.cli.baseline import baseline
from perfgate.cli.bench import bench
from perfgate.cli.common import (
    err_console,
)
from perfgate.cli.compare import compare
from perfgate.cli.eval import eval_
from perfgate.cli.gate import gate
from perfgate.cli.history import history
from perfgate.cli.kernels import kernels
from perfgate.cli.noise import noise
from perfgate.cli.report import report
from perfgate.documents.compare import EXIT_FOR, INVALID, PASS

EXIT_PASS, EXIT_INVALID = EXIT_FOR[PASS], EXIT_FOR[INVALID]


class _Group(click.Group):
    """Any unexpected exception exits 2 ("the run failed"), never Python's 1, which a CI job
    would read as "regression found"."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            err_console.print("interrupted", markup=False)
            sys.exit(EXIT_INVALID)
        except Exception:
            err_console.print_exception()
            err_console.print(
                Text.assemble(
                    ("internal error", "bold red"),
                    " (a perfgate bug: please report it with the traceback above); exit 2",
                )
            )
            sys.exit(EXIT_INVALID)


@click.group(
    cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="perfgate")
def main() -> None:
    """Decide, with evidence, whether a change to an LLM serving stack made it faster or slower."""


main.add_command(bench)
main.add_command(compare)
main.add_command(report)
main.add_command(eval_)
main.add_command(gate)
main.add_command(history)
main.add_command(baseline)
main.add_command(kernels)
main.add_command(noise)
