"""The scripted-server faults of ``tests/fault_cases.py``: exit code, message, what is kept."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from perfgate.cli.main import main
from perfgate.documents import io as results
from perfgate.serve import server
from perfgate.serve.server import ServerError, ServerSpec, VllmServer, group_members
from tests.fake_server import FakeServer
from tests.fault_cases import BY_ID, SCRIPTED

ROOT = Path(__file__).resolve().parents[1]
BENCH = ["--num-prompts", "4", "--random-input-len", "16", "--random-output-len", "8"]


def flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


def check(case_id: str, result) -> None:
    case = BY_ID[case_id]
    assert case.against == SCRIPTED
    assert result.exit_code == case.exit_code, result.output
    assert flat(case.message) in flat(result.output), result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "mode",
    ["http500", "http429", "malformed", "drop", "stall", "keepalive", "no_metrics", "wrong_usage"],
)
def test_a_misbehaving_server_is_reported_and_every_record_kept(mode, tmp_path):
    out = tmp_path / "r.json"
    with FakeServer(mode, stall_s=5) as url:
        args = ["bench", "--url", url, *BENCH, "--stall-timeout", "1", "--out", str(out)]
        result = CliRunner().invoke(main, args)
    check(mode, result)
    doc = json.loads(out.read_text())
    measured = [r for r in doc["records"] if not r["warmup"]]
    assert len(measured) == 4
    assert doc["valid"] is (BY_ID[mode].exit_code == 0)
    if mode in ("http500", "http429", "malformed", "drop", "stall", "keepalive"):
        assert all(r["error"] for r in measured)
    if mode == "drop":
        assert all(len(r["chunk_ns"]) == 1 for r in measured)  # what arrived is kept
    if mode == "no_metrics":
        assert doc["server_cross_check"] == []
        assert [w["code"] for w in doc["warnings"]] == ["no_server_metrics"]
    if mode == "wrong_usage":
        rows = {c["name"]: c for c in doc["server_cross_check"]}
        assert rows["generated tokens"]["agrees"] is False


@pytest.mark.parametrize(
    "mode", ["models_not_json", "version_not_json", "metrics_not_utf8", "tokenize_odd"]
)
def test_odd_replies_from_the_servers_other_endpoints_are_messages(mode, tmp_path):
    out = tmp_path / "r.json"
    with FakeServer(mode) as url:
        result = CliRunner().invoke(main, ["bench", "--url", url, *BENCH, "--out", str(out)])
    check(mode, result)
    assert out.exists() is (BY_ID[mode].exit_code == 0)
    if mode == "metrics_not_utf8":
        rows = {c["name"]: c for c in json.loads(out.read_text())["server_cross_check"]}
        assert rows["generated tokens"]["agrees"] is True


@pytest.mark.parametrize("processes", ["1", "2"])
def test_one_bad_event_fails_its_own_request_and_the_other_23_are_kept(processes, tmp_path):
    out = tmp_path / "r.json"
    args = ["--num-prompts", "24", "--num-warmups", "0", "--random-input-len", "16",
            "--random-output-len", "8", "--client-processes", processes]  # fmt: skip
    with FakeServer("bad_event_once") as url:
        result = CliRunner().invoke(main, ["bench", "--url", url, *args, "--out", str(out)])
    check("bad-event-once", result)
    doc = json.loads(out.read_text())
    failed = [r for r in doc["records"] if r["error"]]
    assert len(doc["records"]) == 24 and len(failed) == 1
    assert f"(request {failed[0]['index']})" in flat(result.output)
    assert all(r["output_tokens"] == 8 for r in doc["records"] if not r["error"])


def test_a_first_token_past_its_deadline_fails_the_request_though_bytes_keep_coming(tmp_path):
    out = tmp_path / "r.json"
    args = [*BENCH, "--num-warmups", "0", "--ttft-timeout", "1", "--out", str(out)]
    with FakeServer("late_first", stall_s=20) as url:
        result = CliRunner().invoke(main, ["bench", "--url", url, *args])
    check("late_first", result)
    records = json.loads(out.read_text())["records"]
    assert len(records) == 4 and all("first-token deadline" in r["error"] for r in records)
    assert all(r["chunk_ns"] == [] for r in records)  # no token came


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_request_past_its_deadline_fails_and_keeps_the_tokens_that_came(processes, tmp_path):
    out = tmp_path / "r.json"
    args = [*BENCH, "--num-warmups", "0", "--request-timeout", "1", "--client-processes",
            processes, "--out", str(out)]  # fmt: skip
    with FakeServer("trickle") as url:
        result = CliRunner().invoke(main, ["bench", "--url", url, *args])
    check("trickle", result)
    records = json.loads(out.read_text())["records"]
    assert len(records) == 4 and all("request deadline" in r["error"] for r in records)
    # a token every 0.3 s after the first: 1 s holds 2 to 4 of the 8, never all
    assert all(1 <= len(r["chunk_ns"]) < 8 for r in records), [r["chunk_ns"] for r in records]


def test_an_output_file_that_cannot_be_written_at_the_end_loses_nothing(tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    real_write = results.write_json

    def disk_full(path, doc):
        if path == out:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, doc)

    monkeypatch.setattr(results, "write_json", disk_full)
    with FakeServer("ok") as url:
        result = CliRunner().invoke(main, ["bench", "--url", url, *BENCH, "--out", str(out)])
    check("out-unwritable-at-the-end", result)
    assert "cannot write" in result.output and "No space left on device" in result.output
    assert "Serving Benchmark Result" in result.output  # the summary is printed all the same
    saved = Path(flat(result.output).split("result written to ")[1].split()[0])
    assert saved != out and json.loads(saved.read_text())["valid"] is True
    assert oct(saved.stat().st_mode & 0o777) == oct(0o600)


def test_compare_of_running_servers_keeps_the_baseline_when_the_candidate_fails(tmp_path):
    with FakeServer("ok") as good, FakeServer("http500") as bad:
        scenario = tmp_path / "urls.toml"
        scenario.write_text(
            'name = "urls"\nmodel = "fake"\nserved_model_name = "fake"\n'
            "[workload]\nnum_prompts = 4\ninput_len = 16\noutput_len = 8\nnum_warmups = 0\n"
            f'[compare]\nstarts = 1\nseed = 0\n[arms.baseline]\nurl = "{good}"\n'
            f'[arms.candidate]\nurl = "{bad}"\n'
        )
        run_dir = tmp_path / "run"
        args = ["compare", "--scenario", str(scenario), "--out-dir", str(run_dir)]
        result = CliRunner().invoke(main, args)
    check("compare-candidate-fails", result)
    doc = json.loads((run_dir / "results.json").read_text())
    assert doc["status"] == "invalid" and doc["exit_code"] == 2
    assert [len(doc["arms"][a]["repeats"]) for a in ("baseline", "candidate")] == [1, 1]
    assert doc["arms"]["baseline"]["repeats"][0]["valid"] is True
    assert "run" in (run_dir / "report.md").read_text()


def _fake_vllm(tmp_path: Path, mode: str) -> str:
    exe = tmp_path / "vllm"
    exe.write_text(f'#!/bin/sh\nexec {sys.executable} -m tests.fake_server --mode {mode} "$@"\n')
    exe.chmod(0o700)
    return str(exe)


def test_a_server_that_never_becomes_healthy_is_stopped_whole(tmp_path, monkeypatch):
    pgids = []
    wait = VllmServer._wait_healthy

    def spy(self):
        pgids.append(self.proc.pid)
        wait(self)

    monkeypatch.setattr(VllmServer, "_wait_healthy", spy)
    spec = ServerSpec(
        name="stuck",
        model="m",
        log_path=tmp_path / "stuck.log",
        vllm_executable=_fake_vllm(tmp_path, "never_healthy"),
        env={"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")},
        startup_timeout_s=3,
    )
    with pytest.raises(ServerError) as info, VllmServer(spec):
        pass
    case = BY_ID["never-healthy"]
    assert case.exit_code == 2 and case.message in str(info.value)
    assert str(spec.log_path) in str(info.value)
    assert pgids and group_members(pgids[0]) == []


def test_a_taken_port_stops_the_start_before_anything_runs(tmp_path, monkeypatch):
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        monkeypatch.setattr(server, "free_port", lambda host="127.0.0.1": port)
        spec = ServerSpec(name="late", model="m", log_path=tmp_path / "late.log")
        with pytest.raises(ServerError) as info:
            VllmServer(spec).start()
    assert BY_ID["port-taken"].message in str(info.value) and str(port) in str(info.value)


def test_url_arms_serving_another_model_name_the_scenario_field_to_fix(tmp_path, server_starts):
    with FakeServer("ok") as url:
        scenario = tmp_path / "urls.toml"
        scenario.write_text(
            'model = "fake"\nserved_model_name = "llama"\n[compare]\nstarts = 1\n'
            f'[arms.baseline]\nurl = "{url}"\n[arms.candidate]\nurl = "{url}"\n'
        )
        args = ["compare", "--scenario", str(scenario), "--out-dir", str(tmp_path / "run")]
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    message = flat(result.output)
    assert f"{scenario}: served_model_name 'llama' is not served at {url}" in message
    assert "it serves fake" in message and "--model" not in message
    assert server_starts == []


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_bench_stopped_by_a_signal_keeps_the_requests_that_finished(sig, tmp_path):
    """SIGTERM (a CI job cancelled) or SIGINT (Ctrl-C; here sent to a job started with SIGINT
    ignored, as a script's background job is): bench stops, writes what finished, exits 2."""
    import signal
    import subprocess
    import time
    import urllib.request

    out = tmp_path / "r.json"
    args = ["--num-prompts", "400", "--num-warmups", "0", "--max-concurrency", "2",
            "--random-input-len", "8", "--random-output-len", "200", "--out", str(out)]  # fmt: skip
    with FakeServer("ok") as url:
        proc = subprocess.Popen(
            [sys.executable, "-m", "perfgate", "bench", "--url", url, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
        try:
            served = 0.0
            deadline = time.monotonic() + 120
            while served < 3 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.2)
                metrics = urllib.request.urlopen(f"{url}/metrics").read().decode()
                line = next(x for x in metrics.splitlines() if "request_success_total" in x)
                served = float(line.split()[-1])
            assert proc.poll() is None, proc.communicate()[0]
            proc.send_signal(getattr(signal, sig))
            output = proc.communicate(timeout=60)[0]
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == BY_ID["bench-signal"].exit_code, output
    assert "interrupted:" in output and "measured requests had finished (kept here)" in output
    assert "Traceback" not in output
    doc = json.loads(out.read_text())
    done = [r for r in doc["records"] if not r["warmup"] and not r["error"]]
    assert len(done) >= 3 and doc["valid"] is False
    assert doc["problems"][0]["kind"] == "interrupted"
