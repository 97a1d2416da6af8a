"""Command line: parse, hand the job to the module that owns it, render, pick the exit code.

Exit codes: 0 = pass (a valid run), 1 = regression found, 2 = the run failed or was invalid
(bad input, server unreachable, failed requests, wrong lengths), 3 = inconclusive.
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from perfgate import __version__
from perfgate.bench import BenchConfig, BenchError, run_bench
from perfgate.report.bench_text import render_bench_text
from perfgate.results import ResultError, read_json, write_json
from perfgate.server import ServerError, ServerSpec, VllmServer

EXIT_PASS, EXIT_REGRESSION, EXIT_INVALID, EXIT_INCONCLUSIVE = 0, 1, 2, 3

err_console = Console(stderr=True, highlight=False, soft_wrap=True)
out_console = Console(highlight=False, soft_wrap=True)


def fail(message: str) -> None:
    """Print an error that names the cause and the fix, and exit 2."""
    err_console.print(f"[bold red]error:[/] {message}", markup=True)
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
                TextColumn("{task.description:<10}"),
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


def _parse_percentiles(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(p) for p in value.split(",") if p.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of numbers, e.g. 90,99",
            param_hint="--metric-percentiles",
        ) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
    type=click.IntRange(min=1),
    default=80,
    show_default=True,
    help="Measured requests.",
)
@click.option(
    "--random-input-len",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Prompt length in tokens, exact as the server counts them.",
)
@click.option(
    "--random-output-len",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Output length in tokens (ignore_eos, so exact).",
)
@click.option(
    "--max-concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Most requests in flight at once. Default: no cap.",
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
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Unmeasured requests sent first (their own prompts).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed for prompts and arrivals."
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
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the versioned JSON result (with every request's record) here.",
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
    out_path: Path | None,
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
    cfg = BenchConfig(
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
    )
    try:
        if serve_model is None:
            with _Progress() as progress:
                result = run_bench(cfg, progress)
        else:
            log_dir = out_path.parent if out_path is not None else Path("reports")
            spec = ServerSpec(
                name="bench",
                model=serve_model,
                log_path=log_dir / "bench-server.log",
                serve_args=serve_args,
            )
            err_console.print(f"starting vLLM for {serve_model} (log: {spec.log_path})")
            with VllmServer(spec) as server:
                err_console.print(f"server healthy at {server.url} after {server.startup_s:.0f} s")
                with _Progress() as progress:
                    result = run_bench(replace(cfg, url=server.url), progress)
    except (BenchError, ServerError) as exc:
        fail(str(exc))
    doc = result.to_json()
    if out_path is not None:
        write_json(out_path, doc)  # before rendering: a render bug must not lose the data
    out_console.print(render_bench_text(doc), markup=False, end="")
    if out_path is not None:
        err_console.print(f"result written to {out_path}", markup=False)
    sys.exit(EXIT_PASS if result.valid else EXIT_INVALID)


@main.command()
@click.argument("result", type=click.Path(dir_okay=False, path_type=Path))
def report(result: Path) -> None:
    """Render a stored result file again."""
    try:
        doc = read_json(result)
    except ResultError as exc:
        fail(str(exc))
    out_console.print(render_bench_text(doc), markup=False, end="")
