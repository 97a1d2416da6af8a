"""Versioned JSON results: how they are written, read back and told apart.

A result file is one JSON object with ``"schema": "perfgate.bench/<version>"`` and the
environment inside. NaN (a metric that could not be measured) is written as ``null``, since JSON
has no NaN; readers treat ``null`` as missing, never as zero. Files are written atomically
(temporary file + rename), so a crash mid-write never leaves half a result behind.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import lzma
import math
import os
import tempfile
import time
import types
import typing
import zlib
from collections.abc import Iterator
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, TypeVar

from perfgate import __version__, limits, redact

BENCH_SCHEMA = "perfgate.bench/1"
COMPARE_SCHEMA = "perfgate.compare/1"
EVAL_SCHEMA = "perfgate.eval/1"
KNOWN_SCHEMAS = (BENCH_SCHEMA, COMPARE_SCHEMA, EVAL_SCHEMA)


class ResultError(Exception):
    """A result file cannot be read; the message names the file and the problem."""


def need(doc: Any, key: str, where: str) -> Any:
    """``doc[key]``, or a ResultError naming what is missing where (``from_json`` helpers)."""
    if not isinstance(doc, dict):
        raise ResultError(f"{where}: expected an object, got {type(doc).__name__}")
    if key not in doc:
        raise ResultError(f"{where}: missing key {key!r}")
    return doc[key]


T = TypeVar("T")


def from_fields(cls: type[T], doc: Any, where: str, **parts: Any) -> T:
    """A dataclass from a stored object: its known keys (one a file predates takes its
    default; a required one missing is a ResultError naming it), ``parts`` (already
    converted) taking precedence."""
    if not isinstance(doc, dict):
        raise ResultError(f"{where}: expected an object, got {type(doc).__name__}")
    spec = [f for f in fields(cls) if f.init]  # type: ignore[arg-type]
    kwargs = {f.name: doc[f.name] for f in spec if f.name in doc}
    kinds = _scalar_kinds(typing.cast(type, cls))
    for key, value in kwargs.items():
        if key in kinds and not isinstance(value, kinds[key]):
            raise ResultError(
                f"{where}: {key} must be {_KIND_WORDS[kinds[key]]}, got {_shown(value)}; was "
                "the file edited? Write it again with perfgate"
            )
    kwargs.update(parts)
    for f in spec:
        if f.name not in kwargs and f.default is MISSING and f.default_factory is MISSING:
            raise ResultError(f"{where}: missing key {f.name!r}")
    return cls(**kwargs)


_NUMBER, _INTEGER, _TEXT, _FLAG = (
    (int, float, type(None)),
    (int, type(None)),
    (str, type(None)),
    (
        bool,
        type(None),
    ),
)
_KIND_WORDS = {
    _NUMBER: "a number (or null)",
    _INTEGER: "an integer (or null)",
    _TEXT: "text (or null)",
    _FLAG: "true or false",
}


@functools.cache
def _scalar_kinds(cls: type) -> dict[str, tuple[type, ...]]:
    """The JSON types a stored document's scalar fields may hold, from ``cls``'s annotations:
    a number field holds a number or null (NaN, infinity), an integer field an integer, a text
    field text; a crafted file's string where a number belongs (rendered into a report as is)
    is refused here, once for every reader."""
    kinds: dict[str, tuple[type, ...]] = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = set(typing.get_args(hint)) - {type(None)} if typing.get_origin(hint) else {hint}
        if typing.get_origin(hint) not in (None, types.UnionType, typing.Union) or len(args) != 1:
            continue
        (base,) = args
        if base is float:
            kinds[name] = _NUMBER
        elif base is int:
            kinds[name] = _INTEGER
        elif base is str:
            kinds[name] = _TEXT
        elif base is bool:
            kinds[name] = _FLAG
    return kinds


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def jsonable(value: Any) -> Any:
    """``value`` with every NaN or infinity as None (JSON's null: missing is not zero)."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def special_file_problem(path: Path) -> str | None:
    """Why perfgate will not write at ``path``: a symbolic link (writing would follow it, or
    replace it) or something that is not a regular file (a FIFO, socket or device); None when
    the path is free or a regular file."""
    if path.is_symlink():
        return "a symbolic link (perfgate never writes through or over a link)"
    if path.exists() and not path.is_file():
        return "not a regular file (a FIFO, socket or device)"
    return None


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; on success it replaces ``path`` in one
    rename (a reader never sees half a file), on failure it is removed. Refuses a link or
    special file at ``path`` (OSError naming it)."""
    if (problem := special_file_problem(path)) is not None:
        raise OSError(errno.EPERM, problem, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, doc: dict[str, Any]) -> None:
    with replacing(path) as tmp, tmp.open("w") as f:
        json.dump(jsonable(redact.scrub(doc)), f, indent=1, allow_nan=False)
        f.write("\n")


def write_text_private(path: Path, text: str) -> None:
    """Write a text file readable by its owner only (reports can name hosts and commands)."""
    with replacing(path) as tmp:  # mkstemp made it owner-only
        tmp.write_text(redact.scrub(text))


def file_in_the_way(directory: Path) -> Path | None:
    """The existing non-directory among ``directory`` and its parents, if any: what stops
    ``directory`` from being created."""
    for p in (directory, *directory.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def check_writable_dir(directory: Path, what: str, *, private: bool = False) -> None:
    """Create ``directory`` if needed (owner-only when ``private``) and prove a file can be
    written in it, before any work; else a ResultError starting with ``what`` (the flag and
    the path the user gave) and naming the cause."""
    if (blocker := file_in_the_way(directory)) is not None:
        raise ResultError(f"{what}: cannot write there ({blocker} is a file, not a directory)")
    try:
        if not directory.is_dir():
            directory.mkdir(parents=True, mode=0o700 if private else 0o777)
            if private:
                directory.chmod(0o700)  # mkdir's mode passes through the umask
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".perfgate-probe-"):
            pass
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        raise ResultError(
            f"{what}: cannot write there ({exc.strerror or exc}{where}); give a path in a "
            "directory you can write to"
        ) from None


def check_output_file(path: Path, flag: str) -> None:
    """Fail before any work when ``path`` cannot be written (a directory, a parent that is a
    file or read-only): the message names the flag."""
    if path.is_dir() and not path.is_symlink():
        raise ResultError(f"{flag} {path}: is a directory; give a file name")
    if (problem := special_file_problem(path)) is not None:
        raise ResultError(f"{flag} {path}: {problem}; give another path")
    check_writable_dir(path.parent, f"{flag} {path}")


def write_json_or_fallback(path: Path, doc: dict[str, Any], prefix: str) -> tuple[Path, str | None]:
    """Write ``doc`` to ``path``; if that fails after all, to a private temporary file so the
    measurement is not lost. Returns where it went and, after a fallback, what went wrong."""
    try:
        write_json(path, doc)
        return path, None
    except OSError as exc:
        problem = f"cannot write {path} ({exc.strerror or exc})"
    fallback = (
        Path(tempfile.mkdtemp(prefix=f"{prefix}-")) / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    write_json(fallback, doc)
    return fallback, f"{problem}; the result was saved to {fallback} instead"


GZIP_MAGIC, XZ_MAGIC = b"\x1f\x8b", b"\xfd7zXZ\x00"


def unpacked(raw: bytes, most: int = limits.MAX_UNPACKED_BYTES) -> bytes:
    """``raw`` decompressed when it starts as gzip or xz data does, else as it is; ValueError
    when the compressed data is damaged or cut short, or would decompress to more than
    ``most`` bytes (a decompression bomb; stored results and profiler traces both come
    compressed)."""
    if raw.startswith(XZ_MAGIC):
        engine: Any = lzma.LZMADecompressor()
    elif raw.startswith(GZIP_MAGIC):
        engine = zlib.decompressobj(16 + zlib.MAX_WBITS)
    else:
        return raw
    try:
        out = engine.decompress(raw, most + 1)  # both take the most to return second
    except (lzma.LZMAError, OSError, EOFError, zlib.error) as exc:
        raise ValueError(str(exc)) from exc
    if len(out) > most:
        raise ValueError(
            f"it decompresses to more than {most / 2**30:g} GiB, more than perfgate reads"
        )
    if not engine.eof:
        raise ValueError("compressed data ended before the end-of-stream marker (cut short)")
    return out


def read_json(path: Path) -> dict[str, Any]:
    """A result perfgate wrote (plain, or compressed as ``.xz`` / ``.gz``, as stored results
    are kept): its schema must be one this perfgate reads (same major version), else the
    message names what the file is."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ResultError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise ResultError(f"{path}: is a directory, not a result file") from exc
    except OSError as exc:
        raise ResultError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    try:
        raw = unpacked(raw)
    except ValueError as exc:
        raise ResultError(f"{path}: a damaged compressed file ({exc})") from exc
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultError(f"{path}: not valid JSON ({exc})") from exc
    except RecursionError:
        raise ResultError(f"{path}: JSON nested too deeply to be a perfgate result") from None
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if not isinstance(schema, str) or not schema.startswith("perfgate."):
        raise ResultError(f"{path}: not a perfgate result (schema {schema!r})")
    if schema not in KNOWN_SCHEMAS:
        raise ResultError(
            f"{path}: schema {schema!r} is not one this perfgate {_version()} reads "
            f"({', '.join(KNOWN_SCHEMAS)}); render it with the perfgate that wrote it"
        )
    return doc


def _version() -> str:
    return __version__
