"""How exactly perfgate's streaming client timestamps tokens, against a stream whose write times
are known: perfgate, vLLM's benchmark client and a minimal socket reader, side by side.

An emitter process (its own core) serves ``/v1/completions`` as vLLM streams it (SSE, one
event per chunk with ``continuous_usage_stats``-style usage, a usage-only chunk, ``[DONE]``) on
a scripted schedule per stream (one event every ``--interval-ms``, optional jitter, tokens per
chunk, a stall), and records when it handed each event to the kernel. The readers run in this
process (another core), one after another, the same streams at each concurrency:

- ``perfgate``: ``perfgate.measure.client.send_request`` in a session from ``new_session``,
  inside ``perfgate.measure.loadgen.measured_window`` as a benchmark run uses it;
- ``vllm``: ``vllm.benchmarks.lib.endpoint_request_func.async_request_openai_completions``,
  the request function ``vllm bench serve`` times its requests with (its times: start + TTFT +
  the running sum of ITLs), in an aiohttp session as ``vllm bench serve`` opens one;
- ``floor``: an asyncio protocol that writes the HTTP request by hand and stamps each
  ``data_received``, counting token events by bytes (no HTTP library, no JSON).

Per event: error = read time - write time (one monotonic clock, two processes); per pair of
events in a stream, the gap error |read gap - write gap|. Printed per concurrency and reader:
median, p99 and max event error, p99 gap error, the p99's ratio to the floor's and its excess
over it (each the median over rounds of the same round's comparison), the client's longest
garbage-collection pass while streams were read; then the ceiling: the highest event rate at
which a reader's p99 gap error stays under 1 ms.

    .venv/bin/python benchmarks/fidelity.py [--markdown docs/fidelity-table.md]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing as mp
import os
import platform
import random
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perfgate.environment import cpu_model
from perfgate.measure.client import build_payload, new_session, run_async, send_request
from perfgate.measure.loadgen import measured_window
from perfgate.measure.workers import StreamWorkers

MODEL = "fidelity"


def readers_of(args: argparse.Namespace) -> list[str]:
    """perfgate in one process, perfgate with ``--client-processes`` workers (when asked),
    vLLM's request function (where vLLM is installed) and the floor."""
    out = ["perfgate"] + [f"perfgate x{n}" for n in args.client_processes if n > 1]
    try:
        import vllm.benchmarks.lib.endpoint_request_func  # noqa: F401  (before any timing)
    except ImportError:
        print("vllm is not installed: its reader is left out", file=sys.stderr)
    else:
        out.append("vllm")
    return [*out, "floor"]


# ----------------------------------------------------------------------------- the emitter


def _event(tokens: int, done: int, prompt: int, last: bool) -> bytes:
    body = {
        "id": "cmpl-fidelity",
        "object": "text_completion",
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "text": "x" * tokens,
                "logprobs": None,
                "finish_reason": "length" if last else None,
                "stop_reason": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "total_tokens": prompt + done,
            "completion_tokens": done,
        },
    }
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


class _Stream:
    """One response in flight: its schedule and the write time of each event."""

    def __init__(self, transport: asyncio.Transport, spec: dict[str, Any], start: int) -> None:
        self.transport = transport
        self.total = int(spec["max_tokens"])
        self.per_chunk = int(spec.get("tokens_per_chunk", 1))
        self.interval = int(float(spec.get("interval_ms", 2.0)) * 1e6)
        self.jitter = int(float(spec.get("jitter_ms", 0.0)) * 1e6)
        self.stall_after = int(spec.get("stall_after", 0))  # events before one stall
        self.stall = int(float(spec.get("stall_ms", 0.0)) * 1e6)
        self.rng = random.Random(spec.get("seed", 0))
        self.sid = str(spec["id"])
        self.done = 0
        self.events = 0
        self.due = start
        self.writes: list[int] = []

    def next_due(self) -> None:
        self.due += self.interval + (
            self.rng.randint(-self.jitter, self.jitter) if self.jitter else 0
        )
        if self.stall_after and self.events == self.stall_after:
            self.due += self.stall


class _Emitter(asyncio.Protocol):
    streams: list[_Stream]
    records: dict[str, list[int]]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        head, sep, body = self.buf.partition(b"\r\n\r\n")
        if not sep:
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(body) < length:
            return
        path = head.split(b" ")[1]
        if path.startswith(b"/records"):
            out = json.dumps(self.records).encode()
            self.records.clear()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(out)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + out
            )
            self.transport.close()
            return
        spec = json.loads(body[:length])
        spec.update(spec.pop("fidelity", {}))
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Connection: close\r\n\r\n"
        )
        self.streams.append(_Stream(self.transport, spec, time.perf_counter_ns()))


