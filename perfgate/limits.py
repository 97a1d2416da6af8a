"""Bounds on what a user can ask for: far above any real run, low enough that a typo
(``num_prompts = 1e26``, ``input_len = 2**63 - 1``, a request rate of 1e-300) fails with a
message before any server starts instead of hanging or exhausting memory later."""

from __future__ import annotations

import math
import re

MAX_PROMPTS = 1_000_000
MAX_TOKENS = 10_000_000  # prompt or output length: far beyond the longest context served
MAX_CONCURRENCY = 100_000
MAX_SEED = 2**32 - 1
MAX_REPEATS = 1_000
MAX_STARTS = 200  # server starts per arm: each costs minutes
MAX_CLIENT_PROCESSES = 256  # processes reading the streams: one per core at most is useful
# most starts per arm for a budget given as wall time alone (the spending of alpha over looks
# needs a most)
BUDGET_STARTS = 20
# the most a compressed result or trace may decompress to (a decompression bomb is refused)
MAX_UNPACKED_BYTES = 4 * 2**30
# a nightly history: a night's record is a few KB, so years of nights stay far below these
MAX_HISTORY_BYTES = 256 * 2**20
MAX_HISTORY_LINE_CHARS = 2**20
MAX_SEND_SPAN_S = 24 * 3600.0  # the longest a workload may take just to send its requests

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def send_span_problem(num_prompts: int, request_rate: float, rate_name: str) -> str | None:
    """Why ``num_prompts`` arrivals at ``request_rate`` per second take too long, or None."""
    if math.isinf(request_rate) or num_prompts <= 1:
        return None
    span_s = (num_prompts - 1) / request_rate
    if span_s <= MAX_SEND_SPAN_S:
        return None
    return (
        f"{rate_name} {request_rate:g} with {num_prompts} prompts would take about "
        f"{_duration(span_s)} just to send them (limit {MAX_SEND_SPAN_S / 3600:.0f} h); "
        "raise the rate or send fewer prompts"
    )


def _duration(seconds: float) -> str:
    if seconds >= 365 * 86400 * 1000:
        return "forever"
    if seconds >= 86400:
        return f"{seconds / 86400:.0f} days"
    return f"{seconds / 3600:.1f} h"


def env_problem(key: object, value: object) -> str | None:
    """Why ``key=value`` cannot be passed to a process's environment, or None."""
    if not isinstance(key, str) or not ENV_NAME.fullmatch(key):
        return (
            f"{key!r} is not a valid environment variable name (letters, digits and '_', "
            "not starting with a digit)"
        )
    if isinstance(value, str) and "\0" in value:
        return f"the value of {key} holds a NUL byte, which no process environment can carry"
    return None


def arg_problem(arg: str) -> str | None:
    if "\0" in arg:
        return f"{arg!r} holds a NUL byte, which no command line can carry"
    return None
