"""Client processes (``perfgate.measure.workers``): requests are shared out and come back as
one process reads them; a worker that dies fails its own requests, not the run, and no process
is left behind. Against the scripted server: a dying worker is a fault a real vLLM run cannot
produce on demand (tests/e2e/test_bench_real_vllm.py reads real vLLM through two workers)."""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp

from perfgate.documents.bench import Workload
from perfgate.measure.client import run_async
from perfgate.measure.loadgen import Target, run_load
from perfgate.measure.workers import StreamWorkers
from perfgate.measure.workload import Prompt
from tests.fake_server import FakeServer

PROMPTS = [Prompt(text=f"p{i} a b c", prompt_tokens=5, output_tokens=6) for i in range(6)]


def through_two_workers(prompts: list[Prompt], concurrency: int) -> tuple[list, StreamWorkers]:
    """``prompts`` sent to the scripted server at ``concurrency``, read by two workers; the
    records and the (stopped) workers."""

    async def go(url: str) -> tuple[list, StreamWorkers]:
        async with (
            StreamWorkers(2, concurrency, None) as workers,
            aiohttp.ClientSession() as session,
        ):
            records = await run_load(
                session,
                Target(url, "fake"),
                Workload(max_concurrency=concurrency),
                prompts,
                t0_ns=0,
                workers=workers,
            )
        return records, workers

    with FakeServer("ok") as url:
        return run_async(go(url))


def test_two_workers_share_the_requests_and_return_complete_records():
    records, workers = through_two_workers(PROMPTS, 4)
    # the first four (the cap) split two and two; later ones go where fewer are in flight
    assert sum(workers.sent) == len(PROMPTS) and min(workers.sent) >= 2
    assert [r.index for r in records] == list(range(len(PROMPTS)))
    for r in records:
        assert r.error is None, r.error
        assert r.chunk_tokens == (1,) * 6 and r.output_tokens == 6
        assert r.scheduled_ns <= r.send_ns < r.chunk_ns[0] <= r.chunk_ns[-1] <= r.end_ns
    for proc in workers._procs:  # stopped when the block was left, and reaped
        assert proc.exitcode == 0
    assert workers.longest_stall_ms >= 0 and len(workers._stalls) == 2  # both reported


def test_a_worker_that_dies_fails_its_requests_with_a_message_and_the_rest_complete():
    async def go(url: str) -> list:
        async with StreamWorkers(2, 4, None) as workers, aiohttp.ClientSession() as session:
            victim = workers._procs[0]

            async def kill_when_streaming() -> None:
                while workers._in_flight[0] == 0:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.3)  # its streams are open (the server stalls them)
                os.kill(victim.pid, signal.SIGKILL)

            killer = asyncio.create_task(kill_when_streaming())
            records = await run_load(
                session,
                Target(url, "fake"),
                Workload(max_concurrency=4, stall_timeout_s=30.0),
                PROMPTS[:4],
                t0_ns=0,
                workers=workers,
            )
            await killer
        return records

    with FakeServer("stall", stall_s=1.0) as url:
        records = run_async(go(url))
    died = [r for r in records if r.error is not None]
    assert len(died) == 2, [r.error for r in records]  # the victim's two of four
    for r in died:
        assert "client process 1 died" in r.error
    for r in records:
        if r.error is None:
            assert r.output_tokens == 6


def test_many_large_requests_at_once_pass_through_the_pipes_without_blocking():
    # 48 prompts of ~200 KB handed out at once: far more than a pipe holds (64 KiB), in both
    # directions at once; a blocking write on a pipe the event loop polls failed here
    # (BlockingIOError) at 384 streams in the fidelity benchmark
    big = [
        Prompt(text=f"p{i} " + "word " * 40_000, prompt_tokens=40_002, output_tokens=6)
        for i in range(48)
    ]

    records, _ = through_two_workers(big, 48)
    assert [r.error for r in records] == [None] * 48
    assert all(r.output_tokens == 6 for r in records)
