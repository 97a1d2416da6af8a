"""The parts every command shares: consoles that scrub secrets, ``fail``, the progress bar,
option types and option sets, the CI outputs, and Ctrl-C / SIGTERM as a clean stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markdown import Markdown
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from perfgate import limits, redact
from perfgate.documents.bench import Workload
from perfgate.documents.compare import EXIT_FOR, INVALID, PASS
from perfgate.documents.io import ResultError, check_output_file
from perfgate.documents.nightly import GateOutcome
from perfgate.documents.run import CompareRun, recorded
from perfgate.documents.spec import Scenario, ScenarioError
from perfgate.report.gate import write_junit
from perfgate.scenario import builtin_names, load_builtin, parse_env_pairs, with_overrides
from perfgate.scenario import load as load_scenario

EXIT_PASS, EXIT_INVALID = EXIT_FOR[PASS], EXIT_FOR[INVALID]


class _Console(Console):
    """A console that prints no secret: strings and Markdown sources are scrubbed first."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(_scrubbed(o) for o in objects), **kwargs)


# Control characters but newline and tab: a server's or a file's text could otherwise move the
# cursor, retitle the terminal or hide what follows (ESC sequences pass rich untouched).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with its secrets scrubbed and its control characters removed."""
    return _CONTROL.sub("", redact.scrub(text))


def show_markdown(markdown: str) -> None:
    """A report on standard output: laid out by rich on a terminal; elsewhere (a CI log, a
    pipe) the Markdown itself, unwrapped, so no header or verdict is cut at 80 columns."""
    if out_console.is_terminal:
        out_console.print(Markdown(markdown))
    else:
        click.echo(printable(markdown))


def _scrubbed(obj: Any) -> Any:
    if isinstance(obj, str):
        return printable(obj)
    if isinstance(obj, Markdown):
        return Markdown(printable(obj.markup))
    if isinstance(obj, Text):
        clean = obj.copy()
        clean.plain = printable(obj.plain)
        return clean
    return obj


# Messages carry user input and server logs: printed literally, never as rich markup (a
# "[/x]" in a log line would crash the error path, "[arms.baseline]" would vanish).
err_console = _Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
out_console = _Console(highlight=False, soft_wrap=True, markup=False)


def say(message: str) -> None:
    """One line of a run's progress, on stderr (a ``SayFn``)."""
    err_console.print(message)


