"""The order of a paired run: rounds of one server start per arm, the order within each round
randomized (randomized multiple interleaved trials), and balanced: every two rounds hold one
baseline-first and one candidate-first round, so what a start inherits from the one before it
(a warm GPU, a page cache, a neighbour's load) falls on both arms alike. The seed is recorded
with the run; the same seed gives the same order."""

from __future__ import annotations

import random

from perfgate.documents.run import ARMS


def round_order(seed: int, round_no: int) -> tuple[str, str]:
    """The arms' order in round ``round_no`` (0-based): each pair of rounds (0-1, 2-3, ...)
    takes both orders, which one first drawn from the seed."""
    flip = random.Random(f"perfgate-schedule:{seed}:{round_no // 2}").random() < 0.5
    first = (round_no % 2 == 1) != flip
    return (ARMS[1], ARMS[0]) if first else ARMS


def gpus_of(order: tuple[str, str], gpus: tuple[str, str]) -> dict[str, str]:
    """Arms in parallel on two GPUs: the round's first arm on the first GPU. Rounds come in
    balanced pairs (both orders), so every arm runs on each GPU equally often (crossover)."""
    return {order[0]: gpus[0], order[1]: gpus[1]}


def repeat_order(order: tuple[str, str], repeats_per_start: int) -> list[str]:
    """Colocated servers (both up in a round): the round's repeats alternate arm by arm,
    A B B A ..., starting with the round's first arm; every start gets the same count."""
    out: list[str] = []
    for i in range(repeats_per_start):
        out += list(order) if i % 2 == 0 else list(reversed(order))
    return out


def new_seed() -> int:
    """A fresh schedule seed, for a scenario that does not fix one."""
    return random.SystemRandom().randrange(2**31)
