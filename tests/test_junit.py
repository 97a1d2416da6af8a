"""JUnit for every way a run ends: valid against a strict schema (tests/junit-strict.xsd), one
case per gated metric, for accuracy, per kernel assertion and for the run, with failures for
regressions, errors for what is invalid, and skipped (never green) for what is undecided."""

import xml.etree.ElementTree as ET
from dataclasses import asdict
from pathlib import Path

import pytest

from perfgate.decide.accuracy import paired_accuracy
from perfgate.documents.io import read_json
from perfgate.documents.run import CompareRun
from perfgate.report.gate import write_junit

etree = pytest.importorskip("lxml.etree")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "gpu" / "results"
SCHEMA = etree.XMLSchema(etree.parse(str(Path(__file__).with_name("junit-strict.xsd"))))


def junit(tmp_path: Path, doc: dict) -> ET.Element:
    path = tmp_path / "junit.xml"
    write_junit(path, None, CompareRun.from_json(doc), "case")
    xml = etree.parse(str(path))
    assert SCHEMA.validate(xml), SCHEMA.error_log
    return ET.parse(path).getroot()


def counts(root: ET.Element) -> tuple[int, int, int, int]:
    (suite,) = root.iter("testsuite")
    return tuple(int(suite.get(k)) for k in ("tests", "failures", "errors", "skipped"))


def cases(root: ET.Element) -> dict[str, ET.Element]:
    return {c.get("name"): c for c in root.iter("testcase")}


def test_a_regressed_run_fails_its_regressed_metric(tmp_path):
    root = junit(tmp_path, read_json(RESULTS / "h200-tiled-plugin.json.xz"))
    c = cases(root)
    assert c["device_time_per_step_us"].find("failure").get("type") == "regressed"
    assert c["run"].find("error") is None and c["run"].find("failure") is None
    tests, failures, errors, skipped = counts(root)
    assert (failures, errors) == (1, 0) and skipped >= 1 and tests == len(c)
    assert root.get("failures") == "1"


def test_an_invalid_run_where_the_kernel_never_ran_is_an_error(tmp_path):
    doc = read_json(RESULTS / "h200-broken-plugin-windows.json.xz")
    assert doc["exit_code"] == 2
    root = junit(tmp_path, doc)
    c = cases(root)
    kernel = c["candidate expect gpt_oss_router_gemm"].find("error")
    assert kernel is not None and "gpt_oss_router_gemm" in kernel.get("message")
    assert c["run"].find("error").get("type") == "invalid"
    _, failures, errors, _ = counts(root)
    assert failures == 0 and errors == 2


def test_an_inconclusive_run_is_skipped_not_green(tmp_path):
    doc = read_json(RESULTS / "aa-4-repeats.json.xz")
    assert doc["verdict"] == "inconclusive"
    root = junit(tmp_path, doc)
    skipped = [c for c in root.iter("testcase") if c.find("skipped") is not None]
    assert skipped and all("inconclusive" in c.find("skipped").get("message") for c in skipped)
    _, failures, errors, n_skipped = counts(root)
    assert (failures, errors) == (0, 0) and n_skipped == len(skipped)


def test_an_accuracy_only_regression_fails_the_accuracy_case(tmp_path):
    doc = read_json(RESULTS / "h200-splitk-plugin.json.xz")  # every timed metric passed
    right = [[1, 1]] * 150 + [[0, 0]] * 48
    worse = [[1, 1]] * 120 + [[0, 0]] * 78  # 15 pp fewer right, on the same questions
    acc = paired_accuracy(right, worse, max_drop=0.01, resamples=500)
    assert acc.verdict == "regressed"
    doc["accuracy"]["comparison"] = asdict(acc)
    root = junit(tmp_path, doc)
    case = cases(root)["accuracy"]
    assert case.get("classname") == "perfgate.accuracy"
    assert case.find("failure").get("message").startswith("regressed: -15.2 pp")
    _, failures, _, _ = counts(root)
    assert failures == 1


def test_times_and_a_run_that_failed_before_any_metric(tmp_path):
    doc = read_json(RESULTS / "h200-tiled-plugin.json.xz")
    doc.update(status="failed", error="cannot reach /tokenize", verdict=None, comparison=[])
    doc["profile"]["checks"] = []
    root = junit(tmp_path, doc)
    (run,) = root.iter("testcase")
    assert run.find("error").get("message") == "failed: cannot reach /tokenize"
    assert float(root.get("time")) > 0 and float(run.get("time")) == float(root.get("time"))


GITHUB_COMMENT_LIMIT = 65_536


def test_every_stored_report_fits_a_github_comment_and_draws_inline():
    """The PR comment is report.md: under GitHub's comment limit for the largest stored result,
    and (recomputed with this perfgate, so the per-start values are recorded) carrying the
    per-start chart that GitHub renders in place of the PNGs beside report.md."""
    from perfgate.decide.judge import recompute
    from perfgate.documents.run import CompareRun
    from perfgate.report.markdown import render_compare_markdown

    sizes = {}
    for path in sorted(RESULTS.glob("*.json.xz")):
        doc = read_json(path)
        sizes[path.name] = len(render_compare_markdown(CompareRun.from_json(doc)))
        if doc["status"] == "complete":
            again = render_compare_markdown(*recompute(doc))
            sizes[path.name + " recomputed"] = len(again)
            assert again.count("```mermaid") == len(doc["comparison"]), path.name
    largest = max(sizes, key=sizes.get)
    assert sizes[largest] < GITHUB_COMMENT_LIMIT, (largest, sizes[largest])
