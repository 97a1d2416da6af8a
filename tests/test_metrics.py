import asyncio
import math

import pytest

from perfgate.documents.records import RequestRecord
from perfgate.formulas import (
    describe,
    e2el_ms,
    itl_ms,
    itl_per_token_ms,
    tpot_ms,
    ttft_ms,
)
from perfgate.measure.client import consume_stream
from perfgate.measure.summary import compute_metrics
from tests.sse import DONE, ScriptedClock, completion_chunk, lines, usage_chunk

MS = 1_000_000


def rec(
    index=0,
    send=0,
    chunks=(),
    tokens=None,
    out=None,
    prompt=4,
    error=None,
    end=None,
    scheduled=None,
    warmup=False,
    expected_out=None,
):
    chunks = tuple(chunks)
    return RequestRecord(
        index=index,
        expected_prompt_tokens=prompt,
        expected_output_tokens=expected_out if expected_out is not None else (out or 0),
        scheduled_ns=send if scheduled is None else scheduled,
        send_ns=send,
        end_ns=end if end is not None else (chunks[-1] if chunks else send),
        chunk_ns=chunks,
        chunk_tokens=None if tokens is None else tuple(tokens),
        prompt_tokens=prompt,
        output_tokens=out,
        error=error,
        warmup=warmup,
    )


def test_latencies_follow_vllm_definitions():
    r = rec(send=0, chunks=(30 * MS, 40 * MS, 55 * MS, 60 * MS), tokens=(1, 1, 1, 1), out=4)
    assert ttft_ms(r) == 30.0
    assert e2el_ms(r) == 60.0
    assert tpot_ms(r) == pytest.approx(30.0 / 3)
    assert itl_ms(r) == [10.0, 15.0, 5.0]


def test_e2el_minus_ttft_equals_sum_of_itl_exactly_from_a_scripted_stream():
    stream = [completion_chunk(c, 3, i + 1) for i, c in enumerate("abcde")]
    stream += [usage_chunk(3, 5), DONE]
    send = 1_000
    times = [
        1_000 + 7_000_123,
        1_000 + 9_500_000,
        1_000 + 13_000_001,
        1_000 + 13_000_002,
        1_000 + 21_111_111,
        1_000 + 21_111_200,
        1_000 + 21_111_300,
        1_000 + 21_111_400,
    ]
    result = asyncio.run(consume_stream(lines(stream), ScriptedClock(times)))
    r = rec(
        send=send,
        chunks=result.chunk_ns,
        tokens=result.chunk_tokens,
        out=result.output_tokens,
        end=result.end_ns,
    )
    gaps_ns = [b - a for a, b in zip(r.chunk_ns, r.chunk_ns[1:], strict=False)]
    assert (r.last_token_ns - send) - (r.first_token_ns - send) == sum(gaps_ns)  # exact, in ns
    assert e2el_ms(r) - ttft_ms(r) == pytest.approx(sum(itl_ms(r)), rel=1e-12)
    assert ttft_ms(r) == 7.000123


def test_multi_token_chunks_itl_per_token_and_tpot():
    # 1 + 4 + 3 tokens in three chunks, gaps 40 ms and 30 ms.
    r = rec(send=0, chunks=(10 * MS, 50 * MS, 80 * MS), tokens=(1, 4, 3), out=8)
    assert itl_ms(r) == [40.0, 30.0]
    assert itl_per_token_ms(r) == [10.0] * 4 + [10.0] * 3
    assert tpot_ms(r) == pytest.approx(70.0 / 7)
    m = compute_metrics([r])
    assert m["mean_itl_ms"] == 35.0  # the chunk view overstates ...
    assert m["mean_itl_per_token_ms"] == 10.0  # ... the per-token latency, which equals TPOT
    assert m["mean_tokens_per_chunk_n"] == pytest.approx(8 / 3)
    assert m["multi_token_chunk_fraction"] == pytest.approx(2 / 3)


