import math

import numpy as np
import pytest

from perfgate.measure.loadgen import arrival_gaps_s


def test_infinite_rate_sends_everything_at_once():
    assert arrival_gaps_s(4, math.inf, 1.0, 0) == [0.0] * 4


def test_poisson_gaps_are_seeded_and_have_the_asked_mean():
    a = arrival_gaps_s(20000, 50.0, 1.0, seed=3)
    assert a == arrival_gaps_s(20000, 50.0, 1.0, seed=3)
    assert a[0] == 0.0
    assert np.mean(a[1:]) == pytest.approx(1 / 50.0, rel=0.03)


def test_burstiness_keeps_the_mean_and_changes_the_spread():
    smooth = np.array(arrival_gaps_s(20000, 10.0, 4.0, seed=1)[1:])
    bursty = np.array(arrival_gaps_s(20000, 10.0, 0.25, seed=1)[1:])
    assert smooth.mean() == pytest.approx(0.1, rel=0.05)
    assert bursty.mean() == pytest.approx(0.1, rel=0.05)
    assert bursty.std() > 3 * smooth.std()


def test_the_recorded_event_loop_is_the_one_the_client_runs_on():
    import asyncio

    from perfgate import environment
    from perfgate.measure.client import run_async

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    running = run_async(loop_module())
    recorded = environment.capture()["event_loop"]
    assert recorded.split()[0] == ("uvloop" if running.startswith("uvloop") else "asyncio")
