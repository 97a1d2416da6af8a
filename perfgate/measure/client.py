"""One streaming request to an OpenAI-compatible server, timed chunk by chunk.

The client owns the wire format: it builds the request body for ``/v1/completions`` or
``/v1/chat/completions``, reads the server-sent-event stream, stamps every event with
``perf_counter_ns()`` the moment the read that completed its line returns, and turns the
stream into the raw facts a ``RequestRecord`` holds. It computes no statistics.

Token accounting: perfgate asks for ``stream_options = {include_usage, continuous_usage_stats}``,
so vLLM puts the cumulative ``usage.completion_tokens`` on every chunk. A chunk is
*token-carrying* when that count grew, and it carries exactly the growth. This is what keeps the
numbers right when the server coalesces many tokens into one chunk. When a server sends no
per-chunk usage, perfgate falls back to "a chunk with generated text", as ``vllm bench serve``
does, and leaves tokens-per-chunk unknown (``None``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from aiohttp.client_proto import ResponseHandler

from perfgate import environment
from perfgate.documents.bench import NO_DEADLINES, Deadlines, EndpointKind

try:  # 3-5x faster than json on vLLM's chunks, and parsing runs between two reads
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is a dependency; json stays a fallback
    from json import loads as _loads  # type: ignore[assignment]

Clock = Callable[[], int]

ENDPOINT_PATHS: dict[str, str] = {
    "completions": "/v1/completions",
    "chat": "/v1/chat/completions",
}


def build_payload(
    endpoint: EndpointKind,
    model: str,
    prompt: str,
    output_len: int,
    *,
    temperature: float = 0.0,
    extra_body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Request body that makes the server generate exactly ``output_len`` tokens, streamed."""
    body: dict[str, Any] = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        "ignore_eos": True,
        "temperature": temperature,
    }
    if endpoint == "completions":
        body["prompt"] = prompt
        body["max_tokens"] = output_len
    else:
        body["messages"] = [{"role": "user", "content": prompt}]
        body["max_completion_tokens"] = output_len
    if extra_body:
        body.update(extra_body)
    return body


# A chunk as parsed: (arrival ns, cumulative completion tokens or None, carried text). A tuple:
# one is made per streamed chunk, between two reads.
_Event = tuple[int, int | None, bool]


@dataclass
class StreamResult:
    """What one stream told us. Times are raw ``clock()`` values."""

    chunk_ns: list[int] = field(default_factory=list)
    chunk_tokens: list[int] | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    end_ns: int | None = None
    error: str | None = None


def _chunk_text(choice: dict[str, Any]) -> str:
    if "text" in choice:  # completions
        return choice.get("text") or ""
    delta = choice.get("delta") or {}
    parts = [delta.get(k) for k in ("content", "reasoning_content", "reasoning")]
    return "".join(p for p in parts if isinstance(p, str))


def _well_formed(obj: dict[str, Any]) -> bool:
    """An event whose parts have the types the OpenAI stream gives them: anything else fails
    its own request with the event shown, never the run."""
    choices = obj.get("choices")
    if choices is not None and not isinstance(choices, list):
        return False
    for choice in choices or ():
        if not isinstance(choice, dict):
            return False
        if not isinstance(choice.get("text"), str | None):
            return False
        delta = choice.get("delta")
        if delta is not None and not isinstance(delta, dict):
            return False
    usage = obj.get("usage")
    return usage is None or isinstance(usage, dict)


