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
import gc
import multiprocessing as mp
import os
import pickle
import signal
import struct
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from perfgate.documents.bench import NO_DEADLINES, Deadlines, EndpointKind
from perfgate.measure.bursts import LoopMonitor
from perfgate.measure.client import StreamResult, new_session, run_async, send_request

START_TIMEOUT_S = 120.0  # a worker imports aiohttp and perfgate's client: seconds, not minutes
STOP_TIMEOUT_S = 10.0
_LENGTH = struct.Struct("!I")


class WorkerError(Exception):
    """A client process did not start, or died while streams were read."""


class _Frames(asyncio.Protocol):
    """Reads length-prefixed pickled messages from a pipe; ``on_message`` gets each, ``on_end``
    is called once when the other end closes. The pipes between the processes are read and
    written by the event loop (non-blocking, buffered): a blocking write on a pipe the loop also
    polls fails when the pipe is full, and two processes each blocked writing to the other would
    wait forever."""

    def __init__(self, on_message: Callable[[Any], None], on_end: Callable[[], None]) -> None:
        self._buf = bytearray()
        self._on_message = on_message
        self._on_end = on_end

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while len(self._buf) >= _LENGTH.size:
            (n,) = _LENGTH.unpack_from(self._buf)
            if len(self._buf) < _LENGTH.size + n:
                return
            message = pickle.loads(self._buf[_LENGTH.size : _LENGTH.size + n])
            del self._buf[: _LENGTH.size + n]
            self._on_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_end()


def _frame(message: Any) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


async def _pipe_ends(
    reader: Connection,
    writer: Connection,
    on_message: Callable[[Any], None],
    on_end: Callable[[], None],
) -> tuple[asyncio.ReadTransport, asyncio.WriteTransport]:
    """The event loop's transports over two one-way pipes (on file descriptors of their own:
    the connections are closed)."""
    loop = asyncio.get_running_loop()
    rfd, wfd = os.dup(reader.fileno()), os.dup(writer.fileno())
    reader.close()
    writer.close()
    rt, _ = await loop.connect_read_pipe(
        lambda: _Frames(on_message, on_end), os.fdopen(rfd, "rb", 0)
    )
    wt, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(wfd, "wb", 0))
    return rt, wt


def _worker_main(
    jobs: Connection, results: Connection, max_concurrency: int | None, api_key: str | None
) -> None:
    # Ctrl-C reaches the whole process group: perfgate's own process stops the workers (and
    # their streams) as it stops everything else, so a worker does not die on it by itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.disable()  # as measured_window does in one process: no collection pass between reads
    run_async(_serve(jobs, results, max_concurrency, api_key))


