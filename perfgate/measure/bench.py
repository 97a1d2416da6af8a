"""``perfgate bench``: one workload against one running server, start to finish.

Phases, in order: probe the server (model, context length, version) and check the request
shape fits; build exact-length prompts; send the warmup requests; scrape ``/metrics``; send the
measured requests; scrape ``/metrics`` again; compute metrics, validity problems, the
server-vs-client cross-check and warnings. Nothing here prints: progress goes through a callback
and the caller renders the ``BenchResult``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp

from perfgate import environment, limits, redact
from perfgate.documents.bench import (
    BURSTY,
    BenchConfig,
    BenchResult,
    Bursts,
    CrossCheck,
    Problem,
    RunWarning,
    ServerInfo,
)
from perfgate.documents.records import RequestRecord
from perfgate.measure.bursts import LoopMonitor, analyze
from perfgate.measure.client import new_session, run_async
from perfgate.measure.loadgen import Target, measured_window, run_load
from perfgate.measure.server_metrics import cross_check
from perfgate.measure.summary import compute_metrics
from perfgate.measure.validity import check_records
from perfgate.measure.workers import StreamWorkers, WorkerError
from perfgate.measure.workload import (
    Prompt,
    WorkloadError,
    build_prompts,
    client_processes,
)
from perfgate.serve.server import ServerSpec, VllmServer, model_problem
from perfgate.serve.server_api import EndpointError, Tokenizer, probe, scrape_metrics


class BenchInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the benchmark; ``result`` holds the requests that finished
    (None when none had started), marked invalid. Still an interrupt: a compare run that was
    measuring ends "interrupted", as it did before the partial result was kept."""

    def __init__(self, result: BenchResult | None) -> None:
        super().__init__("interrupted")
        self.result = result


class BenchError(Exception):
    """The benchmark could not run; the message names the flag or the server and the fix."""


# (command-line flag, scenario field) of each setting a message may name
_NAMES = {
    "model": ("--served-model", "served_model_name"),
    "num_prompts": ("--num-prompts", "workload.num_prompts"),
    "input_len": ("--random-input-len", "workload.input_len"),
    "output_len": ("--random-output-len", "workload.output_len"),
    "num_warmups": ("--num-warmups", "workload.num_warmups"),
    "max_concurrency": ("--max-concurrency", "workload.max_concurrency"),
    "request_rate": ("--request-rate", "workload.request_rate"),
    "burstiness": ("--burstiness", "workload.burstiness"),
    "stall_timeout_s": ("--stall-timeout", "workload.stall_timeout_s"),
    "ttft_timeout_s": ("--ttft-timeout", "workload.ttft_timeout_s"),
    "request_timeout_s": ("--request-timeout", "workload.request_timeout_s"),
    "client_processes": ("--client-processes", "workload.client_processes"),
}


def name(cfg: BenchConfig, setting: str) -> str:
    """What the user calls ``setting``: its flag, or its scenario field with the file."""
    flag, field_name = _NAMES[setting]
    return flag if cfg.scenario is None else f"{cfg.scenario}: {field_name}"


