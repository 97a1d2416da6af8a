"""The pictures beside report.md, drawn from a stored H200 run and a synthetic history."""

from pathlib import Path

from perfgate.documents.io import read_json
from perfgate.documents.nightly import Night, NightMetric
from perfgate.documents.run import CompareRun
from perfgate.documents.spec import ChangeRule
from perfgate.history import detect
from perfgate.report import plots
from perfgate.report.markdown import render_compare_markdown

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def test_a_compare_run_gets_its_per_start_values_cdfs_and_a_timeline_linked(tmp_path):
    doc = read_json(ROOT / "docs" / "gpu" / "results" / "h100-120b-tiled.json.xz")
    names = plots.compare_plots(CompareRun.from_json(doc), tmp_path)
    assert names == ["per-start.png", "latency-cdf.png", "timeline.png"]
    for n in names:
        assert (tmp_path / n).read_bytes().startswith(PNG)
    report = render_compare_markdown(CompareRun.from_json({**doc, "plots": names}))
    assert (
        "Pictures: [per-start](per-start.png), [latency-cdf](latency-cdf.png), "
        "[timeline](timeline.png)" in report
    )


def test_a_run_without_measured_requests_draws_nothing(tmp_path):
    doc = read_json(ROOT / "docs" / "gpu" / "results" / "h200-broken-plugin-windows.json.xz")
    for arm in doc["arms"].values():
        arm["repeats"] = []
    assert plots.compare_plots(CompareRun.from_json(doc), tmp_path) == []


def test_the_trend_chart_marks_the_change_point(tmp_path):
    ratios = [1.0, 1.01, 0.99, 1.0, 1.005, 0.995, 1.08, 1.09, 1.085]
    nights = [
        Night(f"d{i}", f"c{i}", {}, {"median_tpot_ms": NightMetric(r, r, -0.02, 0.02, "", 2)}, "")
        for i, r in enumerate(ratios)
    ]
    detection = detect(nights, {"median_tpot_ms": (0.02, False)}, ChangeRule())
    assert detection.regressed
    name = plots.trend(nights, detection, "median_tpot_ms", 0.02, tmp_path)
    assert name == "trend-median_tpot_ms.png"
    assert (tmp_path / name).read_bytes().startswith(PNG)
    assert plots.trend(nights, detection, "p99_tpot_ms", 0.02, tmp_path) is None


def test_the_per_start_picture_draws_each_gated_metric_from_the_values_compared(tmp_path):
    doc = read_json(ROOT / "docs" / "gpu" / "results" / "h100-120b-tiled.json.xz")
    run = CompareRun.from_json(doc)
    drawn = [r for r in run.comparison if r.values_baseline and r.values_candidate]
    assert len(drawn) >= 3
    assert plots.start_strips(run, tmp_path) == "per-start.png"
    assert (tmp_path / "per-start.png").read_bytes().startswith(PNG)
    # a run whose rows kept no per-start values (older files) draws no such picture
    for row in doc["comparison"]:
        row["values_baseline"] = row["values_candidate"] = []
    assert plots.start_strips(CompareRun.from_json(doc), tmp_path / "none") is None
