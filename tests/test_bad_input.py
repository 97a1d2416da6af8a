"""Every bad-input case of ``tests/bad_input_cases.py``: the exit code, the message, printed
literally, no traceback, and no server started."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from perfgate.cli.main import main
from tests.bad_input_cases import BAD_INPUT


@pytest.mark.parametrize("case", BAD_INPUT, ids=[c.id for c in BAD_INPUT])
def test_bad_input_is_stopped_with_a_message_before_any_server_starts(
    case, tmp_path, server_starts
):
    result = CliRunner().invoke(main, case.argv(tmp_path))
    output = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == case.exit_code, result.output
    assert " ".join(case.message.split()) in output, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert server_starts == []
    for victim in tmp_path.rglob("victim"):  # a planted link's target is never written
        assert victim.read_text() == "not yours to overwrite\n"
