"""One home for every metric's facts: name, label, unit, direction, whether it can be gated,
and how it is computed from what was measured.

Scenario validation (which metrics a ``[thresholds]`` table may name), the bench summary
(which latency series it describes), the comparison (per-request values and per-start
statistics) and the renderers (labels, the side-by-side table) all read this registry, so a
new metric is one ``register`` call here plus its formula in ``perfgate.formulas``.

Two kinds of gateable metric:

- **request-level**: each request contributes values (``per_request``: one TTFT, or all its
  chunk gaps); a server start's value is ``statistic`` (mean, median, pNN) of its requests'
  pooled values. Registered as families: ``median_tpot_ms``, ``p99_tpot_ms``, ...
- **run-level**: one value per repeat in the bench summary (``output_throughput``); a start's
  value is the geometric mean of its repeats'.
- **window-level** (``from_window``): one value per server start, read from that start's
  profiled window (``documents.kernels.Window.figures``): device time per decode step at a known
  batch, the quiet signal for kernel changes. Gating one needs ``[profile] enabled``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from perfgate import formulas as metrics
from perfgate.documents.kernels import FIGURES
from perfgate.documents.records import RequestRecord

PerRequest = Callable[[RequestRecord], list[float]]


@dataclass(frozen=True)
class Metric:
    name: str  # its key in a bench result's ``metrics``
    label: str
    unit: str
    higher_is_better: bool = False
    gateable: bool = True
    per_request: PerRequest | None = None  # None: a run-level metric
    statistic: str | None = None  # mean | median | pNN, for request-level metrics
    fmt: str = "{:.2f}"  # how the side-by-side table prints it
    from_window: bool = False  # one value per start, from its profiled window

    @property
    def request_level(self) -> bool:
        return self.per_request is not None


@dataclass(frozen=True)
class Latency:
    """A request-level family (``ttft``): summarized as ``{stat}_{base}_ms`` in every bench
    result, gateable under the statistics in ``GATED_STATS``."""

    base: str
    label: str
    per_request: PerRequest
    over: str = "ok"  # which requests contribute: "ok" (successful) or "measured" (all)
    needs_chunk_tokens: bool = False  # only when every request reported tokens per chunk
    gateable: bool = True


GATED_STATS = ("mean", "median", "p90", "p95", "p99")
LATENCIES: dict[str, Latency] = {}
METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} is registered already")
    METRICS[metric.name] = metric
    return metric


def register_latency(family: Latency) -> Latency:
    """A request-level family and its gateable statistics."""
    if family.base in LATENCIES:
        raise ValueError(f"latency {family.base!r} is registered already")
    LATENCIES[family.base] = family
    for stat in GATED_STATS:
        title = stat.capitalize() if stat in ("mean", "median") else stat.upper()
        register(
            Metric(
                name=f"{stat}_{family.base}_ms",
                label=f"{title} {family.label} (ms)",
                unit="ms",
                gateable=family.gateable,
                per_request=family.per_request,
                statistic=stat,
            )
        )
    return family


def unregister(name: str) -> None:
    """Remove a metric, or a latency family with its statistics (tests register throwaways)."""
    if name in LATENCIES:
        del LATENCIES[name]
        for stat in GATED_STATS:
            METRICS.pop(f"{stat}_{name}_ms", None)
    else:
        del METRICS[name]


def get(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a registered metric") from None


def gateable() -> list[str]:
    return sorted(m.name for m in METRICS.values() if m.gateable)


def _one(fn: Callable[[RequestRecord], float | None]) -> PerRequest:
    return lambda r: [] if (v := fn(r)) is None else [v]


# Request-level families; the first four keep `vllm bench serve`'s names.
register_latency(Latency("ttft", "TTFT", _one(metrics.ttft_ms)))
register_latency(Latency("tpot", "TPOT", _one(metrics.tpot_ms)))
register_latency(Latency("itl", "ITL", metrics.itl_ms))
register_latency(Latency("e2el", "E2EL", _one(metrics.e2el_ms)))
register_latency(
    Latency("itl_per_token", "ITL per token", metrics.itl_per_token_ms, needs_chunk_tokens=True)
)
register_latency(
    Latency(
        "queue_wait",
        "client queue wait",
        lambda r: [r.queue_wait_ns / metrics.NS_PER_MS],
        over="measured",
        gateable=False,
    )
)

# Run-level figures, in `vllm bench serve`'s order (the side-by-side table's rows).
for _name, _label, _unit, _better, _gate, _fmt in (
    ("completed", "Successful requests", "", True, False, "{:.0f}"),
    ("failed", "Failed requests", "", False, False, "{:.0f}"),
    ("duration", "Benchmark duration (s)", "s", False, False, "{:.2f}"),
    ("request_throughput", "Request throughput (req/s)", "req/s", True, True, "{:.2f}"),
    ("output_throughput", "Output token throughput (tok/s)", "tok/s", True, True, "{:.2f}"),
    ("max_output_tokens_per_s", "Peak output token throughput (tok/s)", "tok/s", True, False, ""),
    ("total_token_throughput", "Total token throughput (tok/s)", "tok/s", True, True, "{:.2f}"),
    ("mean_tokens_per_chunk_n", "Mean tokens per chunk", "", False, False, "{:.2f}"),
    (
        "max_output_tokens_per_s_by_tokens",
        "Peak output throughput, tokens (tok/s)",
        "tok/s",
        True,
        False,
        "{:.2f}",
    ),
):
    register(Metric(_name, _label, _unit, _better, _gate, fmt=_fmt or "{:.2f}"))

# Window-level figures (documents.kernels.FIGURES): GPU kernel time on a GPU, CPU operator time
# on CPU vLLM, per decode step at the window's batch.
_WINDOW_LABELS = {
    "device_time_per_step_us": ("Device time per decode step (us)", "us", True),
    "device_time_per_token_us": ("Device time per decode token (us)", "us", True),
    "launches_per_step": ("Kernel launches per decode step", "", False),
    "graph_replays_per_step": ("CUDA graph replays per decode step", "", False),
}
for _name in FIGURES:
    _label, _unit, _gate = _WINDOW_LABELS[_name]
    register(Metric(_name, _label, _unit, False, _gate, fmt="{:.1f}", from_window=True))

# The side-by-side table of report.md, in `vllm bench serve`'s order.
SERVING_TABLE = (
    "completed",
    "failed",
    "duration",
    "request_throughput",
    "output_throughput",
    "max_output_tokens_per_s",
    "total_token_throughput",
    *(f"{s}_{b}_ms" for b in ("ttft", "tpot", "itl", "e2el") for s in ("mean", "median", "p99")),
    "mean_tokens_per_chunk_n",
    "mean_itl_per_token_ms",
    "max_output_tokens_per_s_by_tokens",
)
