"""Every stored GPU result under docs/gpu/results renders, through ``perfgate report``, the
Markdown it rendered when the golden files were written: moving a document or a renderer
must not change a byte of what an old run says."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from perfgate.cli.main import main
from tests.golden_util import assert_golden

STORED = sorted((Path(__file__).resolve().parents[1] / "docs/gpu/results").glob("*.json.xz"))


def test_there_are_stored_results_to_check():
    assert len(STORED) >= 10


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.name.removesuffix(".json.xz"))
def test_a_stored_result_renders_as_it_did(path):
    result = CliRunner().invoke(main, ["report", str(path), "--format", "markdown"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("#")
    assert_golden(f"stored/{path.name.removesuffix('.json.xz')}.md", result.output)


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.name.removesuffix(".json.xz"))
def test_a_report_opens_with_the_answer_and_the_builds_compared(path):
    from perfgate.documents.io import read_json

    doc = read_json(path)
    lines = CliRunner().invoke(main, ["report", str(path)]).output.splitlines()
    verdict = lines[2]
    if doc["status"] == "complete" and doc["comparison"]:
        # the deciding metric, its change with the interval, and its tolerance (or, where
        # guards held the run back, each metric with its change on the next line)
        said = verdict if "guards unverified" not in verdict else lines[4]
        assert "%" in said and " to " in said, verdict
        assert any(r["label"] in said for r in doc["comparison"]), verdict
    compared = next(line for line in lines[:10] if line.startswith("Compared: "))
    assert "baseline vLLM" in compared and "candidate vLLM" in compared and " on " in compared
