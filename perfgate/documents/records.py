"""RequestRecord: the one shape that measured data takes.

Everything perfgate measures about a request lands here, exactly as observed, before any
statistics. Times are integer nanoseconds from ``time.perf_counter_ns()`` relative to the run's
start (``t0``), so records from one run share a clock and subtraction is exact.

A value that was not observed is ``None``, never 0: a failed request has no first-token time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class RequestRecord:
    """One request as the client saw it.

    ``chunk_ns`` holds the arrival time of every *token-carrying* chunk (a chunk whose cumulative
    ``usage.completion_tokens`` grew, or, when the server sends no per-chunk usage, a chunk with
    generated text). ``chunk_tokens[i]`` is how many tokens chunk ``i`` carried, or ``None`` for
    all chunks when the server did not say.
    """

    index: int
    expected_prompt_tokens: int
    expected_output_tokens: int
    scheduled_ns: int  # when the load generator wanted to send it (arrival process)
    send_ns: int  # when the HTTP request was actually issued (after waiting for a slot)
    end_ns: int | None = None  # stream closed ([DONE] or error)
    chunk_ns: tuple[int, ...] = ()
    chunk_tokens: tuple[int, ...] | None = None
    prompt_tokens: int | None = None  # from the server's usage
    output_tokens: int | None = None  # from the server's usage
    error: str | None = None
    warmup: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def queue_wait_ns(self) -> int:
        """Time the request waited client-side for a concurrency slot."""
        return self.send_ns - self.scheduled_ns

    @property
    def first_token_ns(self) -> int | None:
        return self.chunk_ns[0] if self.chunk_ns else None

    @property
    def last_token_ns(self) -> int | None:
        return self.chunk_ns[-1] if self.chunk_ns else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["chunk_ns"] = list(self.chunk_ns)
        data["chunk_tokens"] = None if self.chunk_tokens is None else list(self.chunk_tokens)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestRecord:
        data = dict(data)
        data.pop("extra", None)  # written by perfgate <= 0.1.0 (always empty)
        data["chunk_ns"] = tuple(data.get("chunk_ns") or ())
        tokens = data.get("chunk_tokens")
        data["chunk_tokens"] = None if tokens is None else tuple(tokens)
        return cls(**data)
