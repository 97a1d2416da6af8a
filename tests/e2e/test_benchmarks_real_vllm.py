"""The benchmark script behind docs/crosscheck.md, in its quick mode against the shared CPU vLLM
server: `vllm bench serve` and `perfgate bench` both run, and the table compares what they
measured (the claim that perfgate's numbers can be checked against vLLM's own client needs a
command that works)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.e2e.conftest import ROOT, cpu_server_env


def test_the_crosscheck_runs_both_clients_against_one_server(vllm_server, tiny_model, tmp_path):
    out = tmp_path / "crosscheck.md"
    proc = subprocess.run(
        [sys.executable, "benchmarks/crosscheck_vllm_bench.py", "--url", vllm_server.url,
         "--model", "tiny", "--tokenizer", str(tiny_model), "--rounds", "1",
         "--num-prompts", "8", "--input-len", "64", "--output-len", "32",
         "--markdown", str(out), "--keep", str(tmp_path / "raw")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, **cpu_server_env()},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    table = out.read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()}
    for label in ("Output token throughput (tok/s)", "Median TPOT (ms)", "Median TTFT (ms)"):
        cells = [c.strip() for c in rows[label].strip("|").split("|")]
        vllm_median = float(cells[1].split()[0])
        perfgate_median = float(cells[2].split()[0])
        assert vllm_median > 0 and perfgate_median > 0, rows[label]
    # both tools wrote their own result files: each was really run
    assert sorted(p.name for p in (tmp_path / "raw").glob("*.json")) == ["p0.json", "v0.json"]