def validate_config(cfg: BenchConfig) -> None:
    """Flag checks that need no server; each message names the flag."""
    if cfg.api_key and redact.url_secret(cfg.url) is not None:
        raise BenchError(
            f"{redact.url(cfg.url)} carries credentials (user:password@) and an API key is set "
            "(OPENAI_API_KEY, or the server's --api-key): a request can carry one of them; "
            "remove the credentials from the URL or unset the key"
        )
    for setting in ("num_prompts", "input_len", "output_len"):
        value = getattr(cfg, setting)
        if value < 1:
            raise BenchError(f"{name(cfg, setting)} must be at least 1, got {value}")
    if cfg.num_warmups < 0:
        raise BenchError(f"{name(cfg, 'num_warmups')} must be 0 or more, got {cfg.num_warmups}")
    if cfg.max_concurrency is not None and cfg.max_concurrency < 1:
        raise BenchError(
            f"{name(cfg, 'max_concurrency')} must be at least 1, got {cfg.max_concurrency} "
            "(leave it out for no cap)"
        )
    if not cfg.request_rate > 0:
        raise BenchError(
            f"{name(cfg, 'request_rate')} must be above 0, got {cfg.request_rate} "
            "(inf sends all at once)"
        )
    if not cfg.burstiness > 0:
        raise BenchError(f"{name(cfg, 'burstiness')} must be above 0, got {cfg.burstiness}")
    if not 0 < cfg.stall_timeout_s <= 86400:
        raise BenchError(
            f"{name(cfg, 'stall_timeout_s')} must be above 0 and at most 86400 s, got "
            f"{cfg.stall_timeout_s:g}"
        )
    for setting in ("ttft_timeout_s", "request_timeout_s"):
        value = getattr(cfg, setting)
        if value is not None and not 0 < value <= 86400:
            raise BenchError(
                f"{name(cfg, setting)} must be above 0 and at most 86400 s, got {value:g} "
                "(leave it out for no deadline)"
            )
    if not 0 <= cfg.client_processes <= limits.MAX_CLIENT_PROCESSES:
        raise BenchError(
            f'{name(cfg, "client_processes")} must be "auto" or between 1 and '
            f"{limits.MAX_CLIENT_PROCESSES}, got {cfg.client_processes} (1 reads every stream "
            "in perfgate's own process; more share the streams out, for many streams on a "
            "machine with cores to spare)"
        )
    rate = name(cfg, "request_rate")
    if problem := limits.send_span_problem(cfg.num_prompts, cfg.request_rate, rate):
        raise BenchError(problem)
    if not cfg.percentiles:
        raise BenchError("--metric-percentiles needs at least one percentile, e.g. 90,99")
    if not cfg.url.startswith(("http://", "https://")):
        raise BenchError(f"--url must start with http:// or https://, got {cfg.url!r}")
    for p in cfg.percentiles:
        if not 0 < p < 100:
            raise BenchError(f"--metric-percentiles values must lie in (0, 100), got {p:g}")


def check_fits(cfg: BenchConfig, info: ServerInfo) -> None:
    total = cfg.input_len + cfg.output_len
    if info.max_model_len is not None and total > info.max_model_len:
        raise BenchError(
            f"{name(cfg, 'input_len')} {cfg.input_len} + {name(cfg, 'output_len')} "
            f"{cfg.output_len} = "
            f"{total} tokens exceeds the server's max_model_len of {info.max_model_len} for "
            f"{info.model!r}; shorten them or restart the server with --max-model-len {total}"
        )


def collect_warnings(
    metrics: dict[str, Any],
    checks: list[CrossCheck],
    cfg: BenchConfig | None = None,
    bursts: Bursts | None = None,
) -> list[RunWarning]:
    out: list[RunWarning] = []
    if bursts is not None and bursts.bursty:
        out.append(
            RunWarning(
                BURSTY,
                f"tokens reached the client in bursts: {bursts.explanation}. The chunk-based "
                "ITL figures describe delivery, not generation; a comparison does not gate on "
                "ITL for this run",
                "judge on TPOT and throughput; "
                + (
                    "give perfgate's client its own cores"
                    if bursts.where == "client"
                    else "see the bursts section of the report for the requests concerned"
                ),
            )
        )
    if cfg is not None and cfg.num_warmups > 0:
        batch = min(cfg.max_concurrency or cfg.num_prompts, cfg.num_prompts)
        if cfg.num_warmups < batch:
            out.append(
                RunWarning(
                    "few_warmups",
                    f"{cfg.num_warmups} warmup requests never filled the batch of {batch} "
                    "concurrent requests the benchmark runs: the first measured requests meet "
                    "batch shapes the server has not run yet (kernel selection, JIT, allocator)",
                    f"{name(cfg, 'num_warmups')} {batch} or more",
                )
            )
    if cfg is not None and not checks:
        out.append(
            RunWarning(
                "no_server_metrics",
                "the server has no /metrics (or it did not answer): perfgate's token counts and "
                "latencies could not be checked against the server's own",
                "serve with vLLM's metrics on, or accept an unwitnessed measurement",
            )
        )
    for c in checks:
        if c.agrees is False:
            out.append(RunWarning("server_disagrees", f"{c.name}: {c.note}", c.remedy))
    frac = metrics.get("multi_token_chunk_fraction")
    if isinstance(frac, float) and frac > 0.01:
        out.append(
            RunWarning(
                "multi_token_chunks",
                f"{frac:.0%} of streamed chunks carried more than one token (mean "
                f"{metrics['mean_tokens_per_chunk_n']:.2f}): the `vllm bench serve` figures "
                "mislead here, chunk-based ITL overstates the per-token latency and "
                "max_output_tokens_per_s understates the peak",
                "compare with itl_per_token and max_output_tokens_per_s_by_tokens",
            )
        )
    return out