def test_peak_throughput_by_chunks_and_by_tokens():
    a = rec(index=0, send=0, chunks=(100 * MS, 200 * MS, 1500 * MS), tokens=(1, 5, 2), out=8)
    b = rec(index=1, send=0, chunks=(300 * MS, 1600 * MS), tokens=(1, 9), out=10)
    m = compute_metrics([a, b])
    assert m["max_output_tokens_per_s"] == 3.0  # chunks in second 0: 100, 200, 300 ms
    assert m["max_output_tokens_per_s_by_tokens"] == 11.0  # tokens in second 1: 2 + 9


def test_throughputs_over_duration_and_exact_concurrency():
    a = rec(index=0, send=0, chunks=(1 * MS, 1000 * MS), tokens=(1, 1), out=2, prompt=10)
    b = rec(index=1, send=500 * MS, chunks=(600 * MS, 2000 * MS), tokens=(1, 1), out=2, prompt=10)
    c = rec(index=2, send=1000 * MS, chunks=(1100 * MS, 1200 * MS), tokens=(1, 1), out=2, prompt=10)
    m = compute_metrics([a, b, c])
    assert m["duration"] == 2.0
    assert m["completed"] == 3 and m["failed"] == 0
    assert m["request_throughput"] == 1.5
    assert m["output_throughput"] == 3.0
    assert m["total_token_throughput"] == 18.0
    assert m["max_concurrent_requests"] == 2  # a ends exactly when c starts


def test_every_request_failed_gives_nan_not_zero():
    failed = [rec(index=i, send=0, error="HTTP 500: boom", out=None) for i in range(3)]
    m = compute_metrics(failed)
    assert m["completed"] == 0 and m["failed"] == 3
    for key in (
        "mean_ttft_ms",
        "median_tpot_ms",
        "p99_itl_ms",
        "mean_e2el_ms",
        "request_throughput",
        "output_throughput",
        "max_output_tokens_per_s",
    ):
        assert math.isnan(m[key]), key
    assert m["total_output_tokens"] is None


def test_missing_usage_makes_totals_unknown_not_zero():
    r = rec(send=0, chunks=(MS, 2 * MS), tokens=None, out=None)
    m = compute_metrics([r])
    assert m["total_output_tokens"] is None
    assert math.isnan(m["output_throughput"])
    assert math.isnan(m["mean_tpot_ms"])
    assert math.isnan(m["mean_itl_per_token_ms"])
    assert m["mean_itl_ms"] == 1.0  # the chunk gap is still measured


def test_warmup_requests_are_excluded():
    warm = rec(index=-1, send=0, chunks=(900 * MS,), tokens=(1,), out=1, warmup=True)
    real = rec(index=0, send=1000 * MS, chunks=(1010 * MS, 1020 * MS), tokens=(1, 1), out=2)
    m = compute_metrics([warm, real])
    assert m["completed"] == 1
    assert m["mean_ttft_ms"] == 10.0
    assert m["duration"] == pytest.approx(0.02)


def test_queue_wait_is_send_minus_scheduled():
    r = rec(send=30 * MS, scheduled=10 * MS, chunks=(40 * MS,), tokens=(1,), out=1)
    assert compute_metrics([r])["mean_queue_wait_ms"] == 20.0


def test_describe_uses_population_std_and_linear_percentiles():
    d = describe([1.0, 2.0, 3.0, 4.0], "x", "ms", (50, 90))
    assert d["mean_x_ms"] == 2.5
    assert d["std_x_ms"] == pytest.approx(math.sqrt(1.25))
    assert d["p90_x_ms"] == pytest.approx(3.7)
    assert d["p50_x_ms"] == d["median_x_ms"] == 2.5
    assert d["min_x_ms"] == 1.0 and d["max_x_ms"] == 4.0
    assert math.isnan(describe([], "x", "ms", (99.9,))["p99.9_x_ms"])
