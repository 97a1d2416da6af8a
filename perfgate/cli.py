"""Command line: parse, hand the job to the module that owns it, render, pick the exit code.

Exit codes: 0 = pass (a valid run), 1 = regression found, 2 = the run failed or was invalid
(bad input, server unreachable, failed requests, wrong lengths), 3 = inconclusive.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
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

from perfgate import __version__, limits, profiling, redact, steps
from perfgate.accuracy import evaluate
from perfgate.decide.accuracy import compare_arms
from perfgate.decide.verdict import overall
from perfgate.documents.bench import BenchConfig, BenchResult, Workload
from perfgate.documents.compare import EXIT_FOR, INVALID, PASS
from perfgate.documents.eval import AccuracyError, AccuracySpec, EvalRun
from perfgate.documents.io import (
    BENCH_SCHEMA,
    COMPARE_SCHEMA,
    EVAL_SCHEMA,
    ResultError,
    check_output_file,
    read_json,
    write_json_or_fallback,
)
from perfgate.documents.kernels import ProfileError
from perfgate.documents.nightly import GateOutcome
from perfgate.documents.run import CompareRun
from perfgate.documents.spec import Scenario, ScenarioError
from perfgate.measure.bench import BenchError, run_bench, run_bench_serving, validate_config
from perfgate.report.bench_text import render_bench_text
from perfgate.report.gate import write_junit
from perfgate.report.markdown import (
    render_accuracy_section,
    render_compare_markdown,
    render_kernel_diff,
    render_kernel_table,
    render_steps,
)
from perfgate.report.plots import request_timeline
from perfgate.run.runner import recompute as recompute_result
from perfgate.run.runner import run_compare
from perfgate.run.state import RunFailed
from perfgate.scenario import builtin_names, load_builtin, parse_env_pairs, with_overrides
from perfgate.scenario import load as load_scenario
from perfgate.serve.server import ServerError, ServerSpec
from perfgate.serve.server_api import EndpointError

EXIT_PASS, EXIT_INVALID = EXIT_FOR[PASS], EXIT_FOR[INVALID]


class _Console(Console):
    """A console that prints no secret: strings and Markdown sources are scrubbed first."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(_scrubbed(o) for o in objects), **kwargs)


def _scrubbed(obj: Any) -> Any:
    if isinstance(obj, str):
        return redact.scrub(obj)
    if isinstance(obj, Markdown):
        return Markdown(redact.scrub(obj.markup))
    return obj


# Messages carry user input and server logs: printed literally, never as rich markup (a
# "[/x]" in a log line would crash the error path, "[arms.baseline]" would vanish).
err_console = _Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
out_console = _Console(highlight=False, soft_wrap=True, markup=False)


