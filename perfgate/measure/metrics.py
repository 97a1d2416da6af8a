"""Every latency and throughput formula perfgate reports, from ``RequestRecord`` lists.

Definitions match ``vllm bench serve`` (``vllm/benchmarks/serve.py``), so a figure under one of
its key names can be checked against it:

- **TTFT** (time to first token) = first token-carrying chunk's arrival - send time.
- **E2EL** (end-to-end latency) = last token-carrying chunk's arrival - send time.
- **TPOT** (time per output token, per request) = (E2EL - TTFT) / (output_tokens - 1), for
  requests with more than one output token; the first token is excluded.
- **ITL** (inter-token latency) = gaps between consecutive token-carrying chunks of a request,
  pooled over all requests. Despite the name it is a *chunk* gap: when one chunk carries several
  tokens, ITL overstates the per-token latency by that factor.
- **output_throughput** = output tokens of successful requests / duration; **request_throughput**
  = successful requests / duration; **total_token_throughput** = (prompt + output tokens) /
  duration. **duration** runs from the first measured request's scheduled start to the last
  one's end; warmup requests are excluded from every figure.
- **max_output_tokens_per_s** = the largest number of token-carrying *chunks* seen in one
  1-second bucket counted from the first successful send (``vllm bench serve``'s definition,
  which counts chunks as tokens).
- **max_concurrent_requests** = the most requests in flight at once, from an exact sweep over
  send/end times (``vllm bench serve`` counts per 1-second bucket, which can overstate it).

Added by perfgate, under names of their own:

- **itl_per_token** = each chunk gap divided by the tokens that chunk carried, counted once per
  token (so its mean is sum(gaps) / tokens after the first).
- **tokens_per_chunk** = tokens carried by each token-carrying chunk (first chunk included).
- **max_output_tokens_per_s_by_tokens** = the 1-second-bucket peak counting *tokens*.
- **queue_wait** = time a request waited in the client for a concurrency slot before it was sent.

Missing is not zero: with no successful request every latency statistic is NaN, and a total
that some successful request could not report (no ``usage``) is ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from perfgate.measure.records import RequestRecord

NS_PER_MS = 1e6
NS_PER_S = 1e9
DEFAULT_PERCENTILES: tuple[float, ...] = (90.0, 99.0)


def _fmt_pct(p: float) -> str:
    return str(int(p)) if float(p).is_integer() else str(p)


def describe(values: Sequence[float], name: str, unit: str, percentiles: Iterable[float]) -> dict:
    """mean/median/std/min/max/pNN of ``values`` under ``{stat}_{name}_{unit}`` keys.

    Population std and linear-interpolated percentiles, as numpy (and vLLM) compute them.
    An empty sequence gives NaN for every statistic.
    """
    arr = np.asarray(values, dtype=float)
    out: dict[str, float] = {}
    empty = arr.size == 0
    out[f"mean_{name}_{unit}"] = math.nan if empty else float(arr.mean())
    out[f"median_{name}_{unit}"] = math.nan if empty else float(np.median(arr))
    out[f"std_{name}_{unit}"] = math.nan if empty else float(arr.std())
    out[f"min_{name}_{unit}"] = math.nan if empty else float(arr.min())
    out[f"max_{name}_{unit}"] = math.nan if empty else float(arr.max())
    for p in percentiles:
        out[f"p{_fmt_pct(p)}_{name}_{unit}"] = math.nan if empty else float(np.percentile(arr, p))
    return out


def ttft_ms(r: RequestRecord) -> float | None:
    first = r.first_token_ns
    return None if first is None else (first - r.send_ns) / NS_PER_MS


def e2el_ms(r: RequestRecord) -> float | None:
    last = r.last_token_ns
    return None if last is None else (last - r.send_ns) / NS_PER_MS


def tpot_ms(r: RequestRecord) -> float | None:
    """(E2EL - TTFT) / (output_tokens - 1); None with one token or an unknown count."""
    if r.output_tokens is None or r.output_tokens < 2 or not r.chunk_ns:
        return None
    return (r.chunk_ns[-1] - r.chunk_ns[0]) / NS_PER_MS / (r.output_tokens - 1)


def itl_ms(r: RequestRecord) -> list[float]:
    """Gaps between consecutive token-carrying chunks."""
    c = r.chunk_ns
    return [(c[i] - c[i - 1]) / NS_PER_MS for i in range(1, len(c))]


def itl_per_token_ms(r: RequestRecord) -> list[float]:
    """Each gap / tokens in the chunk that closed it, repeated once per token; [] if unknown."""
    if r.chunk_tokens is None:
        return []
    out: list[float] = []
    for gap, n in zip(itl_ms(r), r.chunk_tokens[1:], strict=True):
        out.extend([gap / n] * n)
    return out


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

    from perfgate.registry import LATENCIES  # the registry's formulas are this module's

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
