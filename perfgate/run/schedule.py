"""The order of a paired run: A B B A A B ..., and which repeats share a server start."""

from __future__ import annotations

ARMS = ("baseline", "candidate")


def schedule(repeats: int) -> list[str]:
    """A B B A A B B A ...: each pair of repeats swaps which arm goes first."""
    order: list[str] = []
    for i in range(repeats):
        order += list(ARMS) if i % 2 == 0 else list(reversed(ARMS))
    return order


def blocks(order: list[str], restart_between_repeats: bool) -> list[tuple[str, int]]:
    """Runs of one arm that share a server start: [(arm, repeats), ...]."""
    out: list[tuple[str, int]] = []
    for arm in order:
        if out and out[-1][0] == arm and not restart_between_repeats:
            out[-1] = (arm, out[-1][1] + 1)
        else:
            out.append((arm, 1))
    return out
