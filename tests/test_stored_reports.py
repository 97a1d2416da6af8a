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
