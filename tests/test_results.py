import json
import math

import pytest

from perfgate.results import ResultError, read_json, write_json


def test_nan_is_written_as_null_and_the_file_is_strict_json(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"schema": "perfgate.bench/1", "x": math.nan, "y": [1.5, math.inf]})
    doc = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert doc == {"schema": "perfgate.bench/1", "x": None, "y": [1.5, None]}
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_reading_rejects_broken_and_foreign_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ResultError, match="not valid JSON"):
        read_json(bad)
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"schema": "other/1"}')
    with pytest.raises(ResultError, match="not a perfgate result"):
        read_json(foreign)
