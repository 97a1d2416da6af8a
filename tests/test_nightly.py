"""The nightly gate's parts: the history file, change points and the rule, stored baselines
and their fingerprints, JUnit output. (The gate end to end: tests/e2e/test_gate_real_vllm.py.)"""

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from perfgate import baseline as bl
from perfgate.documents.io import ResultError, read_json
from perfgate.documents.nightly import Baseline, Night, NightMetric
from perfgate.documents.run import CompareRun
from perfgate.documents.spec import ChangeRule
from perfgate.history import append_night, change_points, detect, noise_sigma, read_history
from perfgate.report.gate import write_junit

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
    again = Baseline.from_json(json.loads(json.dumps(b.to_json())), "x")
    assert again.metrics["median_tpot_ms"].per_start == b.metrics["median_tpot_ms"].per_start
    # merging another run of the same machine and scenario adds its starts
    merged = bl.merge(b, bl.from_run(doc, "candidate", "aa.json"), "b.json")
    assert len(merged.metrics["median_tpot_ms"].per_start) == 12
    # its identity (what a night's ratios are relative to) survives a reading, not a merge
    assert again.identity == b.identity and merged.identity != b.identity


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
    write_junit(path, None, CompareRun.from_json(doc), "tiled")
    suite = ET.parse(path).getroot()
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) >= {"device_time_per_step_us", "median_tpot_ms", "output_throughput"}
    assert cases["device_time_per_step_us"].find("failure") is not None
    assert cases["median_tpot_ms"].find("skipped") is not None  # inconclusive
    kernel_cases = [c for c in suite.iter("testcase") if c.get("classname") == "perfgate.kernel"]
    assert kernel_cases and all(c.find("failure") is None for c in kernel_cases)
    assert suite.get("failures") == "1" and int(suite.get("tests")) == len(cases)


def with_answers(doc, correct_by_arm, **spec):
    """A stored compare document given GPQA answers per arm (the CPU tests' stand-in for a run
    that measured accuracy; the e2e nightly test measures them on CPU vLLM)."""
    from perfgate.documents.eval import AccuracySpec, ArmAccuracy

    n = len(next(iter(correct_by_arm.values())))
    questions = [f"q{i}" for i in range(n)]
    arms = {
        arm: ArmAccuracy("bundled", "gpqa", 1, questions, rows, samples=[{"text": "reasoning"}])
        for arm, rows in correct_by_arm.items()
    }
    given = AccuracySpec(**spec)
    return {
        **doc,
        "scenario": {**doc["scenario"], "accuracy": given.to_json()},
        "accuracy": {
            "spec": given.to_json(),
            "arms": {a: x.to_json() for a, x in arms.items()},
            "comparison": None,
        },
    }


def test_a_baseline_keeps_the_arms_answers_per_question_not_their_texts():
    answers = {"baseline": [[1], [0], [1]], "candidate": [[0], [0], [1]]}
    doc = with_answers(read_json(GPU_RUNS / "h200-aa-pinning.json.xz"), answers, k=1)
    b = bl.from_run(doc, "candidate", "aa.json")
    assert b.accuracy is not None
    spec, arm = b.accuracy.spec, b.accuracy.arm
    assert spec.k == 1 and arm.correct == [[0], [0], [1]] and arm.samples == []
    again = Baseline.from_json(json.loads(json.dumps(b.to_json())), "x")
    assert again.accuracy == b.accuracy
    # a later run without accuracy keeps the stored answers; one with accuracy replaces them
    plain = bl.from_run(read_json(GPU_RUNS / "h200-aa-pinning.json.xz"), "baseline", "x")
    assert plain.accuracy is None
    assert bl.merge(b, plain, "b.json").accuracy == b.accuracy
    merged = bl.merge(plain, b, "b.json").accuracy
    assert merged is not None and merged.arm.correct[0] == [0]
    broken = {**b.to_json(), "accuracy": {"spec": {"k": 1}, "arm": {"questions": ["q0"]}}}
    with pytest.raises(ResultError, match="x: accuracy is not a stored GPQA result"):
        Baseline.from_json(broken, "x")


def test_the_gate_judges_tonights_answers_against_the_stored_ones_before_anything_runs():
    from dataclasses import replace

    from perfgate.documents.eval import AccuracySpec
    from perfgate.documents.run import CompareRun
    from perfgate.documents.spec import ScenarioError
    from perfgate.run.gate import check_reference_accuracy

    doc = read_json(GPU_RUNS / "h200-aa-pinning.json.xz")
    scenario = CompareRun.from_json(doc).scenario
    tonight = replace(scenario, accuracy=AccuracySpec(k=1, temperature=0.0))
    plain = bl.from_run(doc, "baseline", "x")
    with pytest.raises(ScenarioError, match=r"b\.json stores no accuracy answers"):
        check_reference_accuracy(tonight, plain, Path("b.json"))
    stored = bl.from_run(with_answers(doc, {"baseline": [[1]] * 4}, k=1), "baseline", "x")
    check_reference_accuracy(tonight, stored, Path("b.json"))  # measured alike: no error
    other = replace(tonight, accuracy=replace(tonight.accuracy, max_tokens=64))
    with pytest.raises(ScenarioError, match=r"\[accuracy\] max_tokens = 1024, tonight's .* 64"):
        check_reference_accuracy(other, stored, Path("b.json"))


