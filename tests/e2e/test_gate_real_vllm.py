"""``perfgate gate``, the nightly job, against real CPU vLLM servers: a baseline recorded on
this machine, a history of earlier nights (tests/fixtures/nightly: real nights of the same
scenario), and two real nights of a build that regressed: the gate fails on the night the
change has persisted for [gate] min_nights (3), naming its first night and the commits."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

from tests.e2e.conftest import ROOT, perfgate, vllm_processes

SCENARIO = str(ROOT / "tests" / "e2e" / "nightly-cpu.toml")
FIXTURE = ROOT / "tests" / "fixtures" / "nightly" / "history-7-nights.jsonl"


def gate(tmp_path, base, history, night, *extra):
    return perfgate(
        "gate",
        "--scenario",
        SCENARIO,
        "--baseline",
        str(base),
        "--history",
        str(history),
        "--commit",
        f"reg{night}",
        "--date",
        f"2026-11-0{night}",
        "--out-dir",
        str(tmp_path / f"n{night}"),
        "--junit",
        str(tmp_path / f"n{night}.xml"),
        *extra,
    )


def test_the_gate_fails_once_a_regression_persists_and_names_when_it_began(tiny_model, tmp_path):
    before = vllm_processes()
    aa = tmp_path / "aa"
    proc = perfgate("compare", "--scenario", SCENARIO, "--skip-accuracy", "--out-dir", str(aa))
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr[-3000:]
    base = tmp_path / "baseline.json"
    proc = perfgate("baseline", "record", str(aa / "results.json"), "--out", str(base))
    assert proc.returncode == 0, proc.stderr
    stored = json.loads(base.read_text())
    assert stored["schema"] == "perfgate.baseline/1"
    assert all(len(m["per_start"]) == 2 for m in stored["metrics"].values())

    # the same baseline on another machine is refused before any server starts
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**stored, "machine": {**stored["machine"], "cpu": "Elsewhere"}}))
    proc = gate(tmp_path, other, tmp_path / "unused.jsonl", 8)
    assert proc.returncode == 2
    assert "recorded on another machine or scenario (cpu: the baseline has 'Elsewhere'" in (
        proc.stderr
    )
    assert not (tmp_path / "unused.jsonl").exists()

    # six unchanged nights, then the first with --max-num-seqs=2 (real runs: the fixture)
    history = tmp_path / "history.jsonl"
    shutil.copy(FIXTURE, history)
    slow = "--candidate-arg=--max-num-seqs=2"
    eighth = gate(tmp_path, base, history, 8, slow)
    assert eighth.returncode == 3, eighth.stdout + eighth.stderr[-3000:]  # not yet persisting
    ninth = gate(tmp_path, base, history, 9, slow)
    assert ninth.returncode == 1, ninth.stdout + ninth.stderr[-3000:]
    assert len(history.read_text().splitlines()) == 9
    report = (tmp_path / "n9" / "report.md").read_text()
    assert "❌ **regressed**" in report
    assert "from night 7 (2026-11-07) on, 3 nights. Bisect `aa6..reg7`." in report
    eighth_report = (tmp_path / "n8" / "report.md").read_text()
    assert "beyond its tolerance for 2 of the 3 nights it must persist" in eighth_report
    # the trend chart of each gated metric, linked from the report
    assert (tmp_path / "n9" / "trend-median_ttft_ms.png").read_bytes().startswith(b"\x89PNG")
    assert "[trend-median_ttft_ms](trend-median_ttft_ms.png)" in report
    suite = ET.parse(tmp_path / "n9.xml").getroot()
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed and "median_ttft_ms" in failed  # requests queue for 2 slots: TTFT grows
    assert vllm_processes() - before == set()