def fail(message: str) -> None:
    """Print an error that names the cause and the fix, and exit 2."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", redact.scrub(message)))
    sys.exit(EXIT_INVALID)


class _Progress:
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

    def __enter__(self) -> _Progress:
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


class _ConcurrencyType(click.ParamType):
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


def _client_processes(value: str) -> int:
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


def _parse_percentiles(value: str) -> tuple[float, ...]:
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


@main.command()
@click.option(
    "--url",
    default=None,
    help="Base URL of a running OpenAI-compatible server (vLLM). [default: http://127.0.0.1:8000]",
)
@click.option(
    "--serve",
    "serve_model",
    default=None,
    metavar="MODEL",
    help="Instead of --url: start `vllm serve MODEL` (this Python's vLLM), benchmark "
    "it, stop it. Its log goes beside --out (or to reports/).",
)
@click.option(
    "--serve-arg",
    "serve_args",
    multiple=True,
    metavar="ARG",
    help="Extra argument for the server started by --serve (repeatable, e.g. "
    "--serve-arg=--enforce-eager).",
)
@click.option(
    "--model", default=None, help="Served model name. Default: the first model the server lists."
)
@click.option(
    "--endpoint",
    type=click.Choice(["completions", "chat"]),
    default="completions",
    show_default=True,
    help="/v1/completions or /v1/chat/completions.",
)
@click.option(
    "--num-prompts",
    type=click.IntRange(min=1, max=limits.MAX_PROMPTS),
    default=WORKLOAD.num_prompts,
    show_default=True,
    help="Measured requests.",
)
@click.option(
    "--random-input-len",
    type=click.IntRange(min=1, max=limits.MAX_TOKENS),
    default=WORKLOAD.input_len,
    show_default=True,
    help="Prompt length in tokens, exact as the server counts them.",
)
@click.option(
    "--random-output-len",
    type=click.IntRange(min=1, max=limits.MAX_TOKENS),
    default=WORKLOAD.output_len,
    show_default=True,
    help="Output length in tokens (ignore_eos, so exact).",
)
@click.option(
    "--max-concurrency",
    type=_ConcurrencyType(),
    default=str(WORKLOAD.max_concurrency),
    show_default=True,
    help="Most requests in flight at once, or 'none' for no cap.",
)
@click.option(
    "--request-rate",
    type=float,
    default=math.inf,
    show_default=True,
    help="Requests per second (gamma arrivals); inf sends all at once.",
)
@click.option(
    "--burstiness",
    type=float,
    default=1.0,
    show_default=True,
    help="Gamma shape of the arrival gaps; 1.0 is a Poisson process.",
)
@click.option(
    "--num-warmups",
    type=click.IntRange(min=0, max=limits.MAX_PROMPTS),
    default=WORKLOAD.num_warmups,
    show_default=True,
    help="Unmeasured requests sent first (their own prompts).",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0, max=limits.MAX_SEED),
    default=0,
    show_default=True,
    help="Seed for prompts and arrivals.",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0.0),
    default=0.0,
    show_default=True,
    help="Sampling temperature.",
)
@click.option(
    "--metric-percentiles",
    default="90,99",
    show_default=True,
    help="Comma-separated percentiles to report.",
)
@click.option(
    "--stall-timeout",
    type=float,
    default=WORKLOAD.stall_timeout_s,
    show_default=True,
    metavar="SECONDS",
    help="A request whose stream sends nothing this long (before its first token or between "
    "two) fails.",
)
@click.option(
    "--client-processes",
    default="auto",
    show_default=True,
    metavar="N|auto",
    help="Processes that read the streams: 1 reads all in perfgate's own; auto takes one per "
    "16 concurrent streams, within the cores perfgate may use (one process saturates near 64 "
    "streams and its timestamps lag: docs/fidelity.md).",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the versioned JSON result (with every request's record) here.",
)
@click.option(
    "--timeline",
    "timeline_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE.png",
    help="Draw the measured requests here (per request: send, first token, a tick per "
    "chunk), so bursts and stalls show.",
)
def bench(
    url: str | None,
    serve_model: str | None,
    serve_args: tuple[str, ...],
    model: str | None,
    endpoint: str,
    num_prompts: int,
    random_input_len: int,
    random_output_len: int,
    max_concurrency: int | None,
    request_rate: float,
    burstiness: float,
    num_warmups: int,
    seed: int,
    temperature: float,
    metric_percentiles: str,
    stall_timeout: float,
    client_processes: str,
    out_path: Path | None,
    timeline_path: Path | None,
) -> None:
    """Benchmark one running server with exact-length streaming requests.

    Latencies are defined as in `vllm bench serve` (TPOT excludes the first token; ITL is the
    gap between streamed chunks), plus token-accurate figures for chunks that carry several
    tokens. Exits 2 when any request failed or came back with the wrong token count.

    \b
    Example:
      perfgate bench --url http://127.0.0.1:8000 --max-concurrency 8 \\
          --random-input-len 1024 --random-output-len 1024 --num-prompts 80 --out r.json
    """
    if serve_model is not None and url is not None:
        fail("--url and --serve exclude each other: benchmark a running server, or start one")
    if serve_args and serve_model is None:
        fail("--serve-arg needs --serve MODEL")
    for path, flag in ((out_path, "--out"), (timeline_path, "--timeline")):
        if path is not None:
            try:
                check_output_file(path, flag)
            except ResultError as exc:
                fail(str(exc))
    if url:
        redact.register(redact.url_secret(url))
    redact.register_args(serve_args)
    # the key a server demands: the one --serve gives it, else OPENAI_API_KEY as OpenAI
    # clients (and vllm bench serve) use it
    api_key = (
        redact.api_key(serve_args, {})
        if serve_model is not None
        else os.environ.get("OPENAI_API_KEY")
    )
    cfg = BenchConfig(
        api_key=api_key or None,
        url=url or "http://127.0.0.1:8000",
        model=model,
        endpoint=endpoint,  # type: ignore[arg-type]
        num_prompts=num_prompts,
        input_len=random_input_len,
        output_len=random_output_len,
        max_concurrency=max_concurrency,
        request_rate=request_rate,
        burstiness=burstiness,
        num_warmups=num_warmups,
        seed=seed,
        temperature=temperature,
        percentiles=_parse_percentiles(metric_percentiles),
        stall_timeout_s=stall_timeout,
        client_processes=_client_processes(client_processes),
    )
    try:
        validate_config(cfg)  # every flag before any server starts
        with _Progress() as progress:
            if serve_model is None:
                result = run_bench(cfg, progress)
            else:
                log_dir = out_path.parent if out_path else Path("reports")
                spec = ServerSpec(
                    name="bench",
                    model=serve_model,
                    log_path=log_dir / "bench-server.log",
                    serve_args=serve_args,
                )
                result = run_bench_serving(cfg, spec, err_console.print, progress)
    except (BenchError, ServerError) as exc:
        fail(str(exc))
    doc = result.to_json()
    written, problem = None, None
    if out_path is not None:  # before rendering: a render bug must not lose the data
        written, problem = write_json_or_fallback(out_path, doc, "perfgate-bench")
    out_console.print(render_bench_text(doc), end="")
    if problem is not None:
        err_console.print(Text.assemble(("warning:", "bold yellow"), f" {problem}"))
    if written is not None:
        err_console.print(f"result written to {written}")
    if timeline_path is not None:
        measured = [r for r in result.records if not r.warmup]
        try:
            request_timeline([("measured requests", "#1f77b4", measured)], timeline_path)
        except (OSError, ValueError) as exc:  # the measurement is written; the picture is not
            err_console.print(
                Text.assemble(("warning:", "bold yellow"), f" --timeline {timeline_path}: {exc}")
            )
        else:
            err_console.print(f"timeline drawn in {timeline_path}")
    sys.exit(EXIT_PASS if result.valid else EXIT_INVALID)


def _ci_output_options(fn: Any) -> Any:
    """--junit and --no-plots, for the commands that write a report (compare, gate)."""
    fn = click.option("--no-plots", is_flag=True, help="No PNG pictures beside report.md.")(fn)
    return click.option(
        "--junit",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Also write a JUnit XML file: one test case per gated metric and kernel assertion.",
    )(fn)


def _arm_options(fn: Any) -> Any:
    """--weights, and the --baseline-* / --candidate-* overrides, one set per arm."""
    fn = click.option(
        "--weights",
        default=None,
        metavar="PATH|HUB_ID",
        help="Both arms' weights in place of the scenario's model: a checkpoint directory, a "
        "hub id, or a folder with only config.json and a tokenizer (served with random "
        "weights, --load-format dummy). --baseline-model / --candidate-model override it per "
        "arm.",
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
            f"--{arm}-model",
            default=None,
            metavar="MODEL",
            help=f"Weights of the {arm}'s own (a model directory or hub name) in place of the "
            "scenario's model.",
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


@main.command()
@click.option(
    "--scenario",
    "scenario_path",
    default=None,
    metavar="FILE",
    help="Scenario TOML file.",
)
@click.option(
    "--model",
    "builtin",
    default=None,
    metavar="NAME",
    help="Built-in scenario NAME (scenarios/NAME.toml), e.g. gpt-oss-120b, demo-cpu.",
)
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
@click.option("--skip-accuracy", is_flag=True, help="Leave out the GPQA accuracy phase.")
@click.option(
    "--profile",
    "profile",
    is_flag=True,
    help="A profiled window at the end of every server start: device time per decode step "
    "(gateable), kernel tables and the scenario's expect/forbid kernel assertions.",
)
@_ci_output_options
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
@_arm_options
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
    gpqa_path: str | None,
    profile: bool,
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
        scenario = _load_scenario(scenario_path, builtin, arm_flags)
        scenario = with_overrides(
            scenario,
            arm_overrides={},
            starts=starts,
            repeats_per_start=repeats_per_start,
            budget=budget,
            seed=seed,
            skip_accuracy=skip_accuracy,
            gpqa_path=gpqa_path,
            profile=profile,
        )
    except ScenarioError as exc:
        fail(str(exc))
    run_dir = out_dir or Path("reports") / f"{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    # to reproduce the run: secrets become references to variables ($HF_TOKEN)
    command = redact.reproduce(["perfgate", *sys.argv[1:]]) if sys.argv[1:] else "perfgate compare"

    def say(message: str) -> None:
        err_console.print(message)

    try:
        with _interruptible(), _Progress() as bar:
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
            _ci_outputs(junit, None, exc.run.to_json(), scenario.name, exc.run.report_path, say)
        fail(f"{exc}\n(results so far: {where})")
    doc = run.to_json()
    out_console.print(Markdown(render_compare_markdown(doc)))
    if run.save_error:
        say(f"warning: {run.save_error}; results went to {run.results_path.parent} instead")
    _ci_outputs(junit, None, doc, scenario.name, run.report_path, say)
    say(f"report: {run.report_path}  results: {run.results_path}")
    sys.exit(run.exit_code)


def _ci_outputs(
    junit: Path | None,
    outcome: GateOutcome | None,
    doc: dict[str, Any],
    name: str,
    report_path: Path | None,
    say: Any,
) -> None:
    """The JUnit file (``--junit``) and, under GitHub Actions (``GITHUB_STEP_SUMMARY`` set),
    report.md appended to the job's step summary. Neither may lose the run: failures warn."""
    if junit is not None:
        try:
            write_junit(junit, outcome, doc, name)
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
def _interruptible() -> Iterator[None]:
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


