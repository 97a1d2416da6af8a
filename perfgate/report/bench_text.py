"""Plain-text summary of a bench result, laid out like ``vllm bench serve``'s, plus perfgate rows.

A pure function of the result as its JSON records it (``documents.bench.BenchResult``, read back
from the file ``perfgate bench`` writes), so a stored result renders the same as a fresh one.
"""

from __future__ import annotations

import math
from typing import Any

from perfgate.documents.bench import BenchResult, Bursts

WIDTH = 60


def _show(v: Any, fmt: str = "{:.2f}") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return fmt.format(v)


def _row(label: str, value: str) -> str:
    return f"{label:<44} {value}"


def _title(text: str, fill: str = "-") -> str:
    return f"{text:{fill}^{WIDTH}}"


def _pct_label(key: str) -> str:
    return key.split("_", 1)[0].upper()  # "p99" -> "P99"


def _latency_block(m: dict[str, Any], name: str, title: str, label: str) -> list[str]:
    lines = [_title(title)]
    lines.append(_row(f"Mean {label} (ms):", _show(m.get(f"mean_{name}_ms"))))
    lines.append(_row(f"Median {label} (ms):", _show(m.get(f"median_{name}_ms"))))
    pcts = [k for k in m if k.startswith("p") and k.endswith(f"_{name}_ms")]
    for key in pcts:
        lines.append(_row(f"{_pct_label(key)} {label} (ms):", _show(m.get(key))))
    return lines


def render_bench_text(result: BenchResult) -> str:
    m = result.metrics
    cfg = result.config
    lines = [_title(" Serving Benchmark Result ", "=")]
    lines.append(_row("Successful requests:", str(m.get("completed"))))
    lines.append(_row("Failed requests:", str(m.get("failed"))))
    if cfg.max_concurrency is not None:
        lines.append(_row("Maximum request concurrency:", str(cfg.max_concurrency)))
    if cfg.request_rate is not None and math.isfinite(cfg.request_rate):
        lines.append(_row("Request rate configured (RPS):", _show(cfg.request_rate)))
    lines.append(_row("Benchmark duration (s):", _show(m.get("duration"))))
    lines.append(_row("Total input tokens:", _show(m.get("total_input_tokens"), "{}")))
    lines.append(_row("Total generated tokens:", _show(m.get("total_output_tokens"), "{}")))
    lines.append(_row("Request throughput (req/s):", _show(m.get("request_throughput"))))
    lines.append(_row("Output token throughput (tok/s):", _show(m.get("output_throughput"))))
    lines.append(
        _row("Peak output token throughput (tok/s):", _show(m.get("max_output_tokens_per_s")))
    )
    lines.append(_row("Peak concurrent requests:", _show(m.get("max_concurrent_requests"), "{}")))
    lines.append(_row("Total token throughput (tok/s):", _show(m.get("total_token_throughput"))))
    lines += _latency_block(m, "ttft", "Time to First Token", "TTFT")
    lines += _latency_block(m, "tpot", "Time per Output Token (excl. 1st token)", "TPOT")
    lines += _latency_block(m, "itl", "Inter-token Latency", "ITL")
    lines += _latency_block(m, "e2el", "End-to-end Latency", "E2EL")

    lines.append(_title(" perfgate: tokens, not chunks "))
    lines.append(_row("Mean tokens per chunk:", _show(m.get("mean_tokens_per_chunk_n"))))
    lines.append(_row("Max tokens per chunk:", _show(m.get("max_tokens_per_chunk_n"), "{:.0f}")))
    lines.append(
        _row("Chunks with >1 token:", _show(m.get("multi_token_chunk_fraction"), "{:.1%}"))
    )
    lines.append(_row("Mean ITL per token (ms):", _show(m.get("mean_itl_per_token_ms"))))
    lines.append(_row("Median ITL per token (ms):", _show(m.get("median_itl_per_token_ms"))))
    lines.append(
        _row(
            "Peak output throughput, tokens (tok/s):",
            _show(m.get("max_output_tokens_per_s_by_tokens")),
        )
    )
    lines.append(_row("Mean client queue wait (ms):", _show(m.get("mean_queue_wait_ms"))))
    lines.append(_row("Max client queue wait (ms):", _show(m.get("max_queue_wait_ms"))))

    if result.cross_checks:
        lines.append(_title(" Server /metrics cross-check "))
        lines.append(f"{'':<32} {'server':>10} {'client':>10}  agrees")
        for c in result.cross_checks:
            fmt = "{:.2f}" if c.unit == "ms" else "{:.0f}"
            agrees = {True: "yes", False: "NO", None: "-"}[c.agrees]
            label = f"{c.name} ({c.unit})"
            lines.append(
                f"{label:<32} {_show(c.server, fmt):>10} {_show(c.client, fmt):>10}  {agrees}"
            )
    lines += _bursts_block(result.bursts)
    lines.append("=" * WIDTH)

    for w in result.warnings:
        remedy = f" -> {w.remedy}" if w.remedy else ""
        lines.append(f"warning: {w.message}{remedy}")
    if result.problems:
        lines.append("INVALID RUN (exit 2):")
        for p in result.problems:
            lines.append(f"  - {p.message}")
    return "\n".join(lines) + "\n"


def _bursts_block(b: Bursts | None) -> list[str]:
    """How the tokens reached the client (perfgate.measure.bursts): gaps near zero, stalls,
    the client's own stalls, the engine's inter-token p99, and the verdict with its place."""
    if not b:
        return []
    p99 = (b.server_itl_ms or {}).get("p99")
    lines = [
        _title(" Delivery: bursts and stalls "),
        _row("Gaps under 0.1 ms:", _show(b.near_zero_fraction, "{:.1%}")),
        _row("Longest stall (ms):", _show(b.longest_stall_ms)),
        _row(
            "Stalled requests:",
            f"{b.stalled_requests} (> {_show(b.stall_threshold_ms, '{:.0f}')} ms)",
        ),
        _row("Client event loop, longest stall (ms):", _show(b.client_stall_ms)),
        _row("Server inter-token p99 (ms):", "-" if not p99 else f"{p99[0]:g} to {p99[1]:g}"),
    ]
    if b.bursty:
        lines.append(f"Tokens reached the client in bursts ({b.where}).")
    else:
        lines.append("Tokens reached the client steadily.")
    return lines
