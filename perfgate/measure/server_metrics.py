"""The server's own view of a run, from two ``/metrics`` scrapes, checked against the client's.

vLLM exports Prometheus counters and histograms; the difference between a scrape just before
the measured requests and one just after is what the server did for them. Histogram means are
exact (``_sum`` / ``_count``); the client's figures should match them within the noise:

================================  ============================================  ================
server (delta between scrapes)    client figure it is compared with              expected
================================  ============================================  ================
generation_tokens_total           total_output_tokens                           equal
request_success_total             completed                                     equal
time_to_first_token_seconds       mean_ttft_ms                                  client >= server
inter_token_latency_seconds       mean_itl_per_token_ms (tokens, not chunks)    about equal
request_time_per_output_token     mean_tpot_ms                                  about equal
e2e_request_latency_seconds       mean_e2el_ms                                  client >= server
================================  ============================================  ================

The server stamps its times inside the engine's output processing; the client adds the HTTP,
the SSE framing and its own event loop. A client figure well above the server's means the time
went between them (an API-server or client bottleneck), not in the model. Counts that differ
mean other traffic reached the server during the run, or the client miscounted.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from perfgate.documents.bench import CrossCheck

# A latency figure "agrees" when within this relative or absolute slack of the server's.
# TTFT and E2EL include the HTTP request, the API server's tokenization and the stream's
# framing, which the engine's clock does not see (5-7 ms on a two-core CPU box); per-token
# figures have no such fixed part.
TOLERANCES = {  # check name -> (relative, absolute ms)
    "mean TTFT": (0.25, 10.0),
    "mean E2EL": (0.25, 10.0),
    "mean ITL per token": (0.10, 0.5),
    "mean TPOT": (0.10, 0.5),
}


def _samples(text: str | None) -> Iterator[Any]:
    """Every sample of a /metrics page, parsed by ``prometheus_client``; text it cannot parse
    ends the samples there (the figures read so far stand, the rest count as missing)."""
    if not text:
        return
    try:
        for family in text_string_to_metric_families(text):
            yield from family.samples
    except ValueError:
        return


def parse_prometheus(text: str) -> dict[str, float]:
    """Sum every sample of a metric name over its label sets (``_bucket`` series are skipped)."""
    totals: dict[str, float] = {}
    for sample in _samples(text):
        if not sample.name.endswith("_bucket"):
            totals[sample.name] = totals.get(sample.name, 0.0) + float(sample.value)
    return totals


def histogram_buckets(text: str | None, name: str) -> dict[float, float]:
    """A histogram's cumulative bucket counts by upper bound (``le``), summed over label sets."""
    out: dict[float, float] = {}
    for sample in _samples(text):
        if sample.name == f"{name}_bucket":
            le = float(sample.labels["le"])
            out[le] = out.get(le, 0.0) + float(sample.value)
    return out


def delta(before: dict[str, float], after: dict[str, float], name: str) -> float | None:
    if name not in after:
        return None
    return after[name] - before.get(name, 0.0)


def _hist_mean_ms(before: dict[str, float], after: dict[str, float], base: str) -> float | None:
    s = delta(before, after, f"{base}_sum")
    c = delta(before, after, f"{base}_count")
    if s is None or c is None or c <= 0:
        return None
    return s / c * 1000.0


def _float_or_none(x: Any) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _close(client: float, server: float, rel: float, abs_ms: float) -> bool:
    return abs(client - server) <= max(rel * abs(server), abs_ms)


def cross_check(
    before_text: str | None, after_text: str | None, client: dict[str, Any]
) -> list[CrossCheck]:
    """Compare the client's summary (``summary.compute_metrics`` output) with the server's."""
    if before_text is None or after_text is None:
        return []
    before, after = parse_prometheus(before_text), parse_prometheus(after_text)
    checks: list[CrossCheck] = []

    for name, metric, key, what in (
        ("generated tokens", "vllm:generation_tokens_total", "total_output_tokens", "tokens"),
        ("successful requests", "vllm:request_success_total", "completed", "requests"),
    ):
        s, c = delta(before, after, metric), _float_or_none(client.get(key))
        agrees = None if s is None or c is None else s == c
        note = (
            ""
            if agrees in (None, True)
            else (
                f"server counted {s:.0f} {what}, client {c:.0f}: other traffic reached the server "
                "during the run, or the client miscounted"
            )
        )
        remedy = (
            ""
            if agrees in (None, True)
            else ("make sure nothing else sends requests to this server while perfgate measures")
        )
        checks.append(CrossCheck(name, s, c, what, agrees, note, remedy))

    for name, base, key in (
        ("mean TTFT", "vllm:time_to_first_token_seconds", "mean_ttft_ms"),
        ("mean ITL per token", "vllm:inter_token_latency_seconds", "mean_itl_per_token_ms"),
        ("mean TPOT", "vllm:request_time_per_output_token_seconds", "mean_tpot_ms"),
        ("mean E2EL", "vllm:e2e_request_latency_seconds", "mean_e2el_ms"),
    ):
        s, c = _hist_mean_ms(before, after, base), _float_or_none(client.get(key))
        if s is None or c is None:
            checks.append(CrossCheck(name, s, c, "ms", None, "not available on one side"))
            continue
        rel, abs_ms = TOLERANCES[name]
        agrees = _close(c, s, rel, abs_ms)
        note = remedy = ""
        if not agrees:
            remedy = (
                "run the client on another core or host; if tokens per chunk grow under load "
                "the API server is the bottleneck"
                if c > s
                else "make sure nothing else sends requests to this server while perfgate measures"
            )
            side = "above" if c > s else "below"
            note = (
                f"client {c:.2f} ms is {side} the server's {s:.2f} ms by more than "
                f"{rel:.0%} and {abs_ms:g} ms"
                + (
                    ": time is lost between the engine and the client (API server or "
                    "client bottleneck)"
                    if c > s
                    else ": other traffic on the server, or clocks disagree"
                )
            )
        checks.append(CrossCheck(name, s, c, "ms", agrees, note, remedy))
    return checks
