"""``perfgate bench``: one workload against one running server, start to finish.

Phases, in order: probe the server (model, context length, version) and check the request
shape fits; build exact-length prompts; send the warmup requests; scrape ``/metrics``; send the
measured requests; scrape ``/metrics`` again; compute metrics, validity problems, the
server-vs-client cross-check and warnings. Nothing here prints: progress goes through a callback
and the caller renders the ``BenchResult``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from perfgate import environment, limits, redact
from perfgate.client import Endpoint
from perfgate.endpoint import EndpointError, ServerInfo, Tokenizer, probe, scrape_metrics
from perfgate.loadgen import LoadSpec, new_session, run_load
from perfgate.metrics import DEFAULT_PERCENTILES, compute_metrics
from perfgate.records import RequestRecord
from perfgate.results import BENCH_SCHEMA
from perfgate.server_metrics import CrossCheck, cross_check
from perfgate.validity import Problem, check_records
from perfgate.workload import WorkloadError, build_prompts


class BenchError(Exception):
    """The benchmark could not run; the message names the flag or the server and the fix."""


@dataclass(frozen=True)
class BenchConfig:
    url: str
    model: str | None = None
    endpoint: Endpoint = "completions"
    num_prompts: int = 80
    input_len: int = 1024
    output_len: int = 1024
    max_concurrency: int | None = 8
    request_rate: float = math.inf
    burstiness: float = 1.0
    num_warmups: int = 0
    seed: int = 0
    temperature: float = 0.0
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES
    # A stream silent this long (before its first token or between two) fails its request.
    stall_timeout_s: float = 600.0
    # Where ``model`` came from, for messages: a flag, or a scenario field.
    model_field: str = "--model"
    # Bearer token for a server started with --api-key; never written anywhere.
    api_key: str | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        del d["model_field"], d["api_key"]
        d["url"] = redact.url(self.url)
        d["request_rate"] = "inf" if math.isinf(self.request_rate) else self.request_rate
        d["percentiles"] = list(self.percentiles)
        return d


@dataclass(frozen=True)
class Warning_:
    """Something about the measurement a reader should know, with what to do about it."""

    code: str
    message: str
    remedy: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class BenchResult:
    config: BenchConfig
    server: ServerInfo
    environment: dict[str, Any]
    records: list[RequestRecord]
    metrics: dict[str, Any]
    problems: list[Problem]
    cross_checks: list[CrossCheck]
    warnings: list[Warning_] = field(default_factory=list)
    started_at: str = ""

    @property
    def valid(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": BENCH_SCHEMA,
            "started_at": self.started_at,
            "valid": self.valid,
            "config": self.config.to_json(),
            "server": {**asdict(self.server), "base_url": redact.url(self.server.base_url)},
            "environment": self.environment,
            "metrics": self.metrics,
            "problems": [p.to_json() for p in self.problems],
            "server_cross_check": [c.to_json() for c in self.cross_checks],
            "warnings": [w.to_json() for w in self.warnings],
            "records": [r.to_json() for r in self.records],
        }


def validate_config(cfg: BenchConfig) -> None:
    """Flag checks that need no server; each message names the flag."""
    for flag, value in (
        ("--num-prompts", cfg.num_prompts),
        ("--random-input-len", cfg.input_len),
        ("--random-output-len", cfg.output_len),
    ):
        if value < 1:
            raise BenchError(f"{flag} must be at least 1, got {value}")
    if cfg.num_warmups < 0:
        raise BenchError(f"--num-warmups must be 0 or more, got {cfg.num_warmups}")
    if cfg.max_concurrency is not None and cfg.max_concurrency < 1:
        raise BenchError(
            f"--max-concurrency must be at least 1, got {cfg.max_concurrency} "
            "(leave it out for no cap)"
        )
    if not cfg.request_rate > 0:
        raise BenchError(
            f"--request-rate must be above 0, got {cfg.request_rate} (inf sends all at once)"
        )
    if not cfg.burstiness > 0:
        raise BenchError(f"--burstiness must be above 0, got {cfg.burstiness}")
    if not 0 < cfg.stall_timeout_s <= 86400:
        raise BenchError(
            f"--stall-timeout must be above 0 and at most 86400 s, got {cfg.stall_timeout_s:g}"
        )
    if problem := limits.send_span_problem(cfg.num_prompts, cfg.request_rate, "--request-rate"):
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
            f"--random-input-len {cfg.input_len} + --random-output-len {cfg.output_len} = "
            f"{total} tokens exceeds the server's max_model_len of {info.max_model_len} for "
            f"{info.model!r}; shorten them or restart the server with --max-model-len {total}"
        )


def collect_warnings(
    metrics: dict[str, Any], checks: list[CrossCheck], cfg: BenchConfig | None = None
) -> list[Warning_]:
    out: list[Warning_] = []
    if cfg is not None and cfg.num_warmups > 0:
        batch = min(cfg.max_concurrency or cfg.num_prompts, cfg.num_prompts)
        if cfg.num_warmups < batch:
            out.append(
                Warning_(
                    "few_warmups",
                    f"{cfg.num_warmups} warmup requests never filled the batch of {batch} "
                    "concurrent requests the benchmark runs: the first measured requests meet "
                    "batch shapes the server has not run yet (kernel selection, JIT, allocator)",
                    f"--num-warmups {batch} or more",
                )
            )
    if cfg is not None and not checks:
        out.append(
            Warning_(
                "no_server_metrics",
                "the server has no /metrics (or it did not answer): perfgate's token counts and "
                "latencies could not be checked against the server's own",
                "serve with vLLM's metrics on, or accept an unwitnessed measurement",
            )
        )
    for c in checks:
        if c.agrees is False:
            out.append(Warning_("server_disagrees", f"{c.name}: {c.note}", c.remedy))
    frac = metrics.get("multi_token_chunk_fraction")
    if isinstance(frac, float) and frac > 0.01:
        out.append(
            Warning_(
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


async def run_bench_async(cfg: BenchConfig, progress: ProgressFn | None = None) -> BenchResult:
    validate_config(cfg)
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    env = environment.capture()

    def report(phase: str, done: int, total: int) -> None:
        if progress is not None:
            progress(phase, done, total)

    async with new_session(cfg.max_concurrency, cfg.api_key) as session:
        try:
            info = await probe(session, cfg.url, cfg.model, cfg.model_field)
        except EndpointError as exc:
            raise BenchError(str(exc)) from exc
        check_fits(cfg, info)
        tokenizer = Tokenizer(session, info.base_url, info.model)
        try:
            report("prompts", 0, cfg.num_prompts + cfg.num_warmups)
            prompts = await build_prompts(
                tokenizer,
                endpoint=cfg.endpoint,
                num_prompts=cfg.num_prompts,
                input_len=cfg.input_len,
                output_len=cfg.output_len,
                seed=cfg.seed,
                stream=0,
            )
            warmup_prompts = await build_prompts(
                tokenizer,
                endpoint=cfg.endpoint,
                num_prompts=cfg.num_warmups,
                input_len=cfg.input_len,
                output_len=cfg.output_len,
                seed=cfg.seed,
                stream=1,
            )
        except WorkloadError as exc:
            raise BenchError(str(exc)) from exc
        except EndpointError as exc:
            raise BenchError(
                f"{exc}; perfgate builds exact-length prompts with the server's /tokenize and "
                "/detokenize endpoints (vLLM has them)"
            ) from exc

        spec = LoadSpec(
            base_url=info.base_url,
            endpoint=cfg.endpoint,
            model=info.model,
            max_concurrency=cfg.max_concurrency,
            request_rate=cfg.request_rate,
            burstiness=cfg.burstiness,
            seed=cfg.seed,
            temperature=cfg.temperature,
            stall_timeout_s=cfg.stall_timeout_s,
        )
        t0 = time.perf_counter_ns()
        records: list[RequestRecord] = []
        if warmup_prompts:
            done = 0

            def warm_done(_: RequestRecord) -> None:
                nonlocal done
                done += 1
                report("warmup", done, len(warmup_prompts))

            warm_spec = LoadSpec(**{**asdict(spec), "request_rate": math.inf})
            records += await run_load(
                session,
                warm_spec,
                warmup_prompts,
                t0_ns=t0,
                warmup=True,
                first_index=-len(warmup_prompts),
                on_done=warm_done,
            )

        before = await scrape_metrics(session, info.base_url)
        finished = 0

        def measured_done(_: RequestRecord) -> None:
            nonlocal finished
            finished += 1
            report("benchmark", finished, len(prompts))

        report("benchmark", 0, len(prompts))
        records += await run_load(session, spec, prompts, t0_ns=t0, on_done=measured_done)
        after = await scrape_metrics(session, info.base_url)

    metrics = compute_metrics(records, cfg.percentiles)
    checks = cross_check(before, after, metrics)
    return BenchResult(
        config=cfg,
        server=info,
        environment=env,
        records=records,
        metrics=metrics,
        problems=check_records(records),
        cross_checks=checks,
        warnings=collect_warnings(metrics, checks, cfg),
        started_at=started_at,
    )


def run_bench(cfg: BenchConfig, progress: ProgressFn | None = None) -> BenchResult:
    return asyncio.run(run_bench_async(cfg, progress))
