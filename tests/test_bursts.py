"""Bursts: near-zero gaps, stalls and where they happened, on streams of known timing (a real
server cannot produce a chosen burst on demand; tests/e2e/test_bursts_real_vllm.py provokes one
on CPU vLLM)."""

import asyncio
import math
import time
from dataclasses import replace

import pytest

from perfgate.decide.judge import ITL_METRICS, compare_repeats
from perfgate.documents.compare import INCONCLUSIVE, INVALID
from perfgate.documents.records import RequestRecord
from perfgate.documents.run import CompareRun, Repeat
from perfgate.documents.spec import Threshold
from perfgate.measure.bursts import LoopMonitor, analyze, bucket_quantile
from perfgate.measure.server_metrics import histogram_buckets
from perfgate.run import runner
from perfgate.scenario import load
from tests.test_compare import tpot_repeat
from tests.test_markdown import ROOT, bench_result

MS = 1_000_000


def record(index, gaps_ms, tokens=None, warmup=False, error=None):
    t, times = 10 * MS, []
    for g in [0.0, *gaps_ms]:
        t += int(g * MS)
        times.append(t)
    return RequestRecord(
        index=index,
        expected_prompt_tokens=8,
        expected_output_tokens=len(times),
        scheduled_ns=0,
        send_ns=0,
        end_ns=t + MS,
        chunk_ns=tuple(times),
        chunk_tokens=tuple(tokens) if tokens else tuple([1] * len(times)),
        output_tokens=sum(tokens) if tokens else len(times),
        warmup=warmup,
        error=error,
    )


def itl_metrics(counts: dict[str, float]) -> str:
    """A /metrics page with vLLM's inter-token histogram (cumulative bucket counts)."""
    name = "vllm:inter_token_latency_seconds"
    lines = [f"# TYPE {name} histogram"]
    for le, c in counts.items():
        lines.append(f'{name}_bucket{{le="{le}",model_name="tiny"}} {c}')
    total = counts["+Inf"]
    lines += [f'{name}_count{{model_name="tiny"}} {total}', f'{name}_sum{{model_name="tiny"}} 1.0']
    return "\n".join(lines) + "\n"


EMPTY = itl_metrics({"0.01": 0, "0.025": 0, "0.05": 0, "0.1": 0, "+Inf": 0})


def test_a_steady_stream_is_not_bursty():
    b = analyze([record(i, [3.0] * 50) for i in range(4)])
    assert not b.bursty and b.where is None
    assert b.near_zero_fraction == 0 and b.longest_stall_ms == pytest.approx(3.0)
    assert b.stall_threshold_ms == 50  # 10 x 3 ms is below the floor of 50 ms


def test_chunks_that_arrive_together_are_near_zero_gaps_and_the_client_is_named():
    # half the chunks arrive in pairs (one read): a gap of 0 after every other chunk
    gaps = [0.0, 6.0] * 25
    b = analyze([record(0, gaps)], client_stall_ms=9.0)
    assert b.near_zero_fraction == pytest.approx(0.5)
    assert b.bursty and b.where == "client"
    assert "event loop was blocked for up to 9 ms" in b.explanation


def test_a_stall_with_a_steady_engine_and_a_free_client_is_the_server_output_path():
    steady = [3.0] * 40 + [400.0] + [3.0] * 40
    before = EMPTY
    after = itl_metrics({"0.01": 970, "0.025": 1000, "0.05": 1000, "0.1": 1000, "+Inf": 1000})
    b = analyze([record(0, steady), record(1, [3.0] * 80)], before, after, client_stall_ms=0.0)
    assert b.stalled_requests == 1 and b.longest_stall_ms == pytest.approx(400.0)
    assert b.worst[0]["request"] == 0
    assert b.server_itl_ms["p99"] == [10.0, 25.0]  # bucket bounds, not an invented figure
    assert b.bursty and b.where == "server output path"
    assert "vLLM's API server" in b.explanation


def test_a_stall_the_engine_also_saw_is_the_engine():
    stalled = [3.0] * 40 + [400.0] + [3.0] * 40
    after = itl_metrics({"0.01": 900, "0.025": 900, "0.05": 900, "0.1": 900, "+Inf": 1000})
    b = analyze([record(0, stalled)], EMPTY, after)
    assert b.server_itl_ms["p99"] == [100.0, math.inf]
    assert b.where == "engine"


