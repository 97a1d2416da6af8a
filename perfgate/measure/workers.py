"""Several client processes reading the streams of one run (``--client-processes N``).

One Python process parses every stream's events one after another (aiohttp's HTTP parser, the
SSE split, orjson: ~10 us an event); when many streams' events arrive together, the reads that
arrive during that parsing wait for it, and at 64 streams of a token every 2 ms one process is
saturated (docs/fidelity.md). With N worker processes the streams are shared out: this process
keeps the schedule (arrivals, the concurrency cap, queue waits, progress, records) and each
worker sends its requests and reads their streams on its own event loop, stamping with the same
clock (``time.perf_counter_ns``: CLOCK_MONOTONIC, one clock for every process of the host).
A request goes to the worker with the fewest in flight; what comes back is the stream's
``StreamResult`` and its send time, exactly as ``send_request`` returns them in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from typing import Any

from perfgate.measure.client import EndpointKind, StreamResult, send_request

START_TIMEOUT_S = 120.0  # a worker imports aiohttp and perfgate's client: seconds, not minutes
STOP_TIMEOUT_S = 10.0


class WorkerError(Exception):
    """A client process did not start, or died while streams were read."""


def _worker_main(conn: Connection, max_concurrency: int | None, api_key: str | None) -> None:
    from perfgate.measure.loadgen import run_async

    gc.disable()  # as measured_window does in one process: no collection pass between reads
    run_async(_serve(conn, max_concurrency, api_key))


async def _serve(conn: Connection, max_concurrency: int | None, api_key: str | None) -> None:
    from perfgate.measure.bursts import LoopMonitor
    from perfgate.measure.loadgen import new_session

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    running: set[asyncio.Task[None]] = set()
    async with new_session(max_concurrency, api_key) as session, LoopMonitor() as monitor:

        async def one(job: int, url: str, endpoint: EndpointKind, payload: Any, stall: Any) -> None:
            send_ns, result = await send_request(
                session, url, endpoint, payload, stall_timeout_s=stall
            )
            conn.send((job, send_ns, result))

        def on_message() -> None:
            while conn.poll():
                try:
                    msg = conn.recv()
                except EOFError:  # the scheduling process went away: stop reading
                    msg = None
                if msg is None:
                    loop.remove_reader(conn.fileno())
                    stop.set()
                    return
                if msg == "reset":  # the measured requests begin: forget the warmups' stalls
                    monitor.reset()
                    continue
                task = loop.create_task(one(*msg))
                running.add(task)
                task.add_done_callback(running.discard)

        loop.add_reader(conn.fileno(), on_message)
        conn.send("ready")
        await stop.wait()
        for task in list(running):  # stopped early (an error upstream): abandon the streams
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    conn.send(("stopped", monitor.longest_ms))


class StreamWorkers:
    """``async with StreamWorkers(n, ...) as workers:`` then ``await workers.send(...)`` in
    place of ``send_request``. Leaving the block stops every worker (their open streams are
    closed, so the server aborts them); a worker that dies fails its requests with a message."""

    def __init__(self, processes: int, max_concurrency: int | None, api_key: str | None) -> None:
        self.processes = processes
        self._max_concurrency = max_concurrency
        self._api_key = api_key
        self._procs: list[Any] = []
        self._conns: list[Connection] = []
        self._in_flight: list[int] = []
        self.sent: list[int] = []  # requests handed to each worker
        self._waiting: dict[int, tuple[int, asyncio.Future[tuple[int, StreamResult]]]] = {}
        self._next_job = 0
        self._stalls: list[float] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> StreamWorkers:
        self._loop = asyncio.get_running_loop()
        ctx = mp.get_context("spawn")  # no fork of a process with a running event loop
        try:
            for _ in range(self.processes):
                ours, theirs = ctx.Pipe()
                proc = ctx.Process(
                    target=_worker_main,
                    args=(theirs, self._max_concurrency, self._api_key),
                    name="perfgate-client",
                    daemon=True,
                )
                proc.start()
                theirs.close()
                self._procs.append(proc)
                self._conns.append(ours)
                self._in_flight.append(0)
                self.sent.append(0)
            for i, conn in enumerate(self._conns):
                if not await self._loop.run_in_executor(None, conn.poll, START_TIMEOUT_S):
                    raise WorkerError(
                        f"client process {i + 1} of {self.processes} did not start within "
                        f"{START_TIMEOUT_S:.0f} s (--client-processes)"
                    )
                if conn.recv() != "ready":
                    raise WorkerError(f"client process {i + 1} answered out of turn")
                self._loop.add_reader(conn.fileno(), self._on_result, i)
        except BaseException:
            self._kill()
            raise
        return self

    def _on_result(self, worker: int) -> None:
        conn = self._conns[worker]
        try:
            while conn.poll():
                msg = conn.recv()
                if isinstance(msg, tuple) and msg[0] == "stopped":
                    self._stalls.append(msg[1])
                    continue
                job, send_ns, result = msg
                _, future = self._waiting.pop(job)
                self._in_flight[worker] -= 1
                if not future.done():
                    future.set_result((send_ns, result))
        except (EOFError, OSError):
            assert self._loop is not None
            self._loop.remove_reader(conn.fileno())
            code = self._procs[worker].exitcode
            for job, (w, future) in list(self._waiting.items()):
                if w == worker:
                    del self._waiting[job]
                    if not future.done():
                        future.set_exception(
                            WorkerError(f"client process {worker + 1} died (exit code {code})")
                        )

    async def send(
        self,
        base_url: str,
        endpoint: EndpointKind,
        payload: dict[str, Any],
        stall_timeout_s: float | None = None,
    ) -> tuple[int, StreamResult]:
        """As ``send_request``, in the worker with the fewest requests in flight. A worker that
        died fails the request (an error in its record), as a lost connection would."""
        assert self._loop is not None, "use StreamWorkers in `async with`"
        worker = min(range(self.processes), key=self._in_flight.__getitem__)
        job = self._next_job
        self._next_job += 1
        future: asyncio.Future[tuple[int, StreamResult]] = self._loop.create_future()
        self._waiting[job] = (worker, future)
        self._in_flight[worker] += 1
        self.sent[worker] += 1
        handed_ns = time.perf_counter_ns()
        try:
            self._conns[worker].send((job, base_url, endpoint, payload, stall_timeout_s))
            return await future
        except (WorkerError, OSError) as exc:
            self._waiting.pop(job, None)
            message = (
                str(exc)
                if isinstance(exc, WorkerError)
                else (f"client process {worker + 1} is gone ({type(exc).__name__}: {exc})")
            )
            return handed_ns, StreamResult(end_ns=time.perf_counter_ns(), error=message)

    def reset_monitors(self) -> None:
        """The measured requests begin: the workers' loop stalls count from here."""
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send("reset")

    @property
    def longest_stall_ms(self) -> float:
        """The longest stall of a worker's event loop (``LoopMonitor``), once they stopped."""
        return max(self._stalls, default=0.0)

    async def __aexit__(self, *exc: object) -> None:
        assert self._loop is not None
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        deadline = self._loop.time() + STOP_TIMEOUT_S
        while len(self._stalls) < self.processes and any(p.is_alive() for p in self._procs):
            if self._loop.time() > deadline:
                break
            await asyncio.sleep(0.01)
        self._kill()

    def _kill(self) -> None:
        for i, conn in enumerate(self._conns):
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(conn.fileno())
            with contextlib.suppress(OSError):
                conn.close()
            proc = self._procs[i]
            proc.join(timeout=1.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for _, future in self._waiting.values():
            if not future.done():
                future.cancel()
        self._waiting.clear()
