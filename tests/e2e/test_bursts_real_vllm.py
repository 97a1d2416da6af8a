"""Bursts on a real CPU vLLM, provoked the way a hiccup of vLLM's API server makes them: the API
server process is paused (SIGSTOP) for 300 ms every 0.5 s while perfgate streams from it. The
engine core, a process of its own, keeps generating; the tokens it produced meanwhile reach
the client together when the API server resumes. perfgate must flag the run as bursty and say
where the bunching happened, by the engine's own inter-token histogram: between the engine and
the socket when it stayed steady (the usual case), never in perfgate's client (its event loop
was free)."""

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
    (warning,) = [w for w in doc["warnings"] if w["code"] == "bursty_stream"]
    # The engine's own histogram decides the attribution. Almost always it stays steady and the
    # bunching is placed between the engine and the socket; on a busy two-core machine the
    # resumed API server can slow the engine too (its p99 then passes the stall threshold:
    # seen once in three CI runs), and the bunching must then be placed in the engine (or, when
    # the histogram's bucket straddles the threshold, in the server). Never in the client.
    low, high = bursts["server_itl_ms"]["p99"]
    threshold = bursts["stall_threshold_ms"]
    if high < threshold:
        assert bursts["where"] == "server output path", bursts["explanation"]
        assert "between the engine and the socket" in warning["message"]
    elif low >= threshold:
        assert bursts["where"] == "engine", bursts["explanation"]
        assert "in the engine" in warning["message"]
    else:
        assert bursts["where"] == "server", bursts["explanation"]
    assert "Tokens reached the client in bursts" in output  # the terminal report says so
    picture = (tmp_path / "timeline.png").read_bytes()  # the stalls, drawn for a user to see
    assert picture.startswith(b"\x89PNG") and "timeline drawn in" in output
