"""One streaming request to an OpenAI-compatible server, timed chunk by chunk.

The client owns the wire format: it builds the request body for ``/v1/completions`` or
``/v1/chat/completions``, reads the server-sent-event stream, stamps every event with
``perf_counter_ns()`` the moment its line arrives, and turns the stream into the raw facts a
``RequestRecord`` holds. It computes no statistics.

Token accounting: perfgate asks for ``stream_options = {include_usage, continuous_usage_stats}``,
so vLLM puts the cumulative ``usage.completion_tokens`` on every chunk. A chunk is
*token-carrying* when that count grew, and it carries exactly the growth. This is what keeps the
numbers right when the server coalesces many tokens into one chunk. When a server sends no
per-chunk usage, perfgate falls back to "a chunk with generated text", as ``vllm bench serve``
does, and leaves tokens-per-chunk unknown (``None``).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

EndpointKind = Literal["completions", "chat"]
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


@dataclass
class _Event:
    t_ns: int
    completion_tokens: int | None
    has_text: bool


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


class StreamParser:
    """Feeds on SSE lines with their arrival times; ``finish()`` gives the ``StreamResult``."""

    def __init__(self) -> None:
        self._events: list[_Event] = []
        self._usage: dict[str, Any] | None = None
        self._done = False
        self._error: str | None = None

    @property
    def done(self) -> bool:
        return self._done or self._error is not None

    def feed(self, raw_line: bytes | str, t_ns: int) -> None:
        line = raw_line.decode("utf-8", "replace") if isinstance(raw_line, bytes) else raw_line
        line = line.strip()
        if not line or line.startswith(":") or not line.startswith("data:"):
            return  # blank separators, SSE comments, event:/id: fields
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            self._done = True
            return
        try:
            obj = json.loads(data)
        except json.JSONDecodeError:
            self._error = f"malformed stream event: {data[:200]!r}"
            return
        if not isinstance(obj, dict):
            self._error = f"unexpected stream event: {data[:200]!r}"
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
        choices = obj.get("choices") or []
        if choices:
            self._events.append(_Event(t_ns, completion_tokens, bool(_chunk_text(choices[0]))))
        elif completion_tokens is not None and self._events:
            # A usage-only chunk (the final one) that reports tokens no choice chunk announced:
            # they arrived with the last chunk we saw.
            last = self._events[-1]
            if last.completion_tokens is not None and completion_tokens > last.completion_tokens:
                self._events.append(_Event(t_ns, completion_tokens, False))

    def fail(self, message: str) -> None:
        self._error = message

    def finish(self, end_ns: int) -> StreamResult:
        result = StreamResult(end_ns=end_ns)
        events = self._events
        per_chunk_usage = bool(events) and all(e.completion_tokens is not None for e in events)
        if per_chunk_usage:
            tokens: list[int] = []
            previous = 0
            for e in events:
                assert e.completion_tokens is not None  # per_chunk_usage guarantees it
                grew = e.completion_tokens - previous
                if grew > 0:
                    result.chunk_ns.append(e.t_ns)
                    tokens.append(grew)
                previous = max(previous, e.completion_tokens)
            result.chunk_tokens = tokens
        else:
            result.chunk_ns = [e.t_ns for e in events if e.has_text]
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


async def consume_stream(
    lines: AsyncIterator[bytes],
    clock: Clock = time.perf_counter_ns,
    stall_timeout_s: float | None = None,
) -> StreamResult:
    """Read SSE lines until ``[DONE]``, an error event, or the end of the stream. A connection
    lost mid-stream keeps the chunks that arrived, with the error."""
    parser = StreamParser()
    try:
        async for line in lines:
            if not line.strip():
                continue  # event separators carry nothing; do not stamp them
            parser.feed(line, clock())
            if parser.done:
                break
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        parser.fail(describe_failure(exc, stall_timeout_s))
    return parser.finish(clock())


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
    stall_timeout_s: float | None = None,
) -> tuple[int, StreamResult]:
    """POST one streaming request. Returns (send time, result); never raises for server errors.
    A server that sends nothing for ``stall_timeout_s`` (before the first token or between
    two) ends the request with an error saying so."""
    url = base_url.rstrip("/") + ENDPOINT_PATHS[endpoint]
    timeout = aiohttp.ClientTimeout(total=session.timeout.total, sock_read=stall_timeout_s)
    send_ns = clock()
    try:
        async with session.post(url, json=payload, timeout=timeout) as response:
            if response.status != 200:
                body = (await response.text())[:500]
                return send_ns, StreamResult(
                    end_ns=clock(), error=f"HTTP {response.status}: {body.strip()}"
                )
            return send_ns, await consume_stream(_lines(response), clock, stall_timeout_s)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return send_ns, StreamResult(end_ns=clock(), error=describe_failure(exc, stall_timeout_s))


async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    # aiohttp splits on b"\n" and returns each line as soon as it is complete.
    async for line in response.content:
        yield line
