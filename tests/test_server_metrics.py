import pytest

from perfgate.measure.server_metrics import cross_check, parse_prometheus

BEFORE = """# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="tiny"} 100.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="tiny"} 2.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="tiny"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="tiny"} 0.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="tiny"} 3.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="tiny"} 0.3
vllm:inter_token_latency_seconds_count{engine="0",model_name="tiny"} 97.0
vllm:inter_token_latency_seconds_sum{engine="0",model_name="tiny"} 0.97
"""

AFTER = """vllm:generation_tokens_total{engine="0",model_name="tiny"} 1124.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="tiny"} 10.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="tiny"} 1.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="tiny"} 11.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="tiny"} 0.46
vllm:inter_token_latency_seconds_count{engine="0",model_name="tiny"} 1113.0
vllm:inter_token_latency_seconds_sum{engine="0",model_name="tiny"} 3.002
"""


def by_name(checks):
    return {c.name: c for c in checks}


def test_parse_sums_label_sets_and_skips_buckets_and_comments():
    m = parse_prometheus(BEFORE)
    assert m["vllm:request_success_total"] == 3.0
    assert "vllm:time_to_first_token_seconds_bucket" not in m
    assert m["vllm:time_to_first_token_seconds_sum"] == 0.3


def test_matching_client_figures_agree():
    # 8 requests, 1024 tokens; TTFT mean (0.46-0.3)/8 = 20 ms; ITL (3.002-0.97)/1016 = 2 ms
    client = {
        "total_output_tokens": 1024,
        "completed": 8,
        "mean_ttft_ms": 21.0,
        "mean_itl_per_token_ms": 2.05,
    }
    checks = by_name(cross_check(BEFORE, AFTER, client))
    assert checks["generated tokens"].server == 1024 and checks["generated tokens"].agrees
    assert checks["successful requests"].agrees
    assert checks["mean TTFT"].server == pytest.approx(20.0) and checks["mean TTFT"].agrees
    assert checks["mean ITL per token"].agrees
    assert checks["mean TPOT"].agrees is None  # the server did not export it here


def test_a_client_far_above_the_server_is_flagged_as_a_bottleneck():
    client = {
        "total_output_tokens": 1024,
        "completed": 8,
        "mean_ttft_ms": 20.0,
        "mean_itl_per_token_ms": 40.0,
    }
    itl = by_name(cross_check(BEFORE, AFTER, client))["mean ITL per token"]
    assert itl.agrees is False
    assert "bottleneck" in itl.note


def test_token_count_mismatch_is_flagged():
    client = {"total_output_tokens": 1000, "completed": 8}
    tokens = by_name(cross_check(BEFORE, AFTER, client))["generated tokens"]
    assert tokens.agrees is False and "other traffic" in tokens.note


def test_no_metrics_endpoint_gives_no_checks():
    assert cross_check(None, AFTER, {}) == []
