"""``perfgate bench`` against a real vLLM server on CPU."""

from __future__ import annotations

import json

import pytest

from perfgate.documents.records import RequestRecord
from perfgate.formulas import e2el_ms, itl_ms, ttft_ms
from perfgate.serve.server import ServerError, ServerSpec, VllmServer
from tests.e2e.conftest import (
    MAX_MODEL_LEN,
    cpu_server_env,
    perfgate,
    tiny_serve_args,
    vllm_processes,
)

IN, OUT, N, CONC = 96, 48, 12, 4


@pytest.mark.parametrize("processes", ["auto", "2"])
def test_bench_measures_every_request_exactly(vllm_server, tmp_path, processes):
    """Read in perfgate's own process ("auto" on a small box) and in two client processes."""
    out = tmp_path / "bench.json"
    proc = perfgate(
        "bench",
        "--url",
        vllm_server.url,
        "--num-prompts",
        str(N),
        "--random-input-len",
        str(IN),
        "--random-output-len",
        str(OUT),
        "--max-concurrency",
        str(CONC),
        "--num-warmups",
        "2",
        "--seed",
        "7",
        "--client-processes",
        processes,
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Serving Benchmark Result" in proc.stdout

    doc = json.loads(out.read_text())
    assert doc["schema"] == "perfgate.bench/1" and doc["valid"] is True
    if processes == "2":
        assert doc["config"]["client_processes"] == 2
    else:  # "auto", resolved for the cores perfgate may use
        assert doc["config"]["client_processes"] >= 1
    assert doc["server"]["model"] == "tiny" and doc["server"]["version"]
    assert doc["environment"]["perfgate_version"]
    m = doc["metrics"]
    assert (m["completed"], m["failed"]) == (N, 0)
    assert m["total_input_tokens"] == N * IN and m["total_output_tokens"] == N * OUT
    assert 1 <= m["max_concurrent_requests"] <= CONC

    records = [RequestRecord.from_json(r) for r in doc["records"]]
    measured = [r for r in records if not r.warmup]
    assert len(measured) == N and sum(r.warmup for r in records) == 2
    for r in measured:
        assert r.error is None
        assert r.prompt_tokens == IN and r.output_tokens == OUT
        assert r.chunk_tokens is not None and sum(r.chunk_tokens) == OUT
        assert e2el_ms(r) - ttft_ms(r) == pytest.approx(sum(itl_ms(r)), rel=1e-9)
        assert r.send_ns >= r.scheduled_ns
    # TPOT as the mean of the per-request values, each (E2EL - TTFT) / (OUT - 1)
    tpots = [(e2el_ms(r) - ttft_ms(r)) / (OUT - 1) for r in measured]
    assert m["mean_tpot_ms"] == pytest.approx(sum(tpots) / N)

    checks = {c["name"]: c for c in doc["server_cross_check"]}
    assert checks["generated tokens"]["server"] == N * OUT, "the server counted what we counted"
    assert checks["generated tokens"]["agrees"] is True
    assert checks["successful requests"]["agrees"] is True
    assert checks["mean TTFT"]["server"] > 0


def test_chat_prompts_are_exact_including_the_template(vllm_server, tmp_path):
    out = tmp_path / "chat.json"
    proc = perfgate(
        "bench",
        "--url",
        vllm_server.url,
        "--endpoint",
        "chat",
        "--num-prompts",
        "4",
        "--random-input-len",
        "64",
        "--random-output-len",
        "16",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    measured = [r for r in doc["records"] if not r["warmup"]]
    assert len(measured) == 4 and len(doc["records"]) == 4 + 8  # 8 warmups by default
    # every prompt, warmups included, is exact with the chat template counted
    assert {r["prompt_tokens"] for r in doc["records"]} == {64}
    assert {r["output_tokens"] for r in doc["records"]} == {16}


def test_same_seed_builds_the_same_prompts(vllm_server, tmp_path):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.json"
        proc = perfgate(
            "bench",
            "--url",
            vllm_server.url,
            "--num-prompts",
            "2",
            "--random-input-len",
            "32",
            "--random-output-len",
            "4",
            "--seed",
            "3",
            "--out",
            str(out),
        )
        assert proc.returncode == 0, proc.stderr
        outs.append(json.loads(out.read_text()))
    # prompts are not stored; identical prompts give identical greedy outputs and cache hits
    assert outs[0]["metrics"]["total_input_tokens"] == outs[1]["metrics"]["total_input_tokens"]


def test_wrong_model_names_what_is_served(vllm_server):
    proc = perfgate("bench", "--url", vllm_server.url, "--served-model", "gpt-oss-120b")
    assert proc.returncode == 2
    assert "--served-model 'gpt-oss-120b' is not served" in proc.stderr and "tiny" in proc.stderr


def test_request_longer_than_the_context_is_refused_before_sending(vllm_server):
    proc = perfgate(
        "bench",
        "--url",
        vllm_server.url,
        "--random-input-len",
        "2000",
        "--random-output-len",
        "100",
    )
    assert proc.returncode == 2
    assert f"exceeds the server's max_model_len of {MAX_MODEL_LEN}" in proc.stderr
    assert "--max-model-len 2100" in proc.stderr


def test_input_too_short_for_the_chat_template_names_the_flag(vllm_server):
    proc = perfgate(
        "bench",
        "--url",
        vllm_server.url,
        "--endpoint",
        "chat",
        "--random-input-len",
        "2",
        "--random-output-len",
        "4",
        "--num-prompts",
        "1",
    )
    assert proc.returncode == 2
    assert "raise --random-input-len above" in proc.stderr


def test_server_that_cannot_start_reports_its_log_tail(tiny_model, tmp_path):
    spec = ServerSpec(
        name="broken",
        model=str(tiny_model),
        log_path=tmp_path / "broken.log",
        serve_args=("--no-such-flag",),
        env=cpu_server_env(),
        startup_timeout_s=120,
    )
    server = VllmServer(spec)
    with pytest.raises(ServerError) as info, server:
        pass
    message = str(info.value)
    assert "server 'broken' exited with code" in message
    assert "no-such-flag" in message  # vLLM's own complaint, from the log tail
    assert str(tmp_path / "broken.log") in message


def test_bench_serve_starts_and_stops_its_own_server(tiny_model, tmp_path):
    before = vllm_processes()
    out = tmp_path / "serve.json"
    args = [f"--serve-arg={a}" for a in tiny_serve_args(1024)]
    proc = perfgate(
        "bench",
        "--serve",
        str(tiny_model),
        *args,
        "--num-prompts",
        "4",
        "--random-input-len",
        "32",
        "--random-output-len",
        "8",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert json.loads(out.read_text())["valid"] is True
    assert "Application startup complete" in (tmp_path / "bench-server.log").read_text()
    assert vllm_processes() - before == set(), "no process of the started server is left"