def test_an_accuracy_drop_regresses_the_night_it_is_seen_and_an_undecided_one_holds_a_pass():
    from perfgate.decide.accuracy import compare_arms
    from perfgate.decide.nightly import decide_night
    from perfgate.documents.eval import AccuracySpec, ArmAccuracy
    from perfgate.documents.nightly import Detection
    from perfgate.documents.run import CompareRun

    spec = AccuracySpec(k=1, temperature=0.0, max_drop=0.02)

    def answers(rows):
        return ArmAccuracy("bundled", "t", 1, [f"q{i}" for i in range(len(rows))], rows)

    calm = night(1, 1.0)
    scenario = CompareRun.from_json(read_json(GPU_RUNS / "h200-aa-pinning.json.xz")).scenario
    dropped = compare_arms(answers([[1]] * 60), answers([[1]] * 30 + [[0]] * 30), spec)
    verdict, reason = decide_night(calm, Detection(), scenario.gate, dropped)
    assert verdict == "regressed" and "50.0% against the baseline's 100.0%" in reason
    assert "counts the night it is seen" in reason
    few = compare_arms(answers([[1], [0], [1], [0]]), answers([[0], [1], [1], [0]]), spec)
    assert few.verdict == "inconclusive"  # 4 questions cannot rule out a 2-point drop
    assert decide_night(calm, Detection(), scenario.gate, few)[0] == "inconclusive"
    assert decide_night(calm, Detection(), scenario.gate, None)[0] == "pass"
    same = compare_arms(answers([[1]] * 60), answers([[1]] * 60), spec)
    assert (
        same.verdict == "no change"
        and decide_night(calm, Detection(), scenario.gate, same)[0] == "pass"
    )


def test_a_history_cut_short_is_refused_before_the_run_with_the_line_and_a_repair(tmp_path):
    """A crash mid-append leaves a last line without its end: the next night must not be glued
    onto it (every later gate would fail after its whole run), so the file is checked first."""
    from perfgate.history import check_history

    path = tmp_path / "h.jsonl"
    append_night(path, night(1, 1.0))
    append_night(path, night(2, 1.0))
    whole = path.read_text()
    path.write_text(whole + whole.splitlines()[0][:40])  # night 3 cut short
    with pytest.raises(ResultError, match=r"h\.jsonl:3: .*cut short.*sed -i '3d'"):
        check_history(path)
    path.write_text(whole)
    check_history(path)  # a sound file passes, and so does a missing one
    check_history(tmp_path / "new.jsonl")


def test_a_history_that_cannot_be_read_or_written_is_refused_before_the_run(tmp_path):
    from perfgate.history import check_history

    path = tmp_path / "h.jsonl"
    path.write_bytes(b"\xff\xfe not text\n")
    with pytest.raises(ResultError, match=r"h\.jsonl: not UTF-8 text"):
        check_history(path)
    with pytest.raises(ResultError, match=r"is a directory"):
        check_history(tmp_path)
    (tmp_path / "target.jsonl").write_text("")
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "target.jsonl")
    with pytest.raises(ResultError, match=r"link\.jsonl: a symbolic link"):
        check_history(tmp_path / "link.jsonl")


def test_a_last_line_without_its_newline_is_never_glued_to_the_next(tmp_path):
    path = tmp_path / "h.jsonl"
    append_night(path, night(1, 1.0))
    path.write_text(path.read_text().rstrip("\n"))  # written by hand, no final newline
    append_night(path, night(2, 1.0))
    assert [n.commit for n in read_history(path)] == ["c1", "c2"]


@pytest.mark.parametrize(
    ("per_start", "why"),
    [
        ("12", "a list of numbers"),
        ([], "no value"),
        ([1.0, "x"], "a list of numbers"),
        ([1.0, -2.0], "positive"),
        ([1.0, None, float("nan")], "a list of numbers"),
        ([1.0, float("inf")], "positive"),
    ],
)
def test_a_baseline_with_malformed_values_is_refused_when_loaded(tmp_path, per_start, why):
    b = bl.from_run(read_json(GPU_RUNS / "h200-aa-pinning.json.xz"), "baseline", "aa.json")
    doc = b.to_json()
    metric = next(iter(doc["metrics"]))
    doc["metrics"][metric]["per_start"] = per_start
    path = tmp_path / "b.json"
    path.write_text(json.dumps(doc).replace("NaN", "null").replace("Infinity", "1e999"))
    with pytest.raises(ResultError, match=rf"b\.json: metrics\.{metric}\.per_start.*{why}"):
        bl.load(path)
