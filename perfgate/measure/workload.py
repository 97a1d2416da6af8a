"""Random prompts of an exact token length, as the server counts them, reproducible from a seed.

Each prompt starts as random token ids drawn from a pool of ordinary (non-special) tokens, is
decoded to text by the server, and is re-counted the way the request will be counted (with the
BOS token for completions, with the chat template for chat). Decoding and re-encoding can merge
or split tokens at the seams, so the ids are trimmed or extended until the count is exact.
The same seed, length and server tokenizer give the same prompts.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from perfgate.documents.bench import Workload
from perfgate.serve.server_api import Tokenizer

MAX_FIXUPS = 32

# Text whose tokens form the sampling pool: plain words, digits and punctuation, so prompts are
# made of tokens every byte-level BPE vocabulary has and no special token can appear.
_POOL_TEXT = (
    "The quick brown fox jumps over the lazy dog while seven engineers measure latency, "
    "throughput and accuracy of a serving system. Kernels launch, tokens stream, requests "
    "queue and batches grow; numbers like 0 1 2 3 4 5 6 7 8 9 10 42 128 1024 2048 appear. "
    "Every benchmark needs warmup, repeats, confidence intervals and a careful reader who "
    "asks whether the change under test actually ran. Models answer questions about physics, "
    "chemistry and biology; graders extract letters such as A, B, C or D from the replies. "
    "Memory bandwidth, cache hits, scheduling policy, prefill and decode all shape the time "
    "between tokens. She wrote code; he reviewed it; they shipped it on Friday afternoon."
)


class WorkloadError(Exception):
    """Prompts of the asked length could not be built; the message says why."""


# Streams one client process reads in "auto": one process keeps its timestamps within a few
# tens of microseconds of a bare socket reader up to 8-16 streams of a token every 2 ms and
# saturates near 64 (~32k events/s); four processes reading 64 streams matched the reader
# (docs/fidelity.md). "auto" takes no more than the most that was measured.
STREAMS_PER_CLIENT_PROCESS = 16
MAX_AUTO_CLIENT_PROCESSES = 8


def client_processes(w: Workload, usable_cpus: int | None = None) -> int:
    """How many processes read the streams: the setting, or for "auto" (0) one per
    ``STREAMS_PER_CLIENT_PROCESS`` streams that may be open at once, at most
    ``MAX_AUTO_CLIENT_PROCESSES`` and the cores perfgate may run on less one (the scheduling
    process), at least one."""
    if w.client_processes > 0:
        return w.client_processes
    if usable_cpus is None:
        usable_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    streams = w.num_prompts if w.max_concurrency is None else w.max_concurrency
    wanted = -(-streams // STREAMS_PER_CLIENT_PROCESS)
    return max(1, min(wanted, MAX_AUTO_CLIENT_PROCESSES, usable_cpus - 1))


@dataclass(frozen=True)
class Prompt:
    text: str
    prompt_tokens: int  # as the server will count it
    output_tokens: int


async def token_pool(tokenizer: Tokenizer) -> list[int]:
    ids = sorted(set(await tokenizer.encode(_POOL_TEXT, add_special_tokens=False)))
    if len(ids) < 16:
        raise WorkloadError(
            f"the server's tokenizer gave only {len(ids)} distinct tokens for the pool text; "
            "cannot build random prompts"
        )
    return ids


async def exact_length_text(
    count: Callable[[str], Awaitable[int]],
    decode: Callable[[list[int]], Awaitable[str]],
    pool: list[int],
    target: int,
    rng: np.random.Generator,
) -> str:
    """Text for which ``count(text) == target``, built from random ``pool`` ids."""
    overhead = await count("")
    if target <= overhead:
        raise WorkloadError(
            f"an input length of {target} tokens leaves no room for text: the request format "
            f"alone takes {overhead} tokens (raise --random-input-len above {overhead})"
        )
    ids = [int(i) for i in rng.choice(pool, size=target - overhead)]
    for _ in range(MAX_FIXUPS):
        text = await decode(ids)
        n = await count(text)
        if n == target:
            return text
        if n > target:
            del ids[len(ids) - (n - target) :]
        else:
            ids.extend(int(i) for i in rng.choice(pool, size=target - n))
    raise WorkloadError(
        f"could not reach exactly {target} prompt tokens after {MAX_FIXUPS} decode/encode "
        "round trips with this tokenizer; try another --seed"
    )


async def build_prompts(
    tokenizer: Tokenizer,
    *,
    endpoint: str,
    num_prompts: int,
    input_len: int,
    output_len: int,
    seed: int,
    stream: int = 0,
) -> list[Prompt]:
    """``num_prompts`` prompts of exactly ``input_len`` tokens. ``stream`` separates the warmup
    prompts from the measured ones (same seed, different random stream), so a warmup never
    pre-fills the prefix cache for a measured request."""
    pool = await token_pool(tokenizer)
    count = tokenizer.count_chat if endpoint == "chat" else tokenizer.count_prompt
    rng = np.random.default_rng([seed, stream])
    prompts = []
    for _ in range(num_prompts):
        text = await exact_length_text(count, tokenizer.decode, pool, input_len, rng)
        prompts.append(Prompt(text=text, prompt_tokens=input_len, output_tokens=output_len))
    return prompts
