"""The nightly history and its change points.

**History**: an append-only JSONL file (schema ``perfgate.history/1``), one object per night:
when, which commit, the machine and software fingerprint, and per gated metric tonight's value
(the geometric mean over the night's server starts), its ratio to the reference (the stored
baseline, or a reference build run the same night), that night's verdict, and where the run
directory is. A CI cache or a git branch carries it as a plain file.

**Change points** (``ruptures``' PELT with a least-squares cost on the log ratios: the
segmentation of the series into runs of constant level that minimises the squared error plus a
penalty per change point). The penalty is ``penalty * sigma^2 * log(n)``: ``sigma`` is the
night-to-night standard deviation of the log ratio (from the baseline's calibration, or
estimated from the history itself as the median absolute successive difference / (0.6745 *
sqrt 2), which a single step barely moves), ``n`` the number of nights; a segment is at least
``min_segment`` (2) nights long. Persistence is a separate test (below), not a longer minimum
segment: a minimum segment of 3 made PELT put a change two nights old one night early, so
that it looked three nights old. Why ruptures: it ships wheels, needs only numpy and scipy (both
already perfgate's), and its penalty can be calibrated from measured noise
(``benchmarks/nightly_changepoints.py``); the e-divisive implementations (apache-otava, MongoDB's
signal-processing-algorithms) pin numpy versions perfgate cannot share and pull database
clients or gevent.

**The rule** (``perfgate.decide.nightly``; docs/nightly.md, "The rule"): a metric fails the
night when tonight's own comparison is certainly worse than twice its tolerance, or when its
current level (the nights since PELT's last change point, or the trailing nights worse than
the tolerance) is worse than the tolerance over at least ``min_nights`` nights; it is pending
while such a level is not yet established. The report names the first night of that level
and the commit range to bisect (the last commit before it .. its first). Every night records
its reference (``Night.reference``): after a baseline is recorded again, the series is judged
from the first night against the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from perfgate import limits, registry
from perfgate.decide.nightly import judge_metric, night_effect
from perfgate.documents.io import ResultError, jsonable
from perfgate.documents.nightly import Detection, Night
from perfgate.documents.spec import ChangeRule, Threshold


def read_history(path: Path) -> list[Night]:
    """Every night in the file, oldest first; a missing file is an empty history. A damaged
    file is a ResultError naming the line and how to repair it; a file or a line larger than
    a history can grow (``limits``) is refused, saying how to go on."""
    if not path.exists():
        return []
    try:
        size = path.stat().st_size
        if size > limits.MAX_HISTORY_BYTES:
            raise ResultError(
                f"{path}: {size / 2**20:.0f} MiB, more than the {limits.MAX_HISTORY_BYTES >> 20} "
                "MiB a history is read up to (years of nights); keep it aside and start a new "
                f"one with its recent nights: tail -n 1000 {path} > NEW.jsonl"
            )
        text = path.read_bytes().decode()
    except UnicodeDecodeError:
        raise ResultError(
            f"{path}: not UTF-8 text, so not a perfgate history; give --history a JSONL file "
            "that perfgate gate wrote (or a new path to start one)"
        ) from None
    except OSError as exc:
        raise ResultError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    lines = text.splitlines()
    nights = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if len(line) > limits.MAX_HISTORY_LINE_CHARS:
            raise ResultError(
                f"{path}:{i}: {len(line)} characters, more than a night's record can hold "
                f"({limits.MAX_HISTORY_LINE_CHARS}); not a night perfgate wrote: remove that "
                f"line to go on: sed -i '{i}d' {path}"
            )
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            cut = i == len(lines) and not text.endswith("\n")
            what = "cut short (a night whose writing was interrupted)" if cut else "not valid JSON"
            raise ResultError(
                f"{path}:{i}: {what} ({exc}); remove that line to go on: sed -i '{i}d' {path}"
            ) from None
        nights.append(Night.from_json(doc, f"{path}:{i}"))
    return nights


def check_history(path: Path) -> None:
    """Before a night runs: the history (if there is one) is a regular file perfgate can read
    whole and append to; a ResultError says what is wrong and the fix."""
    if path.is_symlink():
        raise ResultError(
            f"{path}: a symbolic link; give --history the file itself (perfgate does not write "
            "through links)"
        )
    if path.is_dir():
        raise ResultError(f"{path}: is a directory; give --history a JSONL file path")
    if path.exists():
        if not path.is_file():
            raise ResultError(f"{path}: not a regular file; give --history a JSONL file path")
        read_history(path)
        if not os.access(path, os.W_OK):
            raise ResultError(f"{path}: cannot be written; make it writable or give another path")
    else:
        parent = path.parent if str(path.parent) else Path(".")
        existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            raise ResultError(
                f"{path}: its folder cannot be created or written ({existing}); give --history "
                "a path in a writable folder"
            )


def append_night(path: Path, night: Night) -> None:
    """Append one line and flush it to disk (the file is never rewritten: a crash loses at most
    tonight). A last line without its newline (written by hand) gets one first, so two nights
    are never glued together."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(jsonable(night.to_json()), allow_nan=False)
    with path.open("a+b") as f:  # reads anywhere, writes only at the end
        if f.seek(0, os.SEEK_END) > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write(line.encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the history for one night, from its check before the run to its append and
    detection after: a second gate on the same file is refused at once, naming the process
    that holds it (the lock is ``PATH.lock`` beside it, released when the holder ends, even
    killed)."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise ResultError(
            f"{lock_path}: cannot open the history's lock ({exc.strerror or exc}); give --history "
            "a path in a writable folder (the lock is a regular file beside the history)"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise ResultError(
                f"{path}: another perfgate gate is using this history (pid {holder}, lock "
                f"{lock_path}); wait for it to end, or give this night another --history"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def noise_sigma(logs: Sequence[float], breaks: Sequence[int] = ()) -> float:
    """Night-to-night SD of a series with possible steps: the median absolute successive
    difference, scaled to an SD for normal noise (median |d| = 0.6745 * sqrt(2) * sigma).
    ``breaks``: positions where the reference changed; the difference across one is left out
    (it holds the two references' offset, not noise)."""
    x = np.asarray(logs, dtype=float)
    keep = np.ones(max(x.size - 1, 0), dtype=bool)
    for b in breaks:
        if 0 < b < x.size:
            keep[b - 1] = False
    diffs = np.abs(np.diff(x))[keep]
    if diffs.size < 2:
        return math.nan
    return float(np.median(diffs) / (0.6745 * math.sqrt(2)))


def reference_since(nights: Sequence[Night]) -> int:
    """The first night of the trailing run judged against tonight's reference: after the last
    night that recorded another one (a baseline recorded again). Nights that recorded none
    (before perfgate kept it) go with their neighbours."""
    now = nights[-1].reference if nights else None
    if now is None:
        return 0
    for i in range(len(nights) - 1, -1, -1):
        if nights[i].reference not in (None, now):
            return i + 1
    return 0


def _reference_breaks(nights: Sequence[Night], series: Sequence[tuple[int, float]]) -> list[int]:
    """Positions in ``series`` whose night has a reference other than the night before it in
    the series (both recorded)."""
    out = []
    for k in range(1, len(series)):
        a, b = nights[series[k - 1][0]].reference, nights[series[k][0]].reference
        if a is not None and b is not None and a != b:
            out.append(k)
    return out


def change_points(logs: Sequence[float], rule: ChangeRule) -> list[int]:
    """Indices where a new segment starts (0 < i < n), by PELT on the log values."""
    import ruptures

    x = np.asarray(logs, dtype=float)
    n = x.size
    if n < 2 * rule.min_segment or not np.isfinite(x).all():
        return []
    sigma = rule.sigma if rule.sigma is not None else noise_sigma(list(logs))
    if not sigma > 0:
        sigma = 1e-12  # a noiseless series: any step is a change
    pen = rule.penalty * sigma**2 * math.log(n)
    algo = ruptures.Pelt(model="l2", min_size=rule.min_segment, jump=1).fit(x.reshape(-1, 1))
    ends = algo.predict(pen=pen)
    return [e for e in ends if e < n]


def detect(
    nights: Sequence[Night],
    tolerances: dict[str, tuple[float, bool]],
    rule: ChangeRule,
) -> Detection:
    """Per metric (``tolerances``: metric -> (tolerance, higher_is_better)): its series over
    the nights that measured it (a missing night is dropped from that metric's series, never
    switching the metric off; the nights missing up to tonight are counted), PELT's change
    points with their steps, and its current level judged by ``decide.nightly.judge_metric``.
    Only the nights against tonight's reference are judged (``reference_since``): a
    baseline recorded again moves every later ratio by the two recordings' difference, which
    is no change of the build."""
    out = Detection()
    since = reference_since(nights)
    out.reference_since = since or None
    for metric, (tol, higher_better) in tolerances.items():
        every = []
        for i, night in enumerate(nights):
            m = night.metrics.get(metric)
            if m is not None and m.ratio is not None and m.ratio > 0 and math.isfinite(m.ratio):
                every.append((i, math.log(m.ratio)))
        missing = len(nights) - 1 - every[-1][0] if every else len(nights)
        if missing:
            out.missing[metric] = missing
        # the noise from every night (but not across a change of reference); the level and
        # its change points from the nights against tonight's reference
        breaks = _reference_breaks(nights, every)
        sigma = rule.sigma if rule.sigma is not None else noise_sigma([x for _, x in every], breaks)
        out.sigma[metric] = sigma
        out.day[metric] = night_effect(nights, metric, every, sigma)
        series = [(i, x) for i, x in every if i >= since]
        logs = [x for _, x in series]
        cuts = change_points(logs, replace(rule, sigma=sigma if sigma > 0 else None))
        current, steps = judge_metric(nights, metric, series, cuts, sigma, tol, higher_better, rule)
        out.changes += steps
        if current is None:
            continue
        out.levels.append(current)
        if current.regressed:
            out.regressed.append(current)
        elif current.pending:
            out.pending.append(current)
    return out


def judge_history(
    nights: Sequence[Night],
    thresholds: Sequence[Threshold],
    rule: ChangeRule,
    night_noise: dict[str, float],
) -> Detection:
    """Every gated metric of a history judged, each at its own night-to-night noise: the
    baseline's calibration (``night_noise``) where it has one, else estimated from the
    history. What the gate decides tonight from, and what ``perfgate history`` prints."""
    out = Detection()
    for t in thresholds:
        tol = (t.tolerance, registry.get(t.metric).higher_is_better)
        d = detect(nights, {t.metric: tol}, replace(rule, sigma=night_noise.get(t.metric)))
        out.changes += d.changes
        out.regressed += d.regressed
        out.pending += d.pending
        out.levels += d.levels
        out.sigma.update(d.sigma)
        out.day.update(d.day)
        out.missing.update(d.missing)
        out.reference_since = d.reference_since
    return out