async def _serve(
    jobs: Connection, results: Connection, max_concurrency: int | None, api_key: str | None
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    running: set[asyncio.Task[None]] = set()
    async with new_session(max_concurrency, api_key) as session, LoopMonitor() as monitor:

        async def one(
            job: int, url: str, endpoint: EndpointKind, payload: Any, deadlines: Deadlines
        ) -> None:
            send_ns, result = await send_request(
                session, url, endpoint, payload, deadlines=deadlines
            )
            out.write(_frame((job, send_ns, result)))

        def on_message(msg: Any) -> None:
            if msg is None:
                stop.set()
            elif msg == "reset":  # the measured requests begin: forget the warmups' stalls
                monitor.reset()
            else:
                task = loop.create_task(one(*msg))
                running.add(task)
                task.add_done_callback(running.discard)

        # the scheduling process went away (its end of the pipe closed): stop reading
        _, out = await _pipe_ends(jobs, results, on_message, stop.set)
        out.write(_frame("ready"))
        await stop.wait()
        for task in list(running):  # stopped early (an error upstream): abandon the streams
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    out.write(_frame(("stopped", monitor.longest_ms)))
    while out.get_write_buffer_size() and not out.is_closing():
        await asyncio.sleep(0.001)
    out.close()


class StreamWorkers:
    """``async with StreamWorkers(n, ...) as workers:`` then ``await workers.send(...)`` in
    place of ``send_request``. Leaving the block stops every worker (their open streams are
    closed, so the server aborts them); a worker that dies fails its requests with a message."""

    def __init__(self, processes: int, max_concurrency: int | None, api_key: str | None) -> None:
        self.processes = processes
        self._max_concurrency = max_concurrency
        self._api_key = api_key
        self._procs: list[Any] = []
        self._writers: list[asyncio.WriteTransport] = []
        self._readers: list[asyncio.ReadTransport] = []
        self._ready: list[asyncio.Future[None]] = []
        self._ended: list[bool] = []
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
            for i in range(self.processes):
                job_r, job_w = ctx.Pipe(duplex=False)
                res_r, res_w = ctx.Pipe(duplex=False)
                proc = ctx.Process(
                    target=_worker_main,
                    args=(job_r, res_w, self._max_concurrency, self._api_key),
                    name="perfgate-client",
                    daemon=True,
                )
                proc.start()
                job_r.close()
                res_w.close()
                self._procs.append(proc)
                self._ready.append(self._loop.create_future())
                self._ended.append(False)
                self._in_flight.append(0)
                self.sent.append(0)
                reader, writer = await _pipe_ends(
                    res_r,
                    job_w,
                    lambda msg, i=i: self._on_message(i, msg),  # type: ignore[misc]
                    lambda i=i: self._on_end(i),  # type: ignore[misc]
                )
                self._readers.append(reader)
                self._writers.append(writer)
            for i, ready in enumerate(self._ready):
                try:
                    await asyncio.wait_for(asyncio.shield(ready), START_TIMEOUT_S)
                except TimeoutError:
                    raise WorkerError(
                        f"client process {i + 1} of {self.processes} did not start within "
                        f"{START_TIMEOUT_S:.0f} s (--client-processes)"
                    ) from None
        except BaseException:
            self._kill()
            raise
        return self

    def _on_message(self, worker: int, msg: Any) -> None:
        if msg == "ready":
            if not self._ready[worker].done():
                self._ready[worker].set_result(None)
        elif isinstance(msg, tuple) and msg[0] == "stopped":
            self._stalls.append(msg[1])
        else:
            job, send_ns, result = msg
            _, future = self._waiting.pop(job)
            self._in_flight[worker] -= 1
            if not future.done():
                future.set_result((send_ns, result))

    def _on_end(self, worker: int) -> None:
        """The worker's end of its results pipe closed: it stopped, or died."""
        self._ended[worker] = True
        code = self._procs[worker].exitcode
        error = WorkerError(
            f"client process {worker + 1} died"
            + (f" (exit code {code})" if code is not None else "")
        )
        if not self._ready[worker].done():
            self._ready[worker].set_exception(error)
        for job, (w, future) in list(self._waiting.items()):
            if w == worker:
                del self._waiting[job]
                if not future.done():
                    future.set_exception(error)

    async def send(
        self,
        base_url: str,
        endpoint: EndpointKind,
        payload: dict[str, Any],
        deadlines: Deadlines = NO_DEADLINES,
    ) -> tuple[int, StreamResult]:
        """As ``send_request``, in the worker with the fewest requests in flight. A worker that
        died fails the request (an error in its record), as a lost connection would."""
        assert self._loop is not None, "use StreamWorkers in `async with`"
        alive = [w for w in range(self.processes) if not self._ended[w]] or [0]
        worker = min(alive, key=self._in_flight.__getitem__)
        job = self._next_job
        self._next_job += 1
        future: asyncio.Future[tuple[int, StreamResult]] = self._loop.create_future()
        self._waiting[job] = (worker, future)
        self._in_flight[worker] += 1
        self.sent[worker] += 1
        handed_ns = time.perf_counter_ns()
        try:
            if self._ended[worker] or self._writers[worker].is_closing():
                raise WorkerError(f"client process {worker + 1} is gone")
            self._writers[worker].write(_frame((job, base_url, endpoint, payload, deadlines)))
            return await future
        except WorkerError as exc:
            self._waiting.pop(job, None)
            return handed_ns, StreamResult(end_ns=time.perf_counter_ns(), error=str(exc))

    def reset_monitors(self) -> None:
        """The measured requests begin: the workers' loop stalls count from here."""
        for writer in self._writers:
            if not writer.is_closing():
                writer.write(_frame("reset"))

    @property
    def longest_stall_ms(self) -> float:
        """The longest stall of a worker's event loop (``LoopMonitor``), once they stopped."""
        return max(self._stalls, default=0.0)

    async def __aexit__(self, *exc: object) -> None:
        assert self._loop is not None
        for writer in self._writers:
            if not writer.is_closing():
                writer.write(_frame(None))
        deadline = self._loop.time() + STOP_TIMEOUT_S
        while not all(self._ended) and self._loop.time() < deadline:
            await asyncio.sleep(0.01)
        self._kill()

    def _kill(self) -> None:
        for transport in (*self._writers, *self._readers):
            transport.close()
        for proc in self._procs:
            proc.join(timeout=1.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for _, future in self._waiting.values():
            if not future.done():
                future.cancel()
        self._waiting.clear()
