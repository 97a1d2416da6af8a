"""The real-vLLM faults of ``tests/fault_cases.py``: a server killed mid-repeat, and Ctrl-C
during the accuracy and the profile phases. Each asserts the case's exit code and message,
what results.json kept, and that no vLLM process of this test session is left."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading

from tests.e2e.conftest import ROOT, cpu_server_env, own_processes, vllm_processes, wait_until
from tests.fault_cases import BY_ID, REAL

SCENARIO = "tests/e2e/compare-cpu.toml"


class Run:
    """``perfgate compare`` in the background, its stderr collected line by line."""

    def __init__(self, run_dir, *args):
        self.run_dir = run_dir
        self.lines: list[str] = []
        argv = ["compare", "--scenario", SCENARIO, "--out-dir", str(run_dir), *args]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "perfgate", *argv],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **cpu_server_env()},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout_s: float = 600) -> re.Match:
        rx = re.compile(pattern)
        found: list[re.Match] = []

        def seen():
            found[:] = [m for line in list(self.lines) if (m := rx.search(line))]
            return bool(found) or self.proc.poll() is not None

        wait_until(seen, timeout_s, f"a line matching {pattern!r}")
        assert found, f"perfgate ended before {pattern!r}:\n{''.join(self.lines)[-3000:]}"
        return found[0]

    def finish(self, timeout_s: float = 300) -> str:
        try:
            self.proc.wait(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self._reader.join(10)
        return "".join(self.lines)

    def results(self):
        return json.loads((self.run_dir / "results.json").read_text())


def assert_case(case_id, returncode, stderr):
    case = BY_ID[case_id]
    assert case.against == REAL
    assert returncode == case.exit_code, stderr[-3000:]
    assert case.message in " ".join(stderr.split()), stderr[-3000:]
    assert "Traceback" not in stderr


def test_a_server_killed_mid_repeat_is_named_and_the_baseline_kept(tiny_model, tmp_path):
    before = vllm_processes()
    # one round, baseline first (seed 0): repeats B C C B on both servers
    run = Run(tmp_path / "killed", "--starts", "1", "--seed", "0", "--no-accuracy")
    port = run.wait_for(r"\[candidate\] healthy at http://127\.0\.0\.1:(\d+)").group(1)
    run.wait_for(r"\[candidate\] repeat 1, start 1")
    (api_server,) = [
        pid for pid, cmd in own_processes().items() if re.search(rf"--port {port}\b", cmd)
    ]
    os.kill(api_server, signal.SIGKILL)
    stderr = run.finish()
    assert_case("killed-mid-repeat", run.proc.returncode, stderr)
    assert str(tmp_path / "killed" / "candidate-2.log") in stderr
    doc = run.results()
    assert doc["status"] == "failed" and doc["exit_code"] == 2
    assert (
        len(doc["arms"]["baseline"]["repeats"]) == 1
        and doc["arms"]["baseline"]["repeats"][0]["valid"]
    )
    assert (tmp_path / "killed" / "report.md").exists()
    assert vllm_processes() - before == set(), "no server process survives"


def test_ctrl_c_during_accuracy_keeps_every_timed_repeat(tiny_model, tmp_path):
    before = vllm_processes()
    run = Run(tmp_path / "acc", "--starts", "1", "--repeats-per-start", "1", "--seed", "0")
    run.wait_for(r"\[baseline\] accuracy: GPQA")
    run.proc.send_signal(signal.SIGINT)
    stderr = run.finish()
    assert_case("ctrl-c-during-accuracy", run.proc.returncode, stderr)
    doc = run.results()
    assert doc["status"] == "interrupted"
    assert [len(doc["arms"][a]["repeats"]) for a in ("baseline", "candidate")] == [1, 1]
    assert vllm_processes() - before == set(), "no server process survives Ctrl-C"


def test_ctrl_c_during_profiling_keeps_every_timed_repeat(tiny_model, tmp_path):
    before = vllm_processes()
    run = Run(
        tmp_path / "prof",
        "--starts",
        "1",
        "--repeats-per-start",
        "1",
        "--seed",
        "0",
        "--no-accuracy",
        "--profile",
    )
    # both arms' timed repeats ran (a colocated round), then the profiled windows
    run.wait_for(r"\[baseline\] profiled window: \d+ requests under the torch profiler")
    run.proc.send_signal(signal.SIGINT)
    stderr = run.finish()
    assert_case("ctrl-c-during-profiling", run.proc.returncode, stderr)
    doc = run.results()
    assert doc["status"] == "interrupted"
    assert [len(doc["arms"][a]["repeats"]) for a in ("baseline", "candidate")] == [1, 1]
    assert vllm_processes() - before == set(), "no server process survives Ctrl-C"