class StreamParser:
    """Feeds on SSE lines with their arrival times; ``finish()`` gives the ``StreamResult``."""

    def __init__(self) -> None:
        self._events: list[_Event] = []
        self._usage: dict[str, Any] | None = None
        self._done = False
        self._error: str | None = None
        self.token_events = 0  # events that carried generated text: the stream's progress

    @property
    def done(self) -> bool:
        return self._done or self._error is not None

    def feed(self, raw_line: bytes | str, t_ns: int) -> None:
        line = raw_line.encode() if isinstance(raw_line, str) else raw_line
        line = line.strip()
        if not line.startswith(b"data:"):
            return  # blank separators, SSE comments, event:/id: fields
        data = line[5:].strip()
        if data == b"[DONE]":
            self._done = True
            return
        try:
            obj = _loads(data)
        except ValueError:  # not JSON, or not UTF-8 (orjson's JSONDecodeError is one too)
            self._error = f"malformed stream event: {_show(data)}"
            return
        if not isinstance(obj, dict) or not _well_formed(obj):
            self._error = f"unexpected stream event: {_show(data)}"
            return
        if "error" in obj:
            err = obj["error"]
            msg = err.get("message", err) if isinstance(err, dict) else err
            self._error = f"server error mid-stream: {msg}"
            return
        usage = obj.get("usage")
        completion_tokens = None
        if isinstance(usage, dict):
            self._usage = usage
            ct = usage.get("completion_tokens")
            completion_tokens = ct if isinstance(ct, int) else None
        choices = obj.get("choices")
        if choices:
            choice = choices[0]
            text = choice.get("text")  # completions; chat puts it in a delta
            has_text = bool(text) if text is not None else bool(_chunk_text(choice))
            self._events.append((t_ns, completion_tokens, has_text))
            self.token_events += has_text
        elif completion_tokens is not None and self._events:
            # A usage-only chunk (the final one) that reports tokens no choice chunk announced:
            # they arrived with the last chunk we saw.
            last = self._events[-1][1]
            if last is not None and completion_tokens > last:
                self._events.append((t_ns, completion_tokens, False))

    def fail(self, message: str) -> None:
        self._error = message

    def finish(self, end_ns: int) -> StreamResult:
        result = StreamResult(end_ns=end_ns)
        events = self._events
        per_chunk_usage = bool(events) and all(ct is not None for _, ct, _ in events)
        if per_chunk_usage:
            tokens: list[int] = []
            previous = 0
            for t_ns, ct, _ in events:
                assert ct is not None  # per_chunk_usage guarantees it
                grew = ct - previous
                if grew > 0:
                    result.chunk_ns.append(t_ns)
                    tokens.append(grew)
                previous = max(previous, ct)
            result.chunk_tokens = tokens
        else:
            result.chunk_ns = [t_ns for t_ns, _, has_text in events if has_text]
        if self._usage is not None:
            pt = self._usage.get("prompt_tokens")
            ct = self._usage.get("completion_tokens")
            result.prompt_tokens = pt if isinstance(pt, int) else None
            result.output_tokens = ct if isinstance(ct, int) else None
        if self._error is not None:
            result.error = self._error
        elif not self._done:
            result.error = "stream ended before [DONE]"
        elif not result.chunk_ns:
            result.error = "stream carried no generated tokens"
        return result


class Arrivals:
    """When each piece of a response body reached perfgate: stamped by the connection's
    protocol (``StampingHandler``) the moment the socket delivered it, before aiohttp parses it
    and before any task runs. When many streams' bytes arrive at once, the event loop resumes
    their readers one after another, so a stamp taken by the reader carries the parsing of
    every stream resumed before it (at 64 streams ~1 ms, docs/fidelity.md). ``at(pos)``: when
    the body byte at ``pos`` arrived; None for bytes that arrived before the watch began."""

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self._content = content
        self._start = content.total_bytes
        self._ends: list[int] = []  # body bytes received after each arrival
        self._times: list[int] = []
        self._next = 0

    def record(self, body_bytes: int, t_ns: int) -> None:
        if body_bytes > (self._ends[-1] if self._ends else self._start):
            self._ends.append(body_bytes)
            self._times.append(t_ns)

    def __enter__(self) -> Arrivals:
        _WATCHED[id(self._content)] = self
        return self

    def __exit__(self, *exc: object) -> None:
        _WATCHED.pop(id(self._content), None)

    def at(self, pos: int) -> int | None:
        """Positions are asked in increasing order (lines in stream order)."""
        if pos < self._start:
            return None
        ends = self._ends
        while self._next < len(ends) and ends[self._next] <= pos:
            self._next += 1
        return self._times[self._next] if self._next < len(ends) else None


_WATCHED: dict[int, Arrivals] = {}  # id(response body stream) -> its arrivals


