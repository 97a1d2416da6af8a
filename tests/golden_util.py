"""Golden-file comparison: PERFGATE_UPDATE_GOLDEN=1 rewrites the expected files."""

from __future__ import annotations

import os
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"


def assert_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("PERFGATE_UPDATE_GOLDEN") == "1":
        path.write_text(actual)
    expected = path.read_text()
    assert actual == expected, f"{path} differs; rerun with PERFGATE_UPDATE_GOLDEN=1 if intended"
