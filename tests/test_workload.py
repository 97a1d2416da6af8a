import asyncio

import numpy as np
import pytest

from perfgate.documents.bench import Workload
from perfgate.measure.workload import WorkloadError, client_processes, exact_length_text


async def count(text: str) -> int:
    # A tokenizer whose round trip is not the identity: "aa" merges into one token, and there is
    # a BOS token, so decoded ids re-encode to fewer tokens than went in.
    return 1 + len(text) - text.count("aa")


async def decode(ids: list[int]) -> str:
    return "".join(chr(ord("a") + i) for i in ids)


POOL = [0, 1, 2]  # "a" is common, so merges happen often


def build(target, seed):
    return asyncio.run(exact_length_text(count, decode, POOL, target, np.random.default_rng(seed)))


@pytest.mark.parametrize("target", [2, 3, 17, 128, 1024])
def test_prompt_is_exactly_the_asked_length_as_the_tokenizer_counts(target):
    for seed in range(5):
        text = build(target, seed)
        assert asyncio.run(count(text)) == target


def test_same_seed_same_prompt_other_seed_other_prompt():
    assert build(64, 7) == build(64, 7)
    assert build(64, 7) != build(64, 8)


def test_length_that_leaves_no_room_for_text_names_the_flag():
    with pytest.raises(WorkloadError, match="--random-input-len"):
        build(1, 0)


@pytest.mark.parametrize(
    ("setting", "concurrency", "prompts", "cpus", "expected"),
    [
        (0, 8, 80, 16, 1),  # the reference case: one process reads 8 streams exactly
        (0, 64, 80, 16, 4),  # one per 16 streams
        (0, 256, 400, 16, 8),  # no more than measured (8)
        (0, 256, 400, 6, 5),  # nor the cores, less the scheduling process
        (0, 64, 80, 2, 1),  # a two-core box: perfgate's own process alone
        (0, None, 40, 16, 3),  # no cap: as many streams as prompts may be open
        (3, 8, 80, 2, 3),  # a number given is a number used
    ],
)
def test_auto_client_processes_take_one_per_16_streams_within_the_cores(
    setting, concurrency, prompts, cpus, expected
):
    w = Workload(client_processes=setting, max_concurrency=concurrency, num_prompts=prompts)
    assert client_processes(w, usable_cpus=cpus) == expected
