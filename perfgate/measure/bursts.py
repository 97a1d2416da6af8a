"""Whether a run's tokens reached the client in bursts, and where the bunching happened.

A mean survives a bursty stream: tokens that arrive in clumps after a silence give the same
mean inter-token latency as a steady stream. So perfgate looks at the gaps themselves, per
request, between token-carrying chunks (``RequestRecord.chunk_ns``; chunks that arrived in one
read of the connection share that read's time, so their gap is 0):

- the share of **near-zero gaps** (under ``NEAR_ZERO_MS``): chunks the server wrote at
  different times that reached perfgate together;
- the **longest stall** per request (its longest gap), against a threshold of
  ``STALL_FACTOR`` times the run's median gap per token, and at least ``STALL_MIN_MS``.

A run is **bursty** when near-zero gaps exceed ``NEAR_ZERO_SHARE`` of all gaps or any request
stalled. Where it happened, from three witnesses:

1. **perfgate's client**: its event loop's own stalls during the run (``LoopMonitor``: a timer
   that should fire every ``LoopMonitor.period_ms`` and records how late it fired). If the loop
   was blocked for at least half the longest stall (and at least ``CLIENT_STALL_MS``), the
   bunching is the client's: it did not read while the bytes waited in the socket.
2. **the engine**: vLLM's own inter-token latency histogram
   (``vllm:inter_token_latency_seconds``, the delta over the run) - the engine stamps tokens as
   it produces them. If its p99 reaches the stall threshold, the engine itself produced tokens in
   clumps (a prefill interrupting decodes, preemption).
3. otherwise **between the engine and the socket**: the engine was steady and the client was
   reading, so the tokens were held in vLLM's API server (its output handler, the HTTP
   response) or the connection.

A bursty run's chunk-based ITL describes delivery, not generation: the report says so, and a
comparison refuses to gate on ITL for it (``decide.judge.ITL_METRICS`` are reported as
inconclusive and secondary, with the reason: they neither pass nor fail the run).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence

import numpy as np

from perfgate.documents.bench import Bursts
from perfgate.documents.records import RequestRecord
from perfgate.measure.server_metrics import histogram_buckets

NEAR_ZERO_MS = 0.1
NEAR_ZERO_SHARE = 0.25
STALL_FACTOR = 10.0
STALL_MIN_MS = 50.0
CLIENT_STALL_MS = 5.0
SERVER_ITL = "vllm:inter_token_latency_seconds"


class LoopMonitor:
    """perfgate's own event-loop stalls while it reads streams: a task sleeps ``period_ms`` at
    a time and keeps the latest of its wake-ups later than ``CLIENT_STALL_MS`` (``longest_ms``,
    0 when none was). Use as ``async with LoopMonitor() as monitor:`` around the requests."""

    period_ms = 2.0

    def __init__(self) -> None:
        self._longest_ns = 0
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        period = self.period_ms / 1000
        limit = int(CLIENT_STALL_MS * 1e6)
        while True:
            before = time.perf_counter_ns()
            await asyncio.sleep(period)
            late = time.perf_counter_ns() - before - int(period * 1e9)
            if late > limit:
                self._longest_ns = max(self._longest_ns, late)

    async def __aenter__(self) -> LoopMonitor:
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def reset(self) -> None:
        self._longest_ns = 0

    @property
    def longest_ms(self) -> float:
        return self._longest_ns / 1e6


def bucket_quantile(q: float, buckets: dict[float, float]) -> tuple[float, float]:
    """The bounds (lower, upper) of the bucket that holds the q-th observation: a histogram
    knows no more (vLLM's lowest inter-token bucket is 10 ms, above a CPU model's ~3 ms, so an
    interpolated figure would be invented). NaNs with no observations; upper is inf in +Inf."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return math.nan, math.nan
    rank = q * buckets[bounds[-1]]
    lower = 0.0
    for le in bounds:
        if buckets[le] >= rank:
            return lower, le
        lower = le
    return lower, math.inf