ProgressFn = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class _SoFar:
    """What a benchmark has gathered, kept outside its coroutine: an interrupt ends the event
    loop without returning, and the requests that finished must not be lost."""

    cfg: BenchConfig
    started_at: str = ""
    env: dict[str, Any] = field(default_factory=dict)
    info: ServerInfo | None = None
    records: list[RequestRecord] = field(default_factory=list)

    def result(self) -> BenchResult | None:
        if self.info is None:
            return None
        records = sorted(self.records, key=lambda r: r.index)
        measured = [r for r in records if not r.warmup]
        return BenchResult(
            config=self.cfg,
            server=self.info,
            environment=self.env,
            records=records,
            metrics=compute_metrics(records, self.cfg.percentiles),
            problems=[
                Problem(
                    "interrupted",
                    self.cfg.num_prompts - len(measured),
                    f"interrupted: {len(measured)} of {self.cfg.num_prompts} measured requests "
                    "had finished (kept here)",
                ),
                *check_records(records),
            ],
            cross_checks=[],
            started_at=self.started_at,
        )


async def run_bench_async(
    cfg: BenchConfig, progress: ProgressFn | None = None, so_far: _SoFar | None = None
) -> BenchResult:
    validate_config(cfg)
    cfg = replace(cfg, client_processes=client_processes(cfg))  # "auto" as resolved here
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    env = environment.capture()
    so_far = so_far if so_far is not None else _SoFar(cfg)
    so_far.cfg, so_far.started_at, so_far.env = cfg, started_at, env

    def report(phase: str, done: int, total: int) -> None:
        if progress is not None:
            progress(phase, done, total)

    async with new_session(cfg.max_concurrency, cfg.api_key) as session:
        try:
            info = await probe(session, cfg.url, cfg.model, name(cfg, "model"))
        except EndpointError as exc:
            raise BenchError(str(exc)) from exc
        check_fits(cfg, info)
        so_far.info = info
        tokenizer = Tokenizer(session, info.base_url, info.model)
        try:
            report("prompts", 0, cfg.num_prompts + cfg.num_warmups)
            # measured prompts and warmup prompts: the same seed, separate random streams
            prompts, warmup_prompts = [
                await build_prompts(
                    tokenizer,
                    endpoint=cfg.endpoint,
                    num_prompts=count,
                    input_len=cfg.input_len,
                    output_len=cfg.output_len,
                    seed=cfg.seed,
                    stream=stream,
                )
                for stream, count in ((0, cfg.num_prompts), (1, cfg.num_warmups))
            ]
        except WorkloadError as exc:
            raise BenchError(str(exc)) from exc
        except EndpointError as exc:
            raise BenchError(
                f"{exc}; perfgate builds exact-length prompts with the server's /tokenize and "
                "/detokenize endpoints (vLLM has them)"
            ) from exc

        target = Target(info.base_url, info.model)
        async with contextlib.AsyncExitStack() as stack:
            workers = None
            if cfg.client_processes > 1:  # the streams are read in processes of their own
                workers = StreamWorkers(cfg.client_processes, cfg.max_concurrency, cfg.api_key)
                try:
                    await stack.enter_async_context(workers)
                except WorkerError as exc:
                    raise BenchError(str(exc)) from exc
            records, before, after, client_stall_ms = await _send_all(
                cfg, session, info, target, prompts, warmup_prompts, workers, report, so_far.records
            )
        if workers is not None:  # stopped now: each told its longest stall
            client_stall_ms = max(client_stall_ms, workers.longest_stall_ms)

    metrics = compute_metrics(records, cfg.percentiles)
    checks = cross_check(before, after, metrics)
    bursts = analyze(records, before, after, client_stall_ms)
    return BenchResult(
        config=cfg,
        server=info,
        environment=env,
        records=records,
        metrics=metrics,
        problems=check_records(records),
        cross_checks=checks,
        warnings=collect_warnings(metrics, checks, cfg, bursts),
        started_at=started_at,
        bursts=bursts,
    )


