"""Every benchmark script the docs tell a user to run still starts as written: the ones that
need a server answer --help (their imports resolve: a module moved under them once broke one
silently), the offline ones run on the stored data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def script(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "name",
    ["crosscheck_vllm_bench", "decision_rule", "fidelity", "gpu_noise", "nightly_changepoints"],
)
def test_each_benchmark_starts(name):
    proc = script(f"benchmarks/{name}.py", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {name}.py")


def test_the_offline_benchmarks_print_their_tables():
    noise = script("benchmarks/gpu_noise.py")  # docs/gpu.md: the stored H200 runs
    assert noise.returncode == 0, noise.stderr
    assert "| baseline |" in noise.stdout and "| candidate |" in noise.stdout
    nights = script("benchmarks/nightly_changepoints.py", "--runs", "1", "--nights", "24")
    assert nights.returncode == 0, nights.stderr
    rows = [line for line in nights.stdout.splitlines() if line.startswith("| GPU time")]
    assert len(rows) == 2 and all(line.count("|") == 13 for line in rows)


def test_the_fidelity_benchmark_runs_in_its_quick_mode():
    """docs/fidelity.md's benchmark, shrunk: one concurrency, a few hundred events, one round;
    every reader times the scripted stream and the ceiling table prints."""
    proc = script(
        "benchmarks/fidelity.py", "--concurrency", "8", "--ceiling-concurrency", "16",
        "--events", "400", "--rounds", "1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| 8 |")]
    assert [r.split("|")[2].strip() for r in rows] == ["perfgate", "vllm", "floor"]
    for row in rows:
        events = int(row.split("|")[3])
        assert events == 400, row  # every scripted event was read and timed
    assert "Ceiling:" in proc.stdout


def test_the_decision_rule_simulation_runs_in_its_smoke_mode():
    """docs/statistics.md's tables, a handful of runs per cell: every table prints a row per
    cell (the numbers are noise at this size; that the simulation still runs is the point)."""
    proc = script("benchmarks/decision_rule.py", "--runs", "10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert out.count("| cpu budget 3 (compare-cpu) |") == 5  # one row per true change
    assert out.count("| cpu budget 4 (demo-cpu), start noise 8% |") == 5
    assert "Re-running inconclusive A/A runs" in out and "Accuracy alone" in out
    assert "Guards, scenarios/gpt-oss-120b.toml" in out
