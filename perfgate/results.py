"""Versioned JSON results: how they are written, read back and told apart.

A result file is one JSON object with ``"schema": "perfgate.bench/<version>"`` and the
environment inside. NaN (a metric that could not be measured) is written as ``null``, since JSON
has no NaN; readers treat ``null`` as missing, never as zero. Files are written atomically
(temporary file + rename), so a crash mid-write never leaves half a result behind.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

BENCH_SCHEMA = "perfgate.bench/1"


class ResultError(Exception):
    """A result file cannot be read; the message names the file and the problem."""


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_clean(doc), f, indent=1, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path, schema_prefix: str = "perfgate.") -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ResultError(f"{path}: no such file") from exc
    except json.JSONDecodeError as exc:
        raise ResultError(f"{path}: not valid JSON ({exc})") from exc
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if not isinstance(schema, str) or not schema.startswith(schema_prefix):
        raise ResultError(f"{path}: not a perfgate result (schema {schema!r})")
    return doc
