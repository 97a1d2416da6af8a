"""The README's first command as a user runs it: ``make demo`` (an A/A of the taught tiny model
on CPU vLLM, with GPQA through lm-eval) and ``make demo-regression`` (the same with a
candidate serving two sequences at a time), in this checkout, whose set-up ``make test`` has
done. Neither gets the tests' server settings: only what the scenario and the Makefile give.

The A/A must never regress, and both arms must answer (the taught model is right ~70% of the
time, so accuracy means something); whether it ends "pass" depends on this machine's noise
(benchmarks/decision_rule.py: ~95% at a start noise of 8%), so the test prints the verdict and
the time but does not require the pass. The regression must be caught: make succeeds only
when perfgate exits 1."""

from __future__ import annotations

import json
import os
import subprocess
import time

from tests.e2e.conftest import ROOT, vllm_processes


def make(target: str, out_dir, tiny_model) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    env["PERFGATE_TINY_MODEL"] = str(tiny_model)  # the session's model, taught beside it
    began = time.monotonic()
    proc = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), target, f"DEMO_ARGS=--out-dir {out_dir}"],
        capture_output=True, text=True, timeout=1200, env=env,
    )  # fmt: skip
    return proc, time.monotonic() - began


def test_make_demo_decides_an_aa_with_a_model_that_answers(tiny_model, tmp_path):
    before = vllm_processes()
    proc, took = make("demo", tmp_path / "demo", tiny_model)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert doc["status"] == "complete" and doc["verdict"] in ("pass", "inconclusive")
    accuracy = doc["accuracy"]
    for arm in ("baseline", "candidate"):
        answers = accuracy["arms"][arm]
        assert len(answers["questions"]) == 24 and all(len(r) == 8 for r in answers["correct"])
        right = sum(map(sum, answers["correct"])) / (24 * 8)
        assert right > 0.3, (arm, right)  # taught to ~70%; a random model scores ~0
    assert accuracy["comparison"]["verdict"] != "regressed"
    rows = {r["metric"]: r["verdict"] for r in doc["comparison"]}
    assert "regressed" not in rows.values(), rows
    report = (tmp_path / "demo" / "report.md").read_text()
    assert report.startswith("## perfgate: demo-cpu")
    print(f"make demo: {doc['verdict']} in {took:.0f} s ({rows})")
    assert vllm_processes() - before == set()


def test_make_demo_regression_catches_the_slower_candidate(tiny_model, tmp_path):
    before = vllm_processes()
    proc, took = make("demo-regression", tmp_path / "slow", tiny_model)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "caught (exit 1), as it should be" in proc.stdout
    doc = json.loads((tmp_path / "slow" / "results.json").read_text())
    assert doc["verdict"] == "regressed"
    rows = {r["metric"]: r for r in doc["comparison"]}
    ttft, throughput = rows["median_ttft_ms"], rows["output_throughput"]
    assert ttft["estimate"] > 3 and throughput["estimate"] < -0.3
    regressed = [r for r in (ttft, throughput) if r["verdict"] == "regressed"]
    assert regressed, (ttft, throughput)
    for r in regressed:  # worse beyond the tolerance over the whole interval, not noise
        worse_low = -r["high"] if r["higher_is_better"] else r["low"]
        assert worse_low > r["tolerance"], r
    report = (tmp_path / "slow" / "report.md").read_text()
    assert "❌ **regressed**" in report and "--max-num-seqs=2" in report
    print(f"make demo-regression: caught in {took:.0f} s")
    assert vllm_processes() - before == set()
