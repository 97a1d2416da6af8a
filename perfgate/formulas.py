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

import numpy as np

from perfgate.documents.records import RequestRecord

NS_PER_MS = 1e6
NS_PER_S = 1e9


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