class StampingHandler(ResponseHandler):
    """aiohttp's connection protocol, stamping every read of the socket the moment it is
    delivered and parsing it one turn of the event loop later: when many connections are
    readable at once, the loop delivers all their reads (a stamp and an append each, ~1 us)
    before any is parsed (~10 us each), so the last connection's stamp does not wait for the
    others' parsing. Tells the response body's ``Arrivals`` how many body bytes each read
    brought; reads are parsed in order, and before the connection's end is handled."""

    _backlog: list[tuple[int, bytes]] | None = None

    def data_received(self, data: bytes) -> None:
        t = time.perf_counter_ns()
        if self._backlog is None:
            self._backlog = []
            self._loop.call_soon(self._parse_backlog)
        self._backlog.append((t, data))

    def _parse_backlog(self) -> None:
        backlog, self._backlog = self._backlog, None
        for t, data in backlog or ():
            super().data_received(data)
            payload = self._payload
            if payload is not None and (watch := _WATCHED.get(id(payload))) is not None:
                watch.record(payload.total_bytes, t)

    def eof_received(self) -> None:
        self._parse_backlog()
        super().eof_received()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._parse_backlog()
        super().connection_lost(exc)


def stamp_arrivals(connector: aiohttp.TCPConnector) -> bool:
    """Make ``connector``'s connections stamp arrivals (``StampingHandler``); False where this
    aiohttp builds its protocols otherwise (the readers' stamps are used then)."""
    factory = getattr(connector, "_factory", None)
    if not isinstance(factory, functools.partial) or factory.func is not ResponseHandler:
        return False
    stamping = functools.partial(StampingHandler, *factory.args, **factory.keywords)
    connector._factory = stamping  # type: ignore[assignment]
    return True


async def consume_stream(
    blocks: AsyncIterator[bytes],
    clock: Clock = time.perf_counter_ns,
    stall_timeout_s: float | None = None,
    arrivals: Arrivals | None = None,
    parser: StreamParser | None = None,
    on_first_token: Callable[[], None] | None = None,
) -> StreamResult:
    """Read the SSE stream as it arrives, one block per read of the connection (a block may
    hold part of a line or many lines), until ``[DONE]``, an error event, or the end of the
    stream. A line's time is when the byte that completed it arrived (``arrivals``, from the
    connection's callback), else when the read that returned it did: a read is stamped once,
    before any of it is parsed, so parsing one line never delays the stamp of the next (vLLM's
    client stamps each message after parsing the ones before it). A connection lost
    mid-stream keeps the chunks that arrived, with the error. ``parser``: the caller's, so
    what arrived survives a deadline that cancels this read; ``on_first_token``: called once,
    when the first token arrives."""
    parser = parser if parser is not None else StreamParser()
    pending = b""
    consumed = 0  # body bytes before ``pending``
    t = 0
    # The stall timeout counts from the last token, not the last byte: SSE keepalive comments
    # or a byte every few hundred ms would otherwise keep a stream that produces nothing alive.
    stall_ns = None if not stall_timeout_s else int(stall_timeout_s * 1e9)
    progress, progress_ns = 0, None  # tokens seen, and when (from the first read on)
    try:
        async for block in blocks:
            if not pending and not block.strip():
                consumed += len(block)
                continue  # event separators carry nothing; do not stamp them
            t = clock()
            *complete, pending = (pending + block).split(b"\n")
            for line in complete:
                end = consumed + len(line)  # the position of its newline
                consumed = end + 1
                if len(line) > 1:  # not an event separator ("" or a lone "\r")
                    arrived = arrivals.at(end) if arrivals is not None else None
                    parser.feed(line, t if arrived is None else arrived)
                    if parser.done:
                        break
            if parser.done:
                break
            if progress_ns is None or parser.token_events > progress:
                if progress == 0 and parser.token_events and on_first_token is not None:
                    on_first_token()
                progress, progress_ns = parser.token_events, t
            elif stall_ns is not None and t - progress_ns > stall_ns:
                parser.fail(
                    f"no token for {stall_timeout_s:g} s while the server kept the stream open "
                    "(keepalives or stray bytes; the stall timeout: --stall-timeout, or "
                    "workload.stall_timeout_s in a scenario)"
                )
                break
        else:
            if pending.strip():  # a last line without its newline
                parser.feed(pending, t)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        parser.fail(describe_failure(exc, stall_timeout_s))
    return parser.finish(clock())


