"""CPU placement facts and pinning (perfgate.run.placement): core lists, the plan, a real
process group, and the GPU sampler against a stand-in nvidia-smi with known output."""

import os
import subprocess
import sys
import time

import pytest

from perfgate.run import placement


def test_core_lists_round_trip():
    assert placement.parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert placement.cpulist([11, 0, 1, 2, 3, 8, 10]) == "0-3,8,10-11"
    assert placement.cpulist([]) == ""


def test_plan_gives_the_engine_half_and_the_api_server_and_client_a_quarter_each():
    cores = placement.plan(range(16))
    assert cores == {
        "engine": list(range(8)),
        "api_server": list(range(8, 12)),
        "client": list(range(12, 16)),
    }


def test_auto_pins_gpu_scenarios_only_and_explicit_settings_win():
    many = len(os.sched_getaffinity(0)) >= 8
    assert placement.pin_wanted("auto", requires_gpu=True) is many
    assert placement.pin_wanted("auto", requires_gpu=False) is False
    assert placement.pin_wanted("true", requires_gpu=False) is True
    assert placement.pin_wanted("false", requires_gpu=True) is False


def test_a_process_group_is_found_pinned_and_described():
    usable = sorted(os.sched_getaffinity(0))
    child = subprocess.Popen(
        [sys.executable, "-c", "import time, threading; threading.Thread(target=time.sleep, "
         "args=(30,), daemon=True).start(); time.sleep(30)"],
        process_group=0,
    )  # fmt: skip
    try:
        time.sleep(0.5)
        assert placement.group_pids(child.pid) == [child.pid]
        one = [usable[-1]]
        placement.pin_server(child.pid, {"api_server": one, "engine": usable})
        for task in os.listdir(f"/proc/{child.pid}/task"):  # every thread, not only the main
            assert sorted(os.sched_getaffinity(int(task))) == one
        (fact,) = placement.server_facts(child.pid)
        assert fact["cpus"] == str(one[0]) and fact["threads"] == 2
        assert fact["numa_nodes"]
    finally:
        child.kill()
        child.wait()


def test_client_pinning_is_restored():
    before = os.sched_getaffinity(0)
    with placement.client_pinned([min(before)]):
        assert os.sched_getaffinity(0) == {min(before)}
    assert os.sched_getaffinity(0) == before
    with placement.client_pinned(None):
        assert os.sched_getaffinity(0) == before


FAKE_SMI = """#!/bin/sh
echo "0, 1980, 3201, 0x0000000000000000, 41, 300.5"
echo "0, 1755, 3201, 0x0000000000000004, 47, 350.0"
echo "0, 1980, 3201, 0x0000000000000000, 44, 310.0"
echo "garbage line"
sleep 30
"""


def test_gpu_sampler_summarizes_clocks_reasons_temperature_and_power(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with placement.GpuSampler() as gpu:
        deadline = time.monotonic() + 10
        while len(gpu.rows) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    (s,) = gpu.summary()
    assert s["samples"] == 3 and s["sm_mhz"] == [1755.0, 1980.0, 1980.0]
    assert s["clock_event_reasons"] == "0x4"  # any reason seen during the block
    assert s["max_temperature_c"] == 47.0 and s["median_power_w"] == 310.0


def test_gpu_sampler_without_nvidia_smi_records_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with placement.GpuSampler() as gpu:
        pass
    assert gpu.summary() == []


@pytest.mark.parametrize("value", ["sometimes", 3])
def test_pin_cpus_must_be_true_false_or_auto(tmp_path, value):
    from perfgate.documents.spec import ScenarioError
    from perfgate.scenario import load

    text = (
        'name = "x"\nmodel = "builtin:tiny-llama"\n[server]\npin_cpus = '
        + (f'"{value}"' if isinstance(value, str) else str(value))
        + "\n[arms.baseline]\n[arms.candidate]\n"
    )
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=r"server\.pin_cpus must be true, false or \"auto\""):
        load(path)
