"""``perfgate bench``: one workload against one server."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click
from rich.text import Text

from perfgate import limits, redact
from perfgate.cli.common import (
    WORKLOAD,
    BenchProgress,
    ConcurrencyType,
    check_output_paths,
    client_processes_option,
    err_console,
    fail,
    interruptible,
    out_console,
    parse_percentiles,
    served_model,
    served_model_option,
)
from perfgate.documents.bench import BenchConfig, BenchResult
from perfgate.documents.compare import EXIT_FOR, INVALID, PASS
from perfgate.documents.io import (
    jsonable,
    write_json_or_fallback,
)
from perfgate.measure.bench import (
    BenchError,
    BenchInterrupted,
    run_bench,
    run_bench_serving,
    validate_config,
)
from perfgate.report.bench_text import render_bench_text
from perfgate.report.plots import request_timeline
from perfgate.serve.server import ServerError, ServerSpec

EXIT_PASS, EXIT_INVALID = EXIT_FOR[PASS], EXIT_FOR[INVALID]


@click.command()
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
@served_model_option
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
    type=ConcurrencyType(),
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
    "--ttft-timeout",
    type=float,
    default=None,
    metavar="SECONDS",
    help="A request with no first token this long after its send fails (default: no deadline).",
)
@click.option(
    "--request-timeout",
    type=float,
    default=None,
    metavar="SECONDS",
    help="A request not finished this long after its send fails, keeping the tokens that came "
    "(default: no deadline).",
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
    model_alias: str | None,
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
    ttft_timeout: float | None,
    request_timeout: float | None,
    client_processes: str,
    out_path: Path | None,
    timeline_path: Path | None,
) -> None:
    """Benchmark one running server with exact-length streaming requests.

    Latencies are defined as in `vllm bench serve` (TPOT excludes the first token; ITL is the
    gap between streamed chunks), plus token-accurate figures for chunks that carry several
    tokens.

    Exit codes: 0 a valid run, 2 any request failed or came back with the wrong token count,
    bad input, or an interrupted run (what finished is kept).

    \b
    Example:
      perfgate bench --url http://127.0.0.1:8000 --max-concurrency 8 \\
          --random-input-len 1024 --random-output-len 1024 --num-prompts 80 --out r.json
    """
    model = served_model(model, model_alias)
    if serve_model is not None and url is not None:
        fail("--url and --serve exclude each other: benchmark a running server, or start one")
    if serve_args and serve_model is None:
        fail("--serve-arg needs --serve MODEL")
    check_output_paths((out_path, "--out"), (timeline_path, "--timeline"))
    if url:
        redact.register_url(url)
    redact.register_args(serve_args)
    cfg = BenchConfig(
        api_key=redact.server_key(serve_args, {}, started=serve_model is not None),
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
        percentiles=parse_percentiles(metric_percentiles),
        stall_timeout_s=stall_timeout,
        ttft_timeout_s=ttft_timeout,
        request_timeout_s=request_timeout,
        client_processes=client_processes_option(client_processes),
    )
    try:
        validate_config(cfg)  # every flag before any server starts
        with interruptible(), BenchProgress() as progress:
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
    except BenchInterrupted as stop:  # Ctrl-C or SIGTERM: keep what finished, then exit 2
        _interrupted(stop.result, out_path)
    doc = result.to_json()
    written, problem = None, None
    if out_path is not None:  # before rendering: a render bug must not lose the data
        written, problem = write_json_or_fallback(out_path, doc, "perfgate-bench")
    shown = BenchResult.from_json(jsonable(doc))  # as the file records it
    out_console.print(render_bench_text(shown), end="")
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


def _interrupted(partial: BenchResult | None, out_path: Path | None) -> None:
    """Exit 2 after an interrupt, the requests that finished written to ``--out``."""
    if partial is None:
        fail("interrupted before any request was sent; nothing was measured")
        return
    said = partial.problems[0].message
    if out_path is None:
        fail(f"{said}; give --out FILE to keep them")
        return
    where, problem = write_json_or_fallback(out_path, partial.to_json(), "perfgate-bench")
    fail(f"{said}: written to {where}" + (f" ({problem})" if problem else ""))
