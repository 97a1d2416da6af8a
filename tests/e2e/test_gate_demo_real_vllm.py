"""The nightly gate as a user meets it, with the built-in demo scenario on CPU vLLM: README's
commands ("On CPU, with the built-in demo scenario") word for word, in a fresh folder: an A/A
compare of scenarios/demo-cpu.toml (which colocates its arms), its baseline, and a first night
of the same build; then a second night whose candidate serves two sequences at a time
(`--max-num-seqs=2`, throughput about a third, TTFT tenfold), which must fail that same night
(exit 1, dated night 2, a JUnit failure) instead of waiting for persistence."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.e2e.conftest import ROOT, cpu_server_env, vllm_processes


def readme_commands(after: str) -> list[list[str]]:
    """The perfgate command lines of README's fenced block after the words ``after``."""
    text = (ROOT / "README.md").read_text()
    rest = text[text.index(after) :]
    block = rest[rest.index("```") + 3 :]
    block = block[block.index("\n") + 1 : block.index("```")].replace("\\\n", " ")
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def run(cwd: Path, env: dict[str, str], argv: list[str]) -> subprocess.CompletedProcess[str]:
    assert argv[0] == "perfgate", argv
    return subprocess.run(
        [sys.executable, "-m", "perfgate", *argv[1:]],
        capture_output=True, text=True, timeout=900, cwd=cwd, env=env,
    )  # fmt: skip


def test_the_demo_scenario_is_gated_and_a_collapse_fails_its_first_night(tiny_model, tmp_path):
    before = vllm_processes()
    env = {**os.environ, **cpu_server_env(), "PERFGATE_TINY_MODEL": str(tiny_model)}
    aa, record, gate = readme_commands("On CPU, with the built-in demo scenario:")
    proc = run(tmp_path, env, aa)
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr[-3000:]  # an A/A: never 1
    proc = run(tmp_path, env, record)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "baselines" / "demo-cpu.json").exists()

    # night 1, the same build: the colocated scenario is gated paired, as it was measured
    proc = run(tmp_path, env, [*gate, "--out-dir", "night1"])
    out = proc.stdout + proc.stderr
    assert "tonight runs the reference build beside the candidate (--paired)" in out
    # on this CPU one night's comparison can read a metric worse than its tolerance by noise
    # alone: then it is pending (exit 3), never a failure
    assert proc.returncode in (0, 3), out[-3000:]
    if proc.returncode == 3:
        assert "⏳ **pending**" in (tmp_path / "night1" / "report.md").read_text(), out[-3000:]

    # night 2: a collapse, failed the night it is seen
    slow = [*gate[:-1], "night2", "--candidate-arg=--max-num-seqs=2", "--out-dir", "night2",
            "--junit", "junit.xml"]  # fmt: skip
    proc = run(tmp_path, env, slow)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-4000:]
    report = (tmp_path / "night2" / "report.md").read_text()
    assert "fails the night it is seen" in report and "from night 2" in report, report[:3000]
    assert "Bisect `night1..night2`" in report
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed, ET.tostring(suite)[:2000]
    history = (tmp_path / "reports" / "demo-cpu.jsonl").read_text().splitlines()
    assert len(history) == 2
    assert vllm_processes() - before == set()