def _load_scenario(path: str | None, builtin: str | None, flags: dict[str, Any]) -> Scenario:
    if (path is None) == (builtin is None):
        raise ScenarioError(
            "give exactly one of --scenario FILE or --model NAME "
            f"(built-in: {', '.join(builtin_names())})"
        )
    if path is not None and not path.strip():
        raise ScenarioError("--scenario is empty; give a scenario file (see scenarios/*.toml)")
    scenario = load_scenario(Path(path)) if path is not None else load_builtin(str(builtin))
    overrides: dict[str, dict[str, Any]] = {}
    for arm in ("baseline", "candidate"):
        overrides[arm] = {
            "url": flags[f"{arm}_url"],
            "vllm": flags[f"{arm}_vllm"],
            "python": flags[f"{arm}_python"],
            "env": parse_env_pairs(flags[f"{arm}_env"], f"--{arm}-env"),
            "args": tuple(flags[f"{arm}_arg"]),
            "model": flags[f"{arm}_model"],
        }
    return with_overrides(scenario, arm_overrides=overrides, weights=flags["weights"])


@main.command()
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
    """Render a stored result file (from bench --out, compare or eval --out) again."""
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
            CompareRun.from_json(doc)
            md = render_compare_markdown(recompute_result(doc) if recompute else doc)
        elif schema == EVAL_SCHEMA:
            EvalRun.from_json(doc)
            md = "\n".join(render_accuracy_section(doc["accuracy"]))
        else:
            BenchResult.from_json(doc)
            text = render_bench_text(doc)
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
        click.echo(redact.scrub(md), nl=False)
    else:
        out_console.print(Markdown(md))


