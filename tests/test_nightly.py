"""The nightly gate's parts: the history file, change points and the rule, stored baselines
and their fingerprints, JUnit output. (The gate end to end: tests/e2e/test_gate_real_vllm.py.)"""

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from perfgate import baseline as bl
from perfgate.history import (
    ChangeRule,
    Night,
    NightMetric,
    append_night,
    change_points,
    detect,
    noise_sigma,
    read_history,
)
from perfgate.report.gate import write_junit
from perfgate.results import ResultError, read_json

ROOT = Path(__file__).resolve().parents[1]
GPU_RUNS = ROOT / "docs" / "gpu" / "results"


def night(i, ratio, metric="median_tpot_ms"):
    m = NightMetric(ratio, ratio, math.nan, math.nan, "no change", 2)
    return Night(f"2026-12-{i:02d}", f"c{i}", {"gpu": "none"}, {metric: m}, "pass", f"run{i}")


def test_history_is_appended_one_line_per_night_and_read_back(tmp_path):
    path = tmp_path / "h.jsonl"
    assert read_history(path) == []
    append_night(path, night(1, 1.0))
    append_night(path, night(2, 1.01))
    assert len(path.read_text().splitlines()) == 2
    (a, b) = read_history(path)
    assert a.commit == "c1" and b.metrics["median_tpot_ms"].ratio == pytest.approx(1.01)
    assert b.metrics["median_tpot_ms"].low is None  # NaN is stored as null
    path.write_text(path.read_text() + '{"schema": "other"}\n')
    with pytest.raises(ResultError, match=r"h\.jsonl:3: schema 'other'"):
        read_history(path)


def test_a_step_is_found_where_it_is_and_an_aa_series_has_none():
    rng = np.random.default_rng(1)
    aa = rng.normal(0, 0.005, 20)
    rule = ChangeRule(min_nights=3, penalty=6.0)
    assert change_points(aa, rule) == []
    step = np.r_[aa[:10], aa[10:] + math.log(1.05)]
    assert change_points(step, rule) == [10]
    # the noise estimate barely moves with one step in the series
    assert noise_sigma(step) == pytest.approx(noise_sigma(aa), rel=0.3)


def test_a_regression_counts_once_it_persists_and_names_the_first_night_and_commits():
    rule = ChangeRule(min_nights=3, penalty=6.0)
    ratios = [1.0, 1.002, 0.998, 1.001, 0.999, 1.0, 1.06, 1.061, 1.059]
    nights = [night(i + 1, r) for i, r in enumerate(ratios)]
    tol = {"median_tpot_ms": (0.02, False)}
    early = detect(nights[:8], tol, rule)  # two nights after: pending, not yet regressed
    assert early.regressed == [] and [c.night for c in early.pending] == [6]
    d = detect(nights, tol, rule)
    (c,) = d.regressed
    assert c.night == 6 and c.first_date == "2026-12-07" and c.commits == ("c6", "c7")
    assert c.step == pytest.approx(0.06, abs=0.002) and c.nights_after == 3
    # higher is better: the same step is an improvement, not a regression
    assert detect(nights, {"median_tpot_ms": (0.02, True)}, rule).regressed == []
    # within tolerance: a change point, not a regression
    small = [night(i + 1, r) for i, r in enumerate([1.0] * 6 + [1.01] * 3)]
    d = detect(small, tol, ChangeRule(min_nights=3, penalty=6.0, sigma=0.001))
    assert d.changes and not d.regressed


def test_a_baseline_from_a_stored_run_carries_per_start_values_and_the_machine():
    doc = read_json(GPU_RUNS / "h200-aa-pinning.json.xz")
    b = bl.from_run(doc, "baseline", "aa.json")
    assert b.machine["gpu"] == "NVIDIA H200 x2"
    assert b.machine["driver"] == "580.159.04" and b.machine["cuda"]
    assert len(b.metrics["device_time_per_step_us"].per_start) == 6
    assert b.metrics["device_time_per_step_us"].cv < 0.005
    assert b.software["vllm"] == "0.26.0"
    again = bl.Baseline.from_json(json.loads(json.dumps(b.to_json())), "x")
    assert again.metrics["median_tpot_ms"].per_start == b.metrics["median_tpot_ms"].per_start
    # merging another run of the same machine and scenario adds its starts
    merged = bl.merge(b, bl.from_run(doc, "candidate", "aa.json"), "b.json")
    assert len(merged.metrics["median_tpot_ms"].per_start) == 12


def test_a_baseline_from_another_machine_is_refused_naming_the_field():
    doc = read_json(GPU_RUNS / "h200-aa-pinning.json.xz")
    b = bl.from_run(doc, "baseline", "aa.json")
    other = bl.from_run(doc, "candidate", "x")
    other.machine = {**other.machine, "gpu": "NVIDIA H100 80GB HBM3 x1"}
    with pytest.raises(ResultError, match="gpu: the baseline has 'NVIDIA H200 x2', this run"):
        bl.merge(b, other, "b.json")
    assert bl.mismatch(b.machine, b.machine) is None
    # an incomplete run is not a baseline
    with pytest.raises(ResultError, match="did not complete"):
        bl.from_run(read_json(GPU_RUNS / "h200-broken-plugin-windows.json.xz"), "candidate", "x")


def test_junit_has_a_case_per_gated_metric_and_assertion_and_fails_the_regressed(tmp_path):
    doc = read_json(GPU_RUNS / "h200-tiled-plugin.json.xz")
    path = tmp_path / "out" / "junit.xml"
    write_junit(path, None, doc, "tiled")
    suite = ET.parse(path).getroot()
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) >= {"device_time_per_step_us", "median_tpot_ms", "output_throughput"}
    assert cases["device_time_per_step_us"].find("failure") is not None
    assert cases["median_tpot_ms"].find("skipped") is not None  # inconclusive
    kernel_cases = [c for c in suite.iter("testcase") if c.get("classname") == "perfgate.kernel"]
    assert kernel_cases and all(c.find("failure") is None for c in kernel_cases)
    assert suite.get("failures") == "1" and int(suite.get("tests")) == len(cases)
