"""The metric registry: one ``register`` call (plus a formula) makes a gateable metric that
scenario validation, the bench summary, the comparison and report.md all handle."""

from __future__ import annotations

import numpy as np
import pytest

from perfgate import registry
from perfgate.decide.comparison import compare
from perfgate.documents.run import CompareRun
from perfgate.documents.spec import ScenarioError, Threshold
from perfgate.formulas import NS_PER_MS
from perfgate.registry import Latency
from perfgate.report.markdown import render_compare_markdown
from perfgate.scenario import parse
from tests.test_compare import repeat
from tests.test_markdown import run_doc


def first_gap_ms(r):
    """A throwaway formula: the gap between a request's first two token-carrying chunks."""
    return [(r.chunk_ns[1] - r.chunk_ns[0]) / NS_PER_MS] if len(r.chunk_ns) > 1 else []


@pytest.fixture
def first_gap():
    registry.register_latency(Latency("first_gap", "first gap", first_gap_ms))
    yield
    registry.unregister("first_gap")


def test_a_registered_metric_is_gated_summarized_compared_and_reported(first_gap):
    doc = {"model": "m", "thresholds": {"p99_first_gap_ms": 0.1}}
    scenario = parse({**doc, "arms": {"baseline": {}, "candidate": {}}}, "x.toml")
    assert scenario.thresholds == (Threshold("p99_first_gap_ms", 0.1),)

    rng = np.random.default_rng(0)
    # three server starts per arm; summaries computed after registering
    base = [repeat(rng, 3.0, start=s) for s in range(3)]
    cand = [repeat(rng, 6.0, start=s) for s in range(3)]
    assert base[0].metrics["median_first_gap_ms"] == pytest.approx(3.0, rel=0.2)
    (row,) = compare(scenario.thresholds, base, cand)
    assert row.label == "P99 first gap (ms)" and row.verdict == "regressed"
    assert row.estimate == pytest.approx(1.0, abs=0.3)  # twice as slow

    doc = run_doc(3.0, thresholds=[Threshold("median_first_gap_ms", 0.1)])
    assert "| Median first gap (ms) |" in render_compare_markdown(CompareRun.from_json(doc))


def test_an_unregistered_metric_is_not_gateable():
    with pytest.raises(ScenarioError, match=r"thresholds\.p99_first_gap_ms is not a known field"):
        parse(
            {
                "model": "m",
                "thresholds": {"p99_first_gap_ms": 0.1},
                "arms": {"baseline": {}, "candidate": {}},
            },
            "x.toml",
        )
    with pytest.raises(KeyError, match="not a registered metric"):
        registry.get("p99_first_gap_ms")


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="registered already"):
        registry.register(registry.get("output_throughput"))