def _show(data: bytes) -> str:
    return repr(data[:200].decode("utf-8", "replace"))


def describe_failure(exc: BaseException, stall_timeout_s: float | None) -> str:
    """What a request's exception means, in words, with its type for the record."""
    if isinstance(exc, TimeoutError):
        if stall_timeout_s:
            return (
                f"the server sent nothing for {stall_timeout_s:g} s (the stall timeout: "
                "--stall-timeout, or workload.stall_timeout_s in a scenario)"
            )
        return "the request timed out"
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return f"the server closed the connection mid-stream ({detail})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to the server ({detail})"
    return detail


async def send_request(
    session: aiohttp.ClientSession,
    base_url: str,
    endpoint: EndpointKind,
    payload: dict[str, Any],
    clock: Clock = time.perf_counter_ns,
    deadlines: Deadlines = NO_DEADLINES,
) -> tuple[int, StreamResult]:
    """POST one streaming request. Returns (send time, result); never raises for server errors.
    A server that sends nothing for the stall timeout (before the first token or between
    two), or misses a deadline (first token, whole request), ends the request with an error
    saying which; the chunks that arrived are kept."""
    url = base_url.rstrip("/") + ENDPOINT_PATHS[endpoint]
    stall = deadlines.stall_s
    timeout = aiohttp.ClientTimeout(total=session.timeout.total, sock_read=stall)
    parser = StreamParser()
    loop = asyncio.get_running_loop()
    sent_at = loop.time()
    ends = {
        "first": None if deadlines.ttft_s is None else sent_at + deadlines.ttft_s,
        "total": None if deadlines.total_s is None else sent_at + deadlines.total_s,
    }
    missed = [k for k in ("first", "total") if ends[k] is not None]
    missed.sort(key=lambda k: ends[k] or 0.0)
    send_ns = clock()
    try:
        async with asyncio.timeout_at(ends[missed[0]] if missed else None) as limit:

            def first_token() -> None:  # the first-token deadline is met: only the total's left
                if "first" in missed:
                    missed.remove("first")
                    limit.reschedule(ends["total"])

            async with session.post(url, json=payload, timeout=timeout) as response:
                if response.status != 200:
                    body = (await response.text())[:500]
                    return send_ns, StreamResult(
                        end_ns=clock(), error=f"HTTP {response.status}: {body.strip()}"
                    )
                with Arrivals(response.content) as arrivals:
                    return send_ns, await consume_stream(
                        response.content.iter_any(), clock, stall, arrivals, parser, first_token
                    )
    except TimeoutError as exc:
        if not missed or not limit.expired():  # aiohttp's own (the stall timeout)
            return send_ns, StreamResult(end_ns=clock(), error=describe_failure(exc, stall))
        parser.fail(_deadline_message(missed[0], deadlines))
        return send_ns, parser.finish(clock())
    except (aiohttp.ClientError, ValueError) as exc:
        return send_ns, StreamResult(end_ns=clock(), error=describe_failure(exc, stall))


def _deadline_message(which: str, deadlines: Deadlines) -> str:
    if which == "first":
        return (
            f"no first token within {deadlines.ttft_s:g} s of the send (the first-token "
            "deadline: --ttft-timeout, or workload.ttft_timeout_s in a scenario)"
        )
    return (
        f"not finished within {deadlines.total_s:g} s of the send (the request deadline: "
        "--request-timeout, or workload.request_timeout_s in a scenario)"
    )


REQUEST_TIMEOUT_S = 6 * 3600
T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the client's event loop (``environment.uvloop_factory``)."""
    factory = environment.uvloop_factory()
    if factory is None:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def new_session(max_concurrency: int | None, api_key: str | None = None) -> aiohttp.ClientSession:
    """One HTTP session for a run; ``api_key`` (a server started with ``--api-key``) goes on
    every request as a bearer token, as OpenAI clients send it."""
    connector = aiohttp.TCPConnector(limit=max_concurrency or 0, force_close=False)
    stamp_arrivals(connector)  # times from the socket's reads, not from the readers' turns
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        read_bufsize=1 << 20,
        headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
    )
