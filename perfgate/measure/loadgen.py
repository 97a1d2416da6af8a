"""The load generator: sends prompts at a request rate under a concurrency cap, one record each.

Arrivals follow ``vllm bench serve``: with ``request_rate = inf`` every request arrives at once;
otherwise gaps are drawn from a gamma distribution with mean ``1 / request_rate`` and shape
``burstiness`` (1.0 = Poisson), seeded. A request that arrives while ``max_concurrency``
requests are in flight waits in the client; that wait is recorded (``queue_wait``) and is not part
of its TTFT, since TTFT starts when the request is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import aiohttp
import numpy as np

from perfgate.documents.bench import Workload
from perfgate.documents.records import RequestRecord
from perfgate.measure.client import Clock, build_payload, send_request
from perfgate.measure.workers import StreamWorkers
from perfgate.measure.workload import Prompt


@dataclass(frozen=True)
class Target:
    """Where the load goes: the server's base URL and the served model's name."""

    base_url: str
    model: str


def arrival_gaps_s(n: int, request_rate: float, burstiness: float, seed: int) -> list[float]:
    """Seconds to wait before each of ``n`` arrivals (the first arrives at once)."""
    if n == 0:
        return []
    if math.isinf(request_rate):
        return [0.0] * n
    rng = np.random.default_rng(seed)
    theta = 1.0 / (request_rate * burstiness)
    gaps = rng.gamma(shape=burstiness, scale=theta, size=n)
    gaps[0] = 0.0
    return [float(g) for g in gaps]


@contextlib.contextmanager
def measured_window() -> Iterator[None]:
    """Around the requests of a run: no garbage collection while streams are read. A full
    collection walks every live object (per-request records, per-chunk lists) and stalled
    perfgate's client for 40-260 ms in the middle of measured streams (docs/fidelity.md);
    reference counting still frees everything acyclic, and the cycles left are collected
    once the window closes."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.collect()


async def run_load(
    session: aiohttp.ClientSession,
    target: Target,
    workload: Workload,
    prompts: Sequence[Prompt],
    *,
    t0_ns: int,
    warmup: bool = False,
    first_index: int = 0,
    on_done: Callable[[RequestRecord], None] | None = None,
    clock: Clock = time.perf_counter_ns,
    workers: StreamWorkers | None = None,
) -> list[RequestRecord]:
    """Send every prompt once; records come back in prompt order, times relative to ``t0_ns``.
    With ``workers`` the streams are read in client processes of their own (their clock is
    ``time.perf_counter_ns``, whatever ``clock`` is)."""
    w = workload
    slots = asyncio.Semaphore(w.max_concurrency) if w.max_concurrency else None
    gaps = arrival_gaps_s(len(prompts), w.request_rate, w.burstiness, w.seed)

    async def one(i: int, prompt: Prompt, scheduled_ns: int) -> RequestRecord:
        payload = build_payload(
            w.endpoint, target.model, prompt.text, prompt.output_tokens, temperature=w.temperature
        )
        async with slots or contextlib.nullcontext():
            if workers is None:
                send_ns, result = await send_request(
                    session, target.base_url, w.endpoint, payload, clock, w.deadlines
                )
            else:
                send_ns, result = await workers.send(
                    target.base_url, w.endpoint, payload, w.deadlines
                )
        record = RequestRecord(
            index=first_index + i,
            expected_prompt_tokens=prompt.prompt_tokens,
            expected_output_tokens=prompt.output_tokens,
            scheduled_ns=scheduled_ns - t0_ns,
            send_ns=send_ns - t0_ns,
            end_ns=None if result.end_ns is None else result.end_ns - t0_ns,
            chunk_ns=tuple(t - t0_ns for t in result.chunk_ns),
            chunk_tokens=None if result.chunk_tokens is None else tuple(result.chunk_tokens),
            prompt_tokens=result.prompt_tokens,
            output_tokens=result.output_tokens,
            error=result.error,
            warmup=warmup,
        )
        if on_done is not None:
            on_done(record)
        return record

    tasks: list[asyncio.Task[RequestRecord]] = []
    try:
        for i, (prompt, gap) in enumerate(zip(prompts, gaps, strict=True)):
            if gap > 0:
                await asyncio.sleep(gap)
            tasks.append(asyncio.create_task(one(i, prompt, clock())))
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
