"""A measured window's summary: every figure ``perfgate bench`` reports, under ``vllm bench
serve``'s key names plus perfgate's own, from its ``RequestRecord`` list. The per-request
formulas and their definitions are ``perfgate.formulas``; the latency families
summarised here are the registry's (``perfgate.registry.LATENCIES``), so a family added there
is reported with no change here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from perfgate.documents.bench import DEFAULT_PERCENTILES
from perfgate.documents.records import RequestRecord
from perfgate.formulas import NS_PER_S, describe
from perfgate.registry import LATENCIES


def _peak_per_second(times_and_weights: list[tuple[int, int]], start_ns: int) -> float:
    """Largest total weight in one 1-second bucket counted from ``start_ns``."""
    if not times_and_weights:
        return math.nan
    buckets: dict[int, int] = {}
    for t, w in times_and_weights:
        b = (t - start_ns) // int(NS_PER_S)
        buckets[b] = buckets.get(b, 0) + w
    return float(max(buckets.values()))


def _max_concurrency(records: Sequence[RequestRecord]) -> int:
    events: list[tuple[int, int]] = []
    for r in records:
        if r.end_ns is not None:
            events.append((r.send_ns, 1))
            events.append((r.end_ns, -1))
    events.sort(key=lambda e: (e[0], e[1]))  # an end at the same instant frees its slot first
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def _sum_or_none(values: Iterable[int | None]) -> int | None:
    total = 0
    for v in values:
        if v is None:
            return None
        total += v
    return total


def compute_metrics(
    records: Sequence[RequestRecord], percentiles: Iterable[float] = DEFAULT_PERCENTILES
) -> dict[str, Any]:
    """The run's summary under ``vllm bench serve`` key names plus perfgate's own."""
    percentiles = tuple(percentiles)
    measured = [r for r in records if not r.warmup]
    ok = [r for r in measured if r.ok]
    out: dict[str, Any] = {}

    if measured:
        ends = [r.end_ns for r in measured if r.end_ns is not None]
        first_ns = min(r.scheduled_ns for r in measured)
        duration_s = (max(ends) - first_ns) / NS_PER_S if ends else math.nan
    else:
        duration_s = math.nan
    # Peak buckets count from the first successful send, as vLLM's do.
    start_ns = min((r.send_ns for r in ok), default=0)

    total_input = _sum_or_none(r.prompt_tokens for r in ok) if ok else None
    total_output = _sum_or_none(r.output_tokens for r in ok) if ok else None

    def rate(count: int | None) -> float:
        if count is None or not ok or not duration_s > 0:
            return math.nan
        return count / duration_s

    out["duration"] = duration_s
    out["completed"] = len(ok)
    out["failed"] = len(measured) - len(ok)
    out["total_input_tokens"] = total_input
    out["total_output_tokens"] = total_output
    out["request_throughput"] = rate(len(ok))
    out["output_throughput"] = rate(total_output)
    out["total_token_throughput"] = rate(
        None if total_input is None or total_output is None else total_input + total_output
    )
    out["max_output_tokens_per_s"] = _peak_per_second(
        [(t, 1) for r in ok for t in r.chunk_ns], start_ns
    )
    tokens_known = all(r.chunk_tokens is not None for r in ok)
    out["max_output_tokens_per_s_by_tokens"] = (
        _peak_per_second(
            [(t, n) for r in ok for t, n in zip(r.chunk_ns, r.chunk_tokens or (), strict=True)],
            start_ns,
        )
        if tokens_known
        else math.nan
    )
    out["max_concurrent_requests"] = _max_concurrency(measured)

    # every latency family of the registry, described with mean/median/std/min/max/pNN in ms
    for family in LATENCIES.values():
        pool = measured if family.over == "measured" else ok
        usable = tokens_known or not family.needs_chunk_tokens
        values = [v for r in pool for v in family.per_request(r)] if usable else []
        out.update(describe(values, family.base, "ms", percentiles))

    chunk_sizes = [n for r in ok for n in (r.chunk_tokens or ())] if tokens_known else []
    out.update(describe(chunk_sizes, "tokens_per_chunk", "n", percentiles))
    out["multi_token_chunk_fraction"] = (
        float(np.mean([n > 1 for n in chunk_sizes])) if chunk_sizes else math.nan
    )
    return out
