import asyncio

import numpy as np
import pytest

from perfgate.measure.workload import WorkloadError, exact_length_text


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