def fail(message: str) -> None:
    """Print an error that names the cause and the fix, and exit 2."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", printable(message)))
    sys.exit(EXIT_INVALID)


class BenchProgress:
    """A rich bar on a terminal; one plain line per 10% otherwise (CI logs stay readable)."""

    def __init__(self) -> None:
        self.tty = err_console.is_terminal
        self._bars: dict[str, Any] = {}
        self._last: dict[str, int] = {}
        self._rich: Progress | None = None
        if self.tty:
            self._rich = Progress(
                TextColumn("{task.description:<10}", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err_console,
                transient=False,
            )

    def __enter__(self) -> BenchProgress:
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()

    def __call__(self, phase: str, done: int, total: int) -> None:
        if self._rich is not None:
            if phase not in self._bars:
                self._bars[phase] = self._rich.add_task(phase, total=total)
            self._rich.update(self._bars[phase], completed=done, total=total)
            return
        step = max(1, total // 10)
        due = done == 0 or done == total or done - self._last.get(phase, 0) >= step
        if due and self._last.get(phase) != done:
            err_console.print(f"{phase}: {done}/{total}", markup=False)
            self._last[phase] = done


WORKLOAD = Workload()  # the one set of defaults, shared with scenarios


class ConcurrencyType(click.ParamType):
    """A positive integer, or 'none' for no cap."""

    name = "N|none"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | None:
        if value is None or str(value).lower() == "none":
            return None
        try:
            n = int(value)
        except ValueError:
            n = 0
        if not 1 <= n <= limits.MAX_CONCURRENCY:
            self.fail(
                f"{value!r} is not a count from 1 to {limits.MAX_CONCURRENCY} or 'none' (no cap)",
                param,
                ctx,
            )
        return n


def client_processes_option(value: str) -> int:
    """``--client-processes``: a count, or "auto" (0)."""
    if value.strip().lower() == "auto":
        return 0
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 1:
        raise click.BadParameter(
            f'{value!r}: give "auto" or a number of processes, 1 or more',
            param_hint="--client-processes",
        )
    return n


def parse_percentiles(value: str) -> tuple[float, ...]:
    try:
        out = tuple(float(p) for p in value.split(",") if p.strip())
    except ValueError:
        out = ()
    if not out:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of numbers, e.g. 90,99",
            param_hint="--metric-percentiles",
        ) from None
    return out


def ci_output_options(fn: Any) -> Any:
    """--junit and --no-plots, for the commands that write a report (compare, gate)."""
    fn = click.option("--no-plots", is_flag=True, help="No PNG pictures beside report.md.")(fn)
    return click.option(
        "--junit",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Also write a JUnit XML file: one test case per gated metric and kernel assertion.",
    )(fn)


def arm_options(fn: Any) -> Any:
    """--weights, and the --baseline-* / --candidate-* overrides, one set per arm."""
    fn = click.option(
        "--weights",
        default=None,
        metavar="PATH|HUB_ID",
        help="Both arms' weights in place of the scenario's model: a checkpoint directory, a "
        "hub id, or a folder with only config.json and a tokenizer (served with random "
        "weights, --load-format dummy). --baseline-weights / --candidate-weights override it "
        "per arm.",
    )(fn)
    for arm in ("candidate", "baseline"):
        fn = click.option(
            f"--{arm}-url",
            default=None,
            metavar="URL",
            help=f"The {arm} is this already-running server.",
        )(fn)
        fn = click.option(
            f"--{arm}-vllm",
            default=None,
            metavar="EXE",
            help=f"`vllm` executable for the {arm} (`EXE serve MODEL`).",
        )(fn)
        fn = click.option(
            f"--{arm}-python",
            default=None,
            metavar="PYTHON",
            help=f"Python with vLLM installed for the {arm} "
            "(`PYTHON -m vllm.entrypoints.openai.api_server`).",
        )(fn)
        fn = click.option(
            f"--{arm}-weights",
            default=None,
            metavar="PATH|HUB_ID",
            help=f"Weights of the {arm}'s own (a model directory or hub id) in place of "
            "--weights and the scenario's model.",
        )(fn)
        fn = click.option(  # the flag's earlier name: weights, as --X-weights says now
            f"--{arm}-model", default=None, hidden=True, help=f"Old name of --{arm}-weights."
        )(fn)
        fn = click.option(
            f"--{arm}-env",
            multiple=True,
            metavar="KEY=VALUE",
            help=f"Extra environment variable for the {arm}'s server (repeatable).",
        )(fn)
        fn = click.option(
            f"--{arm}-arg",
            multiple=True,
            metavar="ARG",
            help=f"Extra `vllm serve` argument for the {arm} (repeatable; "
            f"--{arm}-arg=--flag for flags).",
        )(fn)
    return fn


def ci_outputs(
    junit: Path | None,
    outcome: GateOutcome | None,
    run: CompareRun,
    name: str,
    report_path: Path | None,
    say: Any,
) -> None:
    """The JUnit file (``--junit``) and, under GitHub Actions (``GITHUB_STEP_SUMMARY`` set),
    report.md appended to the job's step summary. Neither may lose the run: failures warn."""
    if junit is not None:
        try:
            write_junit(junit, outcome, recorded(run), name)
            say(f"junit: {junit}")
        except OSError as exc:
            say(f"warning: cannot write --junit {junit} ({exc.strerror or exc})")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary and report_path is not None:
        try:
            with open(summary, "a") as f:
                f.write(report_path.read_text() + "\n")
        except OSError as exc:
            say(f"warning: cannot append to GITHUB_STEP_SUMMARY {summary} ({exc.strerror or exc})")


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    """Raise KeyboardInterrupt, or with an event loop running, have the loop raise it from a
    callback of its own: raised here it would land in whatever callback was running, and
    uvloop turns an exception in a connection's callback into a broken connection (Ctrl-C in a
    profiled window once ended a run as "cannot reach /tokenize" instead of "interrupted")."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise KeyboardInterrupt from None
    loop.call_soon_threadsafe(_raise_interrupt)


def _raise_interrupt() -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C and SIGTERM both stop a run cleanly (as KeyboardInterrupt), even where SIGINT
    was ignored when perfgate started (a job launched in the background of a non-interactive
    shell inherits that)."""
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    previous_int = signal.signal(signal.SIGINT, _sigterm_as_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def served_model_option(fn: Any) -> Any:
    """``--served-model NAME`` (a server's model name, as ``vllm serve --served-model-name``
    sets it), with its earlier name ``--model`` hidden: ``--model`` names a scenario now."""
    fn = click.option(
        "--model", "model_alias", default=None, hidden=True, help="Old name of --served-model."
    )(fn)
    return click.option(
        "--served-model",
        "model",
        default=None,
        metavar="NAME",
        help="The server's model name (its --served-model-name). Default: the first model the "
        "server lists.",
    )(fn)


def served_model(model: str | None, alias: str | None) -> str | None:
    """``--served-model``, or its earlier name ``--model`` (not both)."""
    if model is not None and alias is not None:
        raise click.UsageError("--model is the earlier name of --served-model; give only one")
    if alias is not None:
        say(
            "warning: --model here is the served model's name, --served-model from now on "
            "(--model names a scenario in compare and gate)"
        )
    return model if model is not None else alias


def scenario_options(fn: Any) -> Any:
    """``--scenario NAME|FILE`` and its alias ``--model NAME`` (the headline form, ``perfgate
    compare --model gpt-oss-120b``): in every command that takes a scenario, one meaning."""
    fn = click.option(
        "--model",
        "builtin",
        default=None,
        metavar="NAME",
        help="The same as --scenario NAME: a built-in scenario (e.g. gpt-oss-120b, demo-cpu).",
    )(fn)
    return click.option(
        "--scenario",
        "scenario_path",
        default=None,
        metavar="NAME|FILE",
        help="A built-in scenario's NAME (gpt-oss-120b, demo-cpu) or a scenario TOML FILE.",
    )(fn)


def chosen_scenario(path: str | None, builtin: str | None, purpose: str = "") -> Scenario:
    """The scenario of ``--scenario NAME|FILE`` or ``--model NAME`` (exactly one);
    ``purpose`` says in the message what it is needed for. A ``--scenario`` value is a file
    when one exists there or it looks like a path, else a built-in's name."""
    if (path is None) == (builtin is None):
        raise ScenarioError(
            f"give exactly one of --scenario NAME|FILE or --model NAME ({purpose}"
            f"built-in: {', '.join(builtin_names())})"
        )
    if builtin is not None:
        return load_builtin(builtin)
    assert path is not None
    if not path.strip():
        raise ScenarioError(
            "--scenario is empty; give a built-in scenario's name "
            f"({', '.join(builtin_names())}) or a scenario file"
        )
    file = Path(path)
    looks_like_path = path.endswith(".toml") or "/" in path or file.exists()
    if looks_like_path or path not in builtin_names():
        if not looks_like_path:
            raise ScenarioError(
                f"--scenario {path!r} is neither a file nor a built-in scenario; built-in: "
                f"{', '.join(builtin_names())}, or give a scenario TOML file"
            )
        return load_scenario(file)
    return load_builtin(path)


def _arm_weights(flags: dict[str, Any], arm: str) -> str | None:
    """``--ARM-weights``, or its earlier name ``--ARM-model`` (not both)."""
    weights, old = flags[f"{arm}_weights"], flags[f"{arm}_model"]
    if weights is not None and old is not None:
        raise ScenarioError(
            f"--{arm}-model is the earlier name of --{arm}-weights; give only --{arm}-weights"
        )
    return weights if weights is not None else old


def scenario_from_flags(path: str | None, builtin: str | None, flags: dict[str, Any]) -> Scenario:
    scenario = chosen_scenario(path, builtin)
    overrides: dict[str, dict[str, Any]] = {}
    for arm in ("baseline", "candidate"):
        overrides[arm] = {
            "url": flags[f"{arm}_url"],
            "vllm": flags[f"{arm}_vllm"],
            "python": flags[f"{arm}_python"],
            "env": parse_env_pairs(flags[f"{arm}_env"], f"--{arm}-env"),
            "args": tuple(flags[f"{arm}_arg"]),
            "model": _arm_weights(flags, arm),
        }
    return with_overrides(scenario, arm_overrides=overrides, weights=flags["weights"])


def run_dir_and_command(out_dir: Path | None, name: str, what: str) -> tuple[Path, str]:
    """Where a run of ``perfgate WHAT`` goes (``--out-dir``, else ``reports/NAME-[gate-]TIME``)
    and the command that reproduces it, secrets as references to variables ($HF_TOKEN)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kind = "" if what == "compare" else f"{what}-"
    run_dir = out_dir or Path("reports") / f"{name}-{kind}{stamp}"
    command = redact.reproduce(["perfgate", *sys.argv[1:]]) if sys.argv[1:] else f"perfgate {what}"
    return run_dir, command


def check_output_paths(*outputs: tuple[Path | None, str]) -> None:
    """Before any work: each given (path, flag) output can be written, and is no link or
    special file; else exit 2 naming the flag."""
    for path, flag in outputs:
        if path is not None:
            try:
                check_output_file(path, flag)
            except ResultError as exc:
                fail(str(exc))
