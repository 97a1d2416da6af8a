"""Scripted SSE streams and clocks for exact timing tests (no server, no sleeping)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any


def event(obj: Any) -> bytes:
    return f"data: {json.dumps(obj)}\n".encode()


DONE = b"data: [DONE]\n"


def completion_chunk(text: str, prompt_tokens: int | None, completion_tokens: int | None) -> bytes:
    obj: dict[str, Any] = {"choices": [{"index": 0, "text": text, "finish_reason": None}]}
    if completion_tokens is not None:
        obj["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": (prompt_tokens or 0) + completion_tokens,
        }
    return event(obj)


def usage_chunk(prompt_tokens: int, completion_tokens: int) -> bytes:
    return event(
        {
            "choices": [],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


async def lines(items: Iterable[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item
        yield b"\n"  # SSE events are separated by a blank line


class ScriptedClock:
    """Returns the given nanosecond readings in order; fails loudly if read too often."""

    def __init__(self, readings: Iterable[int]) -> None:
        self._readings = list(readings)
        self.reads = 0

    def __call__(self) -> int:
        value = self._readings[self.reads]
        self.reads += 1
        return value
