"""Bursts on a real CPU vLLM, provoked the way a hiccup of vLLM's API server makes them: the API
server process is paused (SIGSTOP) for 300 ms every 0.5 s while perfgate streams from it. The
engine core, a process of its own, keeps generating; the tokens it produced meanwhile reach
the client together when the API server resumes. perfgate must flag the run as bursty and say
the bunching happened between the engine and the socket (the engine's own inter-token
histogram stayed steady, perfgate's event loop was free)."""

import json
import os
import signal
import subprocess
import sys
import time

from tests.e2e.conftest import ROOT, cpu_server_env


def test_a_paused_api_server_is_flagged_as_bursty_and_attributed(vllm_server, tmp_path):
    out = tmp_path / "bursty.json"
    bench = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "perfgate",
            "bench",
            "--url",
            vllm_server.url,
            "--max-concurrency",
            "2",
            "--num-prompts",
            "2",
            "--num-warmups",
            "2",
            "--random-input-len",
            "32",
            "--random-output-len",
            "600",
            "--out",
            str(out),
            "--timeline",
            str(tmp_path / "timeline.png"),
        ],
        cwd=ROOT,
        env={**os.environ, **cpu_server_env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    api_server = vllm_server.proc.pid
    paused = 0
    try:
        while bench.poll() is None:
            time.sleep(0.5)
            os.kill(api_server, signal.SIGSTOP)
            try:
                time.sleep(0.3)
            finally:
                os.kill(api_server, signal.SIGCONT)
            paused += 1
        output = bench.communicate(timeout=60)[0]
    finally:
        os.kill(api_server, signal.SIGCONT)
        if bench.poll() is None:
            bench.kill()
    assert bench.returncode == 0, output
    assert paused >= 2
    doc = json.loads(out.read_text())
    bursts = doc["bursts"]
    assert bursts["bursty"], bursts
    assert bursts["stalled_requests"] >= 1 and bursts["longest_stall_ms"] >= 200
    assert bursts["where"] == "server output path", bursts["explanation"]
    assert bursts["server_itl_ms"]["p99"][1] < bursts["stall_threshold_ms"]  # engine steady
    (warning,) = [w for w in doc["warnings"] if w["code"] == "bursty_stream"]
    assert "between the engine and the socket" in warning["message"]
    assert "Tokens reached the client in bursts" in output  # the terminal report says so
    picture = (tmp_path / "timeline.png").read_bytes()  # the stalls, drawn for a user to see
    assert picture.startswith(b"\x89PNG") and "timeline drawn in" in output