@main.command("eval")
@click.option("--url", required=True, help="The (baseline) server.")
@click.option(
    "--candidate-url", default=None, help="A second server: compare the two, paired by question."
)
@click.option("--model", default=None, help="Served model name (default: the first listed).")
@click.option(
    "--tokenizer",
    default=None,
    help="Tokenizer (path or hub id) for --endpoint completions; default: the model's "
    "path as the server reports it.",
)
@click.option(
    "--source",
    type=click.Choice(["bundled", "local", "hub"]),
    default="bundled",
    show_default=True,
    help="GPQA source: perfgate's synthetic file, a local copy, or the gated hub dataset.",
)
@click.option("--gpqa-path", default=None, help="Local GPQA file (implies --source local).")
@click.option(
    "--subset",
    type=click.Choice(["diamond", "main", "extended"]),
    default="diamond",
    show_default=True,
)
@click.option(
    "--k",
    "k",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Evaluations per server, each with its own seed.",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="First N questions.")
@click.option(
    "--endpoint",
    type=click.Choice(["completions", "chat"]),
    default="completions",
    show_default=True,
)
@click.option("--temperature", type=click.FloatRange(min=0.0), default=0.0, show_default=True)
@click.option("--max-tokens", type=click.IntRange(min=1), default=1024, show_default=True)
@click.option("--reasoning-effort", type=click.Choice(["low", "medium", "high"]), default=None)
@click.option("--num-concurrent", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--max-drop",
    type=click.FloatRange(min=0.0, max=1.0),
    default=0.01,
    show_default=True,
    help="Tolerated accuracy drop (0.01 = 1 pp).",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the JSON result (per-question rows included) here.",
)
def eval_(
    url: str,
    candidate_url: str | None,
    model: str | None,
    tokenizer: str | None,
    source: str,
    gpqa_path: str | None,
    subset: str,
    k: int,
    limit: int | None,
    endpoint: str,
    temperature: float,
    max_tokens: int,
    reasoning_effort: str | None,
    num_concurrent: int,
    max_drop: float,
    out_path: Path | None,
) -> None:
    """Accuracy alone (GPQA through lm-eval) against one server, or two compared by question."""
    spec = AccuracySpec(
        source="local" if gpqa_path else source,
        path=gpqa_path,
        subset=subset,
        k=k,
        limit=limit,
        endpoint=endpoint,
        temperature=temperature,
        max_tokens=max_tokens,
        reasoning_effort=reasoning_effort,
        num_concurrent=num_concurrent,
        max_drop=max_drop,
    )
    try:
        if out_path is not None:
            check_output_file(out_path, "--out")
        urls = {"baseline": url, **({"candidate": candidate_url} if candidate_url else {})}
        for server_url in urls.values():
            redact.register(redact.url_secret(server_url))
        arms = evaluate(
            spec,
            urls,
            model=model,
            tokenizer=tokenizer,
            work_root=out_path.parent if out_path else Path("reports"),
            api_key=os.environ.get("OPENAI_API_KEY") or None,
            say=err_console.print,
        )
        paired = compare_arms(arms["baseline"], arms["candidate"], spec) if len(arms) == 2 else None
    except (AccuracyError, EndpointError, ResultError) as exc:
        fail(str(exc))
    run = EvalRun(spec, arms, paired)
    doc = run.to_json()
    written, problem = (None, None)
    if out_path is not None:
        written, problem = write_json_or_fallback(out_path, doc, "perfgate-eval")
    out_console.print(Markdown("\n".join(render_accuracy_section(doc["accuracy"]))))
    if problem is not None:
        err_console.print(Text.assemble(("warning:", "bold yellow"), f" {problem}"))
    if written is not None:
        err_console.print(f"result written to {written}")
    accuracy_verdict = None if run.comparison is None else run.comparison.verdict
    sys.exit(EXIT_FOR[overall([], accuracy_verdict)])


@main.command()
@click.option("--scenario", "scenario_path", default=None, metavar="FILE", help="Scenario TOML.")
@click.option("--model", "builtin", default=None, metavar="NAME", help="Built-in scenario NAME.")
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
@click.option("--profile", "profile", is_flag=True, help="A profiled window on every start.")
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
@_ci_output_options
@_arm_options
def gate(
    scenario_path: str | None,
    builtin: str | None,
    baseline_path: Path,
    history_path: Path,
    commit: str | None,
    date: str | None,
    starts: int | None,
    paired: bool,
    profile: bool,
    with_accuracy: bool,
    gpqa_path: str | None,
    out_dir: Path | None,
    junit: Path | None,
    no_plots: bool,
    **arm_flags: Any,
) -> None:
    """The nightly job: tonight's build (the scenario's candidate arm) against a stored
    baseline, appended to a history; fails on a change point that persists.

    Exit codes: 0 pass, 1 a persisting regression or (--accuracy) an accuracy drop, 2 invalid
    or failed, 3 tonight worse but not yet persisting.

    \b
    Examples:
      perfgate gate --model gpt-oss-120b --baseline baselines/gpt-oss-120b-h200.json \\
          --history history/gpt-oss-120b.jsonl --commit $SHA \\
          --candidate-vllm /venvs/nightly/bin/vllm
    """
    from perfgate.run.gate import run_gate

    try:
        scenario = _load_scenario(scenario_path, builtin, arm_flags)
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
    run_dir = out_dir or Path("reports") / f"{scenario.name}-gate-{time.strftime('%Y%m%d-%H%M%S')}"
    command = redact.reproduce(["perfgate", *sys.argv[1:]]) if sys.argv[1:] else "perfgate gate"

    def say(message: str) -> None:
        err_console.print(message)

    try:
        with _interruptible():
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
            )
    except (ScenarioError, ResultError) as exc:
        fail(str(exc))
    except RunFailed as exc:
        where = exc.run.results_path if exc.run else run_dir / "results.json"
        if exc.run is not None:
            _ci_outputs(junit, None, exc.run.to_json(), scenario.name, exc.run.report_path, say)
        fail(f"{exc}\n(results so far: {where}; nothing was appended to the history)")
    report = outcome.report
    out_console.print(Markdown(report.read_text()) if report else outcome.reason)
    _ci_outputs(junit, outcome, outcome.run.to_json(), scenario.name, report, say)
    say(f"report: {report or '(not written)'}  history: {history_path}")
    sys.exit(outcome.exit_code)


