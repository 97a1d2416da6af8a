"""Profiled windows: figures of one start's trace at its decode batch (real vLLM traces and
hand-made ones with known sums), and the kernel-level A/B table across starts."""

import math

import pytest

from perfgate import registry, steps
from perfgate.decide.kernels import compare_kernels
from perfgate.documents.kernels import FIGURES
from tests.test_steps import CPU, GPU, ev, load


def test_gpu_window_reads_decode_steps_at_the_batch_and_their_kernels():
    w = steps.window(load(GPU), batch=8)
    assert (w.source, w.batch, w.decode_steps) == ("kernel", 8, 60)
    assert 800 < w.time_per_step_us < 900
    assert w.time_per_token_us == pytest.approx(w.time_per_step_us / 8)
    assert w.launches_per_step == 52
    assert w.graph_replays_per_step == 1  # decode at batch 8 replays one CUDA graph
    names = [k.name for k in w.kernels]
    moe = w.kernels[names.index("fused_moe_kernel")]
    assert moe.calls_per_step == 4 and moe.us_per_step == pytest.approx(4 * moe.us_per_call)
    # the router GEMM of stock vLLM: cuBLAS's split-K GEMM + reduce, twice per step (2 layers)
    assert any("splitK" in n for n in names) and any("splitKreduce" in n for n in names)
    # the kernels' time per step adds up to the mean step (the figure is the median)
    mean_step = sum(k.us_per_step for k in w.kernels)
    assert abs(mean_step - w.time_per_step_us) / w.time_per_step_us < 0.02
    # prefill and mixed steps are apart, in the groups only
    assert {("prefill", 16), ("mixed", 113)} <= {(g.kind, g.tokens) for g in w.groups}


def test_cpu_window_uses_operator_time_and_has_no_graph_replays():
    w = steps.window(load(CPU), batch=4)
    assert (w.source, w.decode_steps) == ("cpu_op", 15)
    assert math.isnan(w.graph_replays_per_step)
    assert w.kernels and all(k.us_per_step > 0 for k in w.kernels)


def test_a_batch_that_never_decoded_is_missing_not_zero():
    w = steps.window(load(CPU), batch=7)
    assert w.decode_steps == 0
    figures = w.figures()
    assert math.isnan(figures["device_time_per_step_us"])
    assert math.isnan(figures["device_time_per_token_us"])


def test_every_window_figure_is_a_registered_window_metric():
    window_metrics = {m.name for m in registry.METRICS.values() if m.from_window}
    assert window_metrics == set(FIGURES)
    assert registry.get("device_time_per_step_us").gateable
    assert not registry.get("launches_per_step").gateable


def trace(kernels_per_step):
    """Decode steps at batch 2, each with the given (name, us) kernels."""
    events, t = [], 0.0
    for ks in kernels_per_step:
        span = sum(us for _, us in ks) + 10
        events.append(ev("gpu_user_annotation", "execute_context_0(0)_generation_2(2)", t, span))
        k = t
        for name, us in ks:
            events.append(ev("kernel", name, k, us))
            k += us
        t += span + 5
    return {"traceEvents": events}


def win(gemm_name, gemm_us, moe_us=100.0):
    return steps.window(trace([[("moe", moe_us), (gemm_name, gemm_us)]] * 3), batch=2)


def test_kernel_table_lists_what_appeared_disappeared_and_changed_with_intervals():
    base = [win("cublas_gemm", 6.0, 100.0), win("cublas_gemm", 6.0, 100.2)]
    cand = [win("router_gemm", 11.0, 100.1), win("router_gemm", 11.2, 100.1)]
    k = compare_kernels(base, cand, confidence=0.95)
    rows = {r.name: r for r in k.rows}
    assert set(rows) == {"cublas_gemm", "router_gemm"}  # moe: within 0.5% of a step
    assert rows["router_gemm"].change == "appeared"
    assert rows["router_gemm"].diff_us_per_step == pytest.approx(11.1)
    assert math.isnan(rows["router_gemm"].baseline_us_per_call)
    assert rows["cublas_gemm"].change == "disappeared"
    assert rows["cublas_gemm"].diff_us_per_step == pytest.approx(-6.0)
    assert k.step_diff_us == pytest.approx(5.1)
    assert k.listed_diff_us == pytest.approx(5.1)
    assert k.step_low < 5.1 < k.step_high


def test_a_kernel_that_changed_within_noise_is_not_listed_and_one_start_is_unbounded():
    base = [win("g", 6.0), win("g", 9.0)]
    cand = [win("g", 9.0), win("g", 6.0)]
    assert compare_kernels(base, cand).rows == []
    one = compare_kernels([win("g", 6.0)], [win("g", 12.0)])
    assert one.rows[0].change == "slower"  # 6 us of a 106 us step, beyond 0.5%
    assert math.isinf(one.rows[0].high) and math.isinf(one.step_high)


def test_windows_at_different_batches_are_not_compared():
    other = steps.window(trace([[("moe", 100.0)]]), batch=3)
    assert compare_kernels([win("g", 6.0)], [other]).problem is not None