async def _emit(port_holder: Any, ready: Any) -> None:
    loop = asyncio.get_running_loop()
    streams: list[_Stream] = []
    records: dict[str, list[int]] = {}
    _Emitter.streams, _Emitter.records = streams, records
    server = await loop.create_server(_Emitter, "127.0.0.1", 0, backlog=1024)
    port_holder.value = server.sockets[0].getsockname()[1]
    ready.set()
    while True:  # the schedule: a busy loop on its own core, writing whatever is due
        now = time.perf_counter_ns()
        for s in [s for s in streams if s.due <= now]:
            tokens = min(s.per_chunk, s.total - s.done)
            s.done += tokens
            s.events += 1
            last = s.done >= s.total
            s.transport.write(_event(tokens, s.done, 1, last))
            s.writes.append(time.perf_counter_ns())
            if last:
                usage = {
                    "prompt_tokens": 1,
                    "total_tokens": 1 + s.done,
                    "completion_tokens": s.done,
                }
                tail = {"id": "cmpl-fidelity", "object": "text_completion", "model": MODEL}
                s.transport.write(
                    b"data: "
                    + json.dumps(tail | {"choices": [], "usage": usage}).encode()
                    + b"\n\ndata: [DONE]\n\n"
                )
                s.transport.close()
                records[s.sid] = s.writes
                streams.remove(s)
            else:
                s.next_due()
        await asyncio.sleep(0)