async def _send_all(
    cfg: BenchConfig,
    session: aiohttp.ClientSession,
    info: ServerInfo,
    target: Target,
    prompts: list[Prompt],
    warmup_prompts: list[Prompt],
    workers: StreamWorkers | None,
    report: ProgressFn,
    finished: list[RequestRecord],
) -> tuple[list[RequestRecord], str | None, str | None, float]:
    """The warmups, the timed requests and the /metrics scrapes around them: the records, both
    scrapes, and the longest stall of perfgate's own event loop while the timed ones streamed."""
    with measured_window():
        t0 = time.perf_counter_ns()
        records: list[RequestRecord] = []
        if warmup_prompts:
            done = 0

            def warm_done(record: RequestRecord) -> None:
                nonlocal done
                done += 1
                finished.append(record)
                report("warmup", done, len(warmup_prompts))

            records += await run_load(
                session,
                target,
                replace(cfg, request_rate=math.inf),
                warmup_prompts,
                t0_ns=t0,
                warmup=True,
                first_index=-len(warmup_prompts),
                on_done=warm_done,
                workers=workers,
            )

        before = await scrape_metrics(session, info.base_url)

        measured = 0

        def measured_done(record: RequestRecord) -> None:
            nonlocal measured
            measured += 1
            finished.append(record)
            report("benchmark", measured, len(prompts))

        report("benchmark", 0, len(prompts))
        if workers is not None:
            workers.reset_monitors()
        async with LoopMonitor() as monitor:
            records += await run_load(
                session, target, cfg, prompts, t0_ns=t0, on_done=measured_done, workers=workers
            )
        after = await scrape_metrics(session, info.base_url)
    return records, before, after, monitor.longest_ms


def run_bench(cfg: BenchConfig, progress: ProgressFn | None = None) -> BenchResult:
    """The benchmark; ``BenchInterrupted`` (with what finished) on Ctrl-C or SIGTERM."""
    so_far = _SoFar(cfg)
    try:
        return run_async(run_bench_async(cfg, progress, so_far))
    except KeyboardInterrupt:
        raise BenchInterrupted(so_far.result()) from None


def run_bench_serving(
    cfg: BenchConfig,
    spec: ServerSpec,
    say: Callable[[str], None],
    progress: ProgressFn | None = None,
) -> BenchResult:
    """Start vLLM as ``spec`` says, benchmark it, stop it (``perfgate bench --serve``)."""
    problem = model_problem(spec.model)
    if problem is not None:
        raise BenchError(f"--serve: {problem}")
    for arg in spec.serve_args:
        if (bad := limits.arg_problem(arg)) is not None:
            raise BenchError(f"--serve-arg: {bad}")
    say(f"starting vLLM for {spec.model} (log: {spec.log_path})")
    with VllmServer(spec) as server:
        say(f"server healthy at {server.url} after {server.startup_s:.0f} s")
        return run_bench(replace(cfg, url=server.url), progress)