def analyze(
    records: Sequence[RequestRecord],
    before_text: str | None = None,
    after_text: str | None = None,
    client_stall_ms: float = 0.0,
) -> Bursts:
    """The bunching of the measured, successful requests, and where it happened."""
    per_request = []
    token_gaps: list[float] = []
    for r in records:
        if r.warmup or not r.ok or len(r.chunk_ns) < 2:
            continue
        gaps = np.diff(np.asarray(r.chunk_ns, dtype=np.int64)) / 1e6
        tokens = np.asarray(r.chunk_tokens[1:], dtype=float) if r.chunk_tokens else None
        token_gaps += list(gaps / tokens) if tokens is not None else list(gaps)
        per_request.append((r.index, gaps))
    if not per_request:
        return Bursts(math.nan, math.nan, math.nan, 0, explanation="no stream had two chunks")
    all_gaps = np.concatenate([g for _, g in per_request])
    near_zero = float(np.mean(all_gaps < NEAR_ZERO_MS))
    threshold = max(STALL_MIN_MS, STALL_FACTOR * float(np.median(token_gaps)))
    worst = sorted(
        (
            {
                "request": i,
                "longest_stall_ms": float(g.max()),
                "near_zero_fraction": float(np.mean(g < NEAR_ZERO_MS)),
            }
            for i, g in per_request
        ),
        key=lambda w: -w["longest_stall_ms"],
    )
    longest = worst[0]["longest_stall_ms"]
    stalled = sum(w["longest_stall_ms"] > threshold for w in worst)
    buckets = _delta(
        histogram_buckets(before_text, SERVER_ITL), histogram_buckets(after_text, SERVER_ITL)
    )
    server = {f"p{q}": bucket_quantile(q / 100, buckets) for q in (50, 90, 99)}
    client = {f"p{q}": float(np.percentile(token_gaps, q)) for q in (50, 90, 99)}
    out = Bursts(
        near_zero_fraction=near_zero,
        longest_stall_ms=longest,
        stall_threshold_ms=threshold,
        stalled_requests=stalled,
        worst=worst[:5],
        client_stall_ms=client_stall_ms,
        server_itl_ms={
            k: [lo * 1000, hi * 1000] for k, (lo, hi) in server.items() if not math.isnan(lo)
        },
        client_itl_ms=client,
    )
    out.bursty = near_zero > NEAR_ZERO_SHARE or stalled > 0
    if out.bursty:
        out.where, out.explanation = _attribute(out)
    return out


def _delta(before: dict[float, float], after: dict[float, float]) -> dict[float, float]:
    return {le: c - before.get(le, 0.0) for le, c in after.items()}


def _attribute(b: Bursts) -> tuple[str, str]:
    parts = []
    if b.near_zero_fraction > NEAR_ZERO_SHARE:
        parts.append(
            f"{b.near_zero_fraction:.0%} of the gaps between chunks were under {NEAR_ZERO_MS:g} ms"
        )
    if b.stalled_requests:
        parts.append(
            f"{b.stalled_requests} request(s) stalled (longest {b.longest_stall_ms:.0f} ms, "
            f"threshold {b.stall_threshold_ms:.0f} ms)"
        )
    what = ", ".join(parts)
    evidence = max(b.longest_stall_ms if b.stalled_requests else 0.0, CLIENT_STALL_MS)
    if b.client_stall_ms >= max(CLIENT_STALL_MS, 0.5 * evidence):
        return "client", (
            f"{what}: in perfgate's client - its event loop was blocked for up to "
            f"{b.client_stall_ms:.0f} ms while the tokens waited in the socket (the machine is "
            "short of CPU for the client: give it its own cores)"
        )
    server_p99 = b.server_itl_ms.get("p99")
    if b.stalled_requests and server_p99 is not None and server_p99[0] >= b.stall_threshold_ms:
        return "engine", (
            f"{what}: in the engine - vLLM's own inter-token latency histogram has its p99 "
            f"above {server_p99[0]:.0f} ms: tokens were produced in clumps (prefills "
            "interrupting decodes, preemption), not delayed on the way"
        )
    if server_p99 is None or (b.stalled_requests and server_p99[1] >= b.stall_threshold_ms):
        return "server", (
            f"{what}: in the server - perfgate's event loop was never blocked more than "
            f"{b.client_stall_ms:.0f} ms; "
            + (
                "without the server's /metrics histogram"
                if server_p99 is None
                else f"with the server's inter-token p99 between {server_p99[0]:g} and "
                f"{server_p99[1]:g} ms (its histogram's bucket)"
            )
            + " perfgate cannot tell the engine from the API server"
        )
    seen = f" (its inter-token p99 at most {server_p99[1]:g} ms)"
    return "server output path", (
        f"{what}: between the engine and the socket - the engine produced tokens steadily"
        f"{seen} and perfgate's event loop was never blocked more than "
        f"{b.client_stall_ms:.0f} ms, so vLLM's API server (its output handler, the HTTP "
        "response) or the connection held them"
    )