def emitter_main(port_holder: Any, ready: Any, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    asyncio.run(_emit(port_holder, ready))


# ----------------------------------------------------------------------------- the readers

Reader = Callable[[str, dict[str, Any]], Awaitable[list[int]]]


async def read_floor(base: str, payload: dict[str, Any]) -> list[int]:
    """Write the request by hand; stamp every ``data_received``; an event that carries
    ``"text"`` is a token event, complete at the read that brought its blank line."""
    host, port = base.removeprefix("http://").split(":")
    loop = asyncio.get_running_loop()
    times: list[int] = []
    finished = loop.create_future()

    class Floor(asyncio.Protocol):
        buf = b""

        def data_received(self, data: bytes) -> None:
            t = time.perf_counter_ns()
            self.buf += data
            *events, self.buf = self.buf.split(b"\n\n")
            times.extend(t for e in events if b'"text"' in e)

        def connection_lost(self, exc: Exception | None) -> None:
            if not finished.done():
                finished.set_result(None)

    body = json.dumps(payload).encode()
    transport, _ = await loop.create_connection(Floor, host, int(port))
    transport.write(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    await finished
    return times


def perfgate_reader(session: Any, workers: StreamWorkers | None = None) -> Reader:
    async def read(base: str, payload: dict[str, Any]) -> list[int]:
        if workers is None:
            _, result = await send_request(session, base, "completions", payload)
        else:
            _, result = await workers.send(base, "completions", payload)
        if result.error:
            raise RuntimeError(f"perfgate: {result.error}")
        return list(result.chunk_ns)

    return read


def vllm_reader(session: Any) -> Reader:
    from vllm.benchmarks.lib.endpoint_request_func import (
        RequestFuncInput,
        async_request_openai_completions,
    )

    async def read(base: str, payload: dict[str, Any]) -> list[int]:
        request = RequestFuncInput(
            prompt=payload["prompt"],
            api_url=base + "/v1/completions",
            prompt_len=1,
            output_len=payload["max_tokens"],
            model=MODEL,
            extra_body={"fidelity": payload["fidelity"]},
        )
        out = await async_request_openai_completions(request, session)
        if not out.success:
            raise RuntimeError(f"vllm: {out.error}")
        t = out.start_time + out.ttft
        times = [t]
        for gap in out.itl:
            t += gap
            times.append(t)
        return [int(x * 1e9) for x in times]

    return read


# ----------------------------------------------------------------------------- one run


class GcPauses:
    """The reader process's garbage-collection passes (gc.callbacks), as (start, end) ns."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, int]] = []
        self._t = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t = time.perf_counter_ns()
        else:
            self.pauses.append((self._t, time.perf_counter_ns()))

    def longest_ms(self, first: int, last: int) -> float:
        """The longest pass that overlapped the streams (first write to last read)."""
        inside = [b - a for a, b in self.pauses if b > first and a < last]
        return max(inside, default=0) / 1e6


async def one_run(
    reader: str,
    base: str,
    concurrency: int,
    events: int,
    spec: dict[str, Any],
    run_id: str,
    workers: dict[str, StreamWorkers],
) -> dict[str, Any]:
    """``concurrency`` streams at once through ``reader``; errors against the emitter's record.
    ``perfgate xN`` reads through N client processes (``workers``, started before any timing;
    their garbage collection is off, so the GC column is this process's)."""
    import aiohttp

    payloads = []
    for i in range(concurrency):
        p = build_payload("completions", MODEL, "p", events)
        p["fidelity"] = {**spec, "id": f"{run_id}-{i}", "seed": i}
        payloads.append(p)
    gc_pauses = GcPauses()
    gc.callbacks.append(gc_pauses)
    try:
        if reader.startswith("perfgate"):
            pool = workers.get(reader)
            async with new_session(concurrency) as session:
                with measured_window():
                    got = await asyncio.gather(
                        *(perfgate_reader(session, pool)(base, p) for p in payloads)
                    )
        elif reader == "vllm":
            # as vllm bench serve opens its session
            connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
            async with aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=6 * 3600)
            ) as session:
                got = await asyncio.gather(*(vllm_reader(session)(base, p) for p in payloads))
        else:
            got = await asyncio.gather(*(read_floor(base, p) for p in payloads))
    finally:
        gc.callbacks.remove(gc_pauses)
    async with aiohttp.ClientSession() as s, s.get(base + "/records") as r:
        records = json.loads(await r.read())
    errors, gap_errors, writes_all = [], [], []
    for i, times in enumerate(got):
        writes = records[f"{run_id}-{i}"]
        if len(times) != len(writes):
            raise RuntimeError(f"{reader}: {len(times)} events read, {len(writes)} written")
        w, t = np.array(writes, dtype=np.int64), np.array(times, dtype=np.int64)
        errors.append(t - w)
        gap_errors.append(np.abs(np.diff(t) - np.diff(w)))
        writes_all.append(w)
    err = np.concatenate(errors) / 1e6
    gap = np.concatenate(gap_errors) / 1e6
    w_all = np.concatenate(writes_all)
    span_s = (w_all.max() - w_all.min()) / 1e9
    last_read = max(max(times) for times in got)
    return {
        "reader": reader,
        "concurrency": concurrency,
        "events": int(err.size),
        "rate": err.size / span_s if span_s > 0 else float("nan"),
        "median_ms": float(np.median(err)),
        "p99_ms": float(np.percentile(err, 99)),
        "max_ms": float(err.max()),
        "gap_p99_ms": float(np.percentile(gap, 99)),
        "gc_max_ms": gc_pauses.longest_ms(int(w_all.min()), last_read),
    }


def summarize(rows: list[dict[str, Any]], floor: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one (reader, concurrency) pooled: medians of the figures, the worst max, and
    the median over rounds of the p99's ratio to the floor's in the same round (the host's
    noise moves both readers of a round together; it differs between rounds)."""
    out = dict(rows[0])
    for k in ("rate", "median_ms", "p99_ms", "gap_p99_ms"):
        out[k] = float(np.median([r[k] for r in rows]))
    pairs = list(zip(rows, floor, strict=True))
    out["p99_ratio"] = float(np.median([r["p99_ms"] / f["p99_ms"] for r, f in pairs]))
    out["p99_excess_ms"] = float(np.median([r["p99_ms"] - f["p99_ms"] for r, f in pairs]))
    out["max_ms"] = max(r["max_ms"] for r in rows)
    out["gc_max_ms"] = max(r["gc_max_ms"] for r in rows)
    out["events"] = sum(r["events"] for r in rows)
    return out


async def campaign(base: str, args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    readers = args.readers
    spec = {"interval_ms": args.interval_ms, "jitter_ms": args.jitter_ms}
    async with contextlib.AsyncExitStack() as stack:
        pools: dict[str, StreamWorkers] = {}
        for n in args.client_processes:
            if n > 1:
                pools[f"perfgate x{n}"] = await stack.enter_async_context(
                    StreamWorkers(n, None, None)
                )
        table: list[dict] = []
        run_no = 0
        for c in args.concurrency:
            events = max(20, args.events // c)
            runs: dict[str, list[dict]] = {r: [] for r in readers}
            for k in range(args.rounds):
                shift = k % len(readers)
                for reader in readers[shift:] + readers[:shift]:  # rotate the order
                    run_no += 1
                    runs[reader].append(
                        await one_run(reader, base, c, events, spec, f"r{run_no}", pools)
                    )
            for reader in readers:
                table.append(summarize(runs[reader], runs["floor"]))
            print(f"concurrency {c} done", file=sys.stderr, flush=True)
        ceiling: list[dict] = []
        for c in args.ceiling_concurrency:
            for reader in readers:
                run_no += 1
                events = max(20, args.events // c)
                ceiling.append(await one_run(reader, base, c, events, spec, f"r{run_no}", pools))
    return table, ceiling


def ceiling_of(rows: list[dict], reader: str, limit_ms: float = 1.0) -> dict | None:
    """The run at the most streams that ``reader`` read with p99 gap error under ``limit_ms``.
    Its offered rate (streams x events per stream per second) is the ceiling; the rate the
    emitter achieved in that run is shown beside it (near the top the emitter, one core, falls
    short of the offer, by a different amount in each run)."""
    ok = [r for r in rows if r["reader"] == reader and r["gap_p99_ms"] < limit_ms]
    return max(ok, key=lambda r: r["concurrency"], default=None)


def render(table: list[dict], ceiling: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
        f"({cpu_model()}), Python {platform.python_version()}, "
        f"emitter on one CPU, readers on the other {len(os.sched_getaffinity(0))} "
        f"({args.loop} event loop); one event every "
        f"{args.interval_ms:g} ms per stream"
        + (f" (+-{args.jitter_ms:g} ms)" if args.jitter_ms else "")
        + f", {args.rounds} rounds per concurrency, readers in rotating order.",
        "",
        "| concurrency | reader | events | events/s | median error (ms) | p99 error (ms) "
        "| max error (ms) | p99 gap error (ms) | p99 / floor's | p99 - floor's (ms) "
        "| longest GC pass in the streams (ms) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        lines.append(
            f"| {r['concurrency']} | {r['reader']} | {r['events']} | {r['rate']:.0f} "
            f"| {r['median_ms']:.3f} | {r['p99_ms']:.3f} | {r['max_ms']:.2f} "
            f"| {r['gap_p99_ms']:.3f} | {r['p99_ratio']:.2f} | {r['p99_excess_ms']:+.3f} "
            f"| {r['gc_max_ms']:.1f} |"
        )
    lines += [
        "",
        "Ceiling: the most streams (of "
        + ", ".join(str(c) for c in args.ceiling_concurrency)
        + f", one event every {args.interval_ms:g} ms each) read with p99 gap error under 1 ms; "
        "offered = streams x events per stream per second, achieved = what the emitter wrote "
        "in that run:",
        "",
        "| reader | streams | offered events/s | vs floor | achieved events/s |",
        "|---|---:|---:|---:|---:|",
    ]
    per_s = 1000 / args.interval_ms
    top = ceiling_of(ceiling, "floor")
    for reader in args.readers:
        c = ceiling_of(ceiling, reader)
        if c is None:
            lines.append(f"| {reader} | none | | | |")
            continue
        ratio = f"{c['concurrency'] / top['concurrency']:.2f}" if top else "n/a"
        lines.append(
            f"| {reader} | {c['concurrency']} | {c['concurrency'] * per_s:.0f} | {ratio} "
            f"| {c['rate']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64, 256])
    ap.add_argument(
        "--ceiling-concurrency", type=int, nargs="+", default=[16, 32, 64, 128, 192, 256, 384, 512]
    )
    ap.add_argument("--events", type=int, default=4000, help="events per run, over its streams")
    ap.add_argument("--interval-ms", type=float, default=2.0)
    ap.add_argument("--jitter-ms", type=float, default=0.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="the readers' event loop: uvloop, as perfgate runs (where installed), or asyncio's",
    )
    ap.add_argument(
        "--client-processes",
        type=int,
        nargs="*",
        default=[],
        metavar="N",
        help="also read through perfgate with N client processes (--client-processes N)",
    )
    ap.add_argument("--markdown", type=Path, help="also write the tables here")
    args = ap.parse_args()
    args.readers = readers_of(args)
    cpus = sorted(os.sched_getaffinity(0))
    two = len(cpus) >= 2
    ctx = mp.get_context("spawn")
    port, ready = ctx.Value("i", 0), ctx.Event()
    proc = ctx.Process(target=emitter_main, args=(port, ready, cpus[0] if two else None))
    proc.start()
    try:
        if not ready.wait(30):
            raise SystemExit("the emitter did not start")
        if two:
            os.sched_setaffinity(0, set(cpus[1:]))
        base = f"http://127.0.0.1:{port.value}"
        run = run_async if args.loop == "uvloop" else asyncio.run
        table, ceiling = run(campaign(base, args))
    finally:
        proc.kill()
        proc.join()
    text = render(table, ceiling, args)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    socket.setdefaulttimeout(60)
    main()
