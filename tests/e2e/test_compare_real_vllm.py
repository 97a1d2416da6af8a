"""``perfgate compare`` on the e2e tests' scenario (tests/e2e/compare-cpu.toml): real CPU vLLM
servers, started and stopped."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from perfgate.documents.kernels import BUILTIN_PATTERNS, CPU_GEMM
from tests.e2e.conftest import ROOT, cpu_server_env, perfgate, vllm_processes, wait_until
from tests.fault_cases import BY_ID

SCENARIO = "tests/e2e/compare-cpu.toml"
CPU_GEMM_REGEX = BUILTIN_PATTERNS[CPU_GEMM][0]


def compare(run_dir, *args, scenario=SCENARIO):
    """``perfgate compare`` of ``scenario`` into ``run_dir``, with extra flags."""
    return perfgate("compare", "--scenario", str(scenario), "--out-dir", str(run_dir), *args)


def results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def test_identical_arms_never_regress(tiny_model, tmp_path):
    # the demo, with a profiled window on every start and a gate on its CPU operator time
    # per decode step
    scenario = tmp_path / "aa.toml"
    text = (ROOT / SCENARIO).read_text()
    text = text.replace("[thresholds]\n", "[thresholds]\ndevice_time_per_step_us = 0.25\n")
    text = text.replace("[profile]\nenabled = false", "[profile]\nenabled = true")
    assert "device_time_per_step_us" in text and "enabled = true" in text
    scenario.write_text(text)
    run_dir = tmp_path / "aa"
    proc = compare(run_dir, scenario=scenario)
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr[-3000:]
    doc = results(run_dir)
    assert doc["status"] == "complete" and doc["verdict"] in ("pass", "inconclusive")
    # the default budget: rounds of one start per arm, 2 repeats each, until decided or 3
    rounds = len(doc["arms"]["baseline"]["servers"])
    assert rounds in (2, 3) and len(doc["arms"]["candidate"]["servers"]) == rounds
    for arm in ("baseline", "candidate"):
        starts = [r["start"] for r in doc["arms"][arm]["repeats"]]
        assert starts == [s for s in range(rounds) for _ in range(2)]
    looks = doc["design"]["looks"]
    assert [x["starts"] for x in looks] == list(range(2, rounds + 1))
    assert all(x["verdict"] == "inconclusive" for x in looks[:-1])  # it stops once decided
    assert doc["design"]["seed"] is not None  # drawn and recorded
    assert all(r["valid"] for a in doc["arms"].values() for r in a["repeats"])
    # each arm compiled into a vLLM cache of its own, removed with the run's end
    roots = {a: doc["arms"][a]["servers"][0]["env"]["VLLM_CACHE_ROOT"] for a in doc["arms"]}
    assert roots["baseline"] != roots["candidate"]
    assert not (run_dir / "vllm-cache").exists()
    report = (run_dir / "report.md").read_text()
    assert "## perfgate: compare-cpu" in report and "| Median TPOT (ms) |" in report
    assert f"the server start ({rounds} baseline, {rounds} candidate)" in report
    assert all(Path(s["log"]).exists() for a in doc["arms"].values() for s in a["servers"])
    # The accuracy phase ran through real lm-eval on both arms, question by question.
    accuracy = doc["accuracy"]
    for arm in ("baseline", "candidate"):
        rows = accuracy["arms"][arm]
        assert len(rows["questions"]) == 24 and all(len(r) == 2 for r in rows["correct"])
        assert len(rows["samples"]) == 48 and all(
            s["response"] is not None for s in rows["samples"]
        )
        assert (run_dir / f"accuracy-{arm}" / "samples.json").exists()
    assert accuracy["arms"]["baseline"]["questions"] == accuracy["arms"]["candidate"]["questions"]
    assert accuracy["comparison"]["n_questions"] == 24
    assert "**Accuracy** (GPQA via lm-eval, bundled synthetic" in report
    # Every start ended with a profiled window (after its repeats): CPU operator time per
    # decode step at the window's batch (its 4 requests), one value per start, gated.
    windows = doc["profile"]["windows"]
    for arm in ("baseline", "candidate"):
        assert [w["start"] for w in windows[arm]] == list(range(rounds))
        for w, server in zip(windows[arm], doc["arms"][arm]["servers"], strict=True):
            assert w["source"] == "cpu_op" and w["batch"] == 4 and w["decode_steps"] > 0
            assert w["time_per_step_us"] > 0 and w["kernels"]
            trace_dir = Path(server["log"]).with_name(Path(server["log"]).stem + "-trace")
            assert [str(p) for p in sorted(trace_dir.glob("*.pt.trace.json*"))] == w["traces"]
    row = {r["metric"]: r for r in doc["comparison"]}["device_time_per_step_us"]
    assert row["n_baseline"] == row["n_candidate"] == rounds
    assert row["verdict"] != "regressed"
    per_start = [w["time_per_step_us"] for w in windows["baseline"]]
    assert row["baseline"] == pytest.approx(math.exp(statistics.fmean(map(math.log, per_start))))
    assert doc["profile"]["kernels"]["starts"] == [rounds, rounds]
    checks = doc["profile"]["checks"]
    assert len(checks) == 2 * rounds and all(c["ok"] for c in checks)  # one per start and arm
    assert "**Kernel profile**: a profiled window at the end of every server start" in report
    assert "**CPU operator changes per decode step**" in report
    assert "| Device time per decode step (us) |" in report


# A genuinely slower candidate (--max-num-seqs=2) caught as a regression: the demo's
# `make demo-regression`, tests/e2e/test_demo_real_vllm.py.


def test_candidate_that_cannot_start_fails_with_its_log_and_keeps_the_baseline(
    tiny_model, tmp_path
):
    run_dir = tmp_path / "broken"
    proc = compare(run_dir, "--candidate-arg=--no-such-flag", "--seed", "0")  # baseline first
    case = BY_ID["exits-during-start-up"]
    assert proc.returncode == case.exit_code
    assert case.message in proc.stderr
    assert "no-such-flag" in proc.stderr  # its log tail
    assert str(run_dir / "candidate-2.log") in proc.stderr
    doc = results(run_dir)
    assert doc["status"] == "failed" and doc["exit_code"] == 2
    assert len(doc["arms"]["baseline"]["repeats"]) == 1  # measured before the failure, kept
    assert "run failed" in (run_dir / "report.md").read_text()


def test_ctrl_c_mid_run_leaves_no_vllm_process(tiny_model, tmp_path):
    before = vllm_processes()
    run_dir = tmp_path / "interrupted"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "perfgate",
            "compare",
            "--scenario",
            SCENARIO,
            "--out-dir",
            str(run_dir),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **cpu_server_env()},
    )
    try:
        # Interrupt once the server has forked its engine: mid start-up, with a process tree.
        wait_until(
            lambda: len(vllm_processes() - before) >= 2, 300, "the API server and its engine"
        )
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    case = BY_ID["ctrl-c-during-start-up"]
    assert proc.returncode == case.exit_code
    assert case.message in err
    assert vllm_processes() - before == set(), "no server process survives Ctrl-C"
    assert results(run_dir)["status"] == "interrupted"


def test_profile_shows_kernel_tables_and_a_kernel_that_never_ran_invalidates_the_run(
    tiny_model, tmp_path
):
    scenario = tmp_path / "profiled.toml"
    text = (
        (ROOT / SCENARIO)
        .read_text()
        .replace(
            '[profile.candidate]\nexpect_kernels = ["builtin:cpu-gemm"]',
            '[profile.candidate]\nexpect_kernels = ["builtin:cpu-gemm", '
            '"tinygemm|gpt_oss_router_gemm"]',
        )
    )
    assert "tinygemm" in text
    scenario.write_text(text)
    run_dir = tmp_path / "prof"
    proc = compare(
        run_dir,
        "--profile",
        "--starts",
        "1",
        "--repeats-per-start",
        "1",
        "--no-accuracy",
        "--seed",
        "0",  # the baseline's window first: both arms' checks are recorded
        scenario=scenario,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr[-3000:]
    assert (
        "candidate: no CPU operator matching 'tinygemm|gpt_oss_router_gemm' ran during the "
        "profiled workload"
    ) in proc.stderr
    assert "the change under test did not execute" in proc.stderr
    doc = results(run_dir)
    assert doc["status"] == "invalid"
    checks = {(c["arm"], c["pattern"]): c for c in doc["profile"]["checks"]}
    gemm = ("baseline", "builtin:cpu-gemm")
    assert checks[gemm]["ok"] and checks[gemm]["calls"]  # whichever GEMM this CPU runs
    assert checks[("candidate", "builtin:cpu-gemm")]["ok"]
    assert not checks[("candidate", "tinygemm|gpt_oss_router_gemm")]["ok"]
    for arm in ("baseline", "candidate"):
        table = doc["profile"]["arms"][arm]
        assert table["source"] == "cpu_op" and table["rows"]
        (window,) = doc["profile"]["windows"][arm]  # the start's window, after its repeats
        assert window["traces"] and all(Path(t).exists() for t in window["traces"])
    report = (run_dir / "report.md").read_text()
    assert "**Kernel profile**" in report and "❌ **fail**" in report and "✅ pass" in report
    gemms = [r["name"] for r in doc["profile"]["arms"]["baseline"]["rows"]]
    assert any(re.search(CPU_GEMM_REGEX, name) for name in gemms)
    # what was measured before the assertion failed is kept
    assert [len(doc["arms"][a]["repeats"]) for a in ("baseline", "candidate")] == [1, 1]