def test_without_the_servers_histogram_the_server_is_named_but_not_which_part():
    b = analyze([record(0, [3.0] * 40 + [400.0])])
    assert b.where == "server" and "cannot tell the engine from the API server" in b.explanation


def test_the_stall_threshold_follows_the_runs_own_pace_per_token():
    # 20 ms per token: a 150 ms gap is 7.5x the pace, not a stall; 250 ms is
    slow = [20.0] * 30
    assert not analyze([record(0, [*slow, 150.0])]).bursty
    assert analyze([record(0, [*slow, 250.0])]).stalled_requests == 1
    # a chunk of 10 tokens after 30 ms is 3 ms per token: the pace counts tokens
    b = analyze([record(0, [30.0] * 20, tokens=[10] * 21)])
    assert b.client_itl_ms["p50"] == pytest.approx(3.0) and not b.bursty


def test_warmups_failures_and_single_chunk_streams_are_left_out():
    b = analyze(
        [
            record(0, [3.0] * 20),
            record(1, [0.0] * 20, warmup=True),
            record(2, [500.0] * 3, error="boom"),
            record(3, []),
        ]
    )
    assert not b.bursty and b.near_zero_fraction == 0
    assert math.isnan(analyze([record(0, [])]).near_zero_fraction)


def test_bucket_quantile_gives_the_holding_buckets_bounds():
    counts = {0.01: 50.0, 0.025: 90.0, 0.05: 100.0, math.inf: 100.0}
    assert bucket_quantile(0.5, counts) == (0.0, 0.01)
    assert bucket_quantile(0.9, counts) == (0.01, 0.025)
    assert bucket_quantile(0.99, counts) == (0.025, 0.05)
    assert all(math.isnan(x) for x in bucket_quantile(0.5, {0.01: 0.0, math.inf: 0.0}))
    page = itl_metrics({"0.01": 3, "+Inf": 4})
    assert histogram_buckets(page, "vllm:inter_token_latency_seconds") == {0.01: 3, math.inf: 4}


def test_loop_monitor_sees_a_blocked_event_loop():
    async def go():
        async with LoopMonitor() as monitor:
            await asyncio.sleep(0.01)
            time.sleep(0.06)  # the loop blocked: nothing reads the sockets meanwhile
            await asyncio.sleep(0.01)
        return monitor

    monitor = asyncio.run(go())
    assert monitor.longest_ms >= 40  # at least most of the 60 ms block, whatever the machine


def test_a_bursty_repeat_takes_the_itl_rows_out_of_the_gate_and_leaves_tpot_alone():
    scenario = replace(
        load(ROOT / "scenarios" / "demo-cpu.toml"),
        thresholds=(Threshold("median_tpot_ms", 0.25), Threshold("median_itl_ms", 0.25)),
    )
    run = CompareRun(scenario=scenario, command="t", environment={})
    run.design = runner.new_design(scenario)
    for arm, base in (("baseline", 3.0), ("candidate", 3.01)):
        for start in range(3):
            data = tpot_repeat([base + 0.01 * start] * 8, start)
            run.repeats[arm].append(Repeat(bench_result(data), 0, start))
    compare_repeats(run)
    assert {r.metric: r.verdict for r in run.comparison}["median_itl_ms"] != INVALID
    bursty = analyze([record(0, [3.0] * 40 + [400.0])])
    assert bursty.bursty
    run.repeats["candidate"][1].result.bursts = bursty
    compare_repeats(run)
    rows = {r.metric: r for r in run.comparison}
    itl = rows["median_itl_ms"]
    # not gated: undecided and secondary, so it neither passes nor fails the run
    assert itl.verdict == INCONCLUSIVE and not itl.primary and math.isnan(itl.p_regress)
    assert "not gated" in itl.reason and "candidate start 1 repeat 0" in itl.reason
    assert rows["median_tpot_ms"].primary and rows["median_tpot_ms"].reason is None
    from perfgate.decide import family

    rows_after, _ = family.apply(run.comparison, None, alpha=0.05)
    assert family.overall([r for r in rows_after if r.metric != "median_itl_ms"], None) == (
        family.overall(rows_after, None)
    )
    assert set(ITL_METRICS) >= {"median_itl_ms", "mean_itl_per_token_ms"}