@main.group()
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

    \b
    Examples:
      perfgate baseline record reports/run/results.json --out baselines/demo-cpu.json
    """
    from perfgate import baseline as bl
    from perfgate.history import read_history

    try:
        doc = read_json(result)
        if doc.get("schema") != COMPARE_SCHEMA:
            raise ResultError(f"{result}: a {doc.get('schema')} file; give a compare result")
        new = bl.from_run(doc, arm, str(result))
        if out.exists():
            new = bl.merge(bl.load(out), new, str(out))
        if history_path is not None:
            nights = read_history(history_path)
            logs: dict[str, list[float]] = {}
            for n in nights:
                for m, x in n.metrics.items():
                    if x.ratio and x.ratio > 0:
                        logs.setdefault(m, []).append(math.log(x.ratio))
            new.night_noise = bl.night_noise(logs)
        bl.save(out, new)
    except ResultError as exc:
        fail(str(exc))
    starts = {k: len(m.per_start) for k, m in new.metrics.items()}
    click.echo(
        f"baseline {out}: {new.scenario} on {new.machine['gpu']} ({new.machine['cpu']}), "
        f"{max(starts.values(), default=0)} starts per metric"
        + (f", night-to-night noise from {history_path}" if history_path else "")
    )


@main.command()
@click.argument("traces", nargs=-1, required=True, type=click.Path(exists=False, path_type=Path))
@click.option(
    "--against",
    "against",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Baseline trace(s): print the difference, TRACES being the candidate.",
)
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True)
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
            click.echo("\n".join(render_steps(str(path), source, steps.groups(found))))
    if base is None:
        md = "\n".join(render_kernel_table(table.to_json(), top))
    else:
        md = "\n".join(render_kernel_diff(base, table, top))
    click.echo(md)  # Markdown as text: kernel names are too long for a terminal table
