"""The nightly documents: a stored baseline (``baselines/*.json``, ``perfgate.baseline/1``), a
night of the history (one JSONL line, ``perfgate.history/1``), the change points found in a
history, and what the gate decided. Data, reading and writing only: ``perfgate.baseline``
records and merges baselines, ``perfgate.history`` finds change points, ``perfgate.run.gate``
runs a night."""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from perfgate.documents.compare import COMPLETE, exit_code
from perfgate.documents.eval import AccuracySpec, ArmAccuracy
from perfgate.documents.io import ResultError, from_fields
from perfgate.documents.run import CompareRun


@dataclass(frozen=True)
class ReferenceAccuracy:
    """The reference build's GPQA answers per question and the spec they were graded with
    (the answers, not their texts: hours of reasoning per question at k = 8)."""

    spec: AccuracySpec
    arm: ArmAccuracy

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec.to_json(), "arm": self.arm.to_json()}

    @classmethod
    def from_json(cls, doc: Any, where: str) -> ReferenceAccuracy:
        try:
            spec = from_fields(AccuracySpec, doc["spec"], "accuracy.spec")
            arm = from_fields(ArmAccuracy, doc["arm"], "accuracy.arm")
            if len(arm.questions) != len(arm.correct):
                raise ValueError("accuracy.arm: questions and correct differ in length")
        except (KeyError, TypeError, ValueError, ResultError) as exc:
            raise ResultError(f"{where}: accuracy is not a stored GPQA result ({exc})") from None
        return cls(spec, arm)


BASELINE_SCHEMA = "perfgate.baseline/1"


@dataclass
class BaselineMetric:
    per_start: list[float]
    tolerance: float
    higher_is_better: bool

    @property
    def cv(self) -> float:
        """Between-start SD of the logs (~CV); NaN with fewer than two starts."""
        logs = [math.log(v) for v in self.per_start if v > 0]
        return statistics.stdev(logs) if len(logs) > 1 else math.nan


@dataclass
class Baseline:
    scenario: str
    machine: dict[str, Any]
    software: dict[str, Any]
    metrics: dict[str, BaselineMetric]
    sources: list[dict[str, Any]] = field(default_factory=list)
    night_noise: dict[str, float] = field(default_factory=dict)  # night-to-night SD of logs
    accuracy: ReferenceAccuracy | None = None  # the reference build's answers
    updated_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    @property
    def identity(self) -> str:
        """What a night's ratios are relative to: a digest of the stored per-start values and
        answers, so recording or merging the baseline again gives a new identity (the history
        starts its series afresh there) and reading it again does not."""
        values = {k: m.per_start for k, m in sorted(self.metrics.items())}
        answers = None if self.accuracy is None else self.accuracy.arm.correct
        text = json.dumps([values, answers], sort_keys=True, default=str)
        return "baseline:" + hashlib.sha256(text.encode()).hexdigest()[:12]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": BASELINE_SCHEMA,
            "scenario": self.scenario,
            "updated_at": self.updated_at,
            "machine": self.machine,
            "software": self.software,
            "metrics": {
                k: {**asdict(m), "starts": len(m.per_start), "cv": m.cv}
                for k, m in self.metrics.items()
            },
            "night_noise": self.night_noise,
            "accuracy": None if self.accuracy is None else self.accuracy.to_json(),
            "sources": self.sources,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str) -> Baseline:
        _expect_schema(
            d, BASELINE_SCHEMA, where, "record one with perfgate baseline record RESULT --out FILE"
        )
        try:
            metrics = {
                k: BaselineMetric(
                    _per_start(v["per_start"], f"{where}: metrics.{k}.per_start"),
                    _tolerance(v["tolerance"], f"{where}: metrics.{k}.tolerance"),
                    _flag(v["higher_is_better"], f"{where}: metrics.{k}.higher_is_better"),
                )
                for k, v in d["metrics"].items()
            }
            return cls(
                scenario=d["scenario"],
                machine=dict(d["machine"]),
                software=dict(d.get("software") or {}),
                metrics=metrics,
                sources=list(d.get("sources") or []),
                night_noise={k: float(v) for k, v in (d.get("night_noise") or {}).items()},
                accuracy=None
                if d.get("accuracy") is None
                else ReferenceAccuracy.from_json(d["accuracy"], where),
                updated_at=d.get("updated_at", ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ResultError(f"{where}: not a perfgate baseline ({exc})") from None


HISTORY_SCHEMA = "perfgate.history/1"


@dataclass(frozen=True)
class NightMetric:
    value: float  # geometric mean over the night's starts
    ratio: float  # value / the reference's (stored baseline or same-night reference build)
    low: float  # interval of the ratio - 1 (the night's own comparison)
    high: float
    verdict: str
    starts: int
    # the night's own comparison: standard error of the log ratio and its degrees of freedom
    # (NaN in nights recorded before perfgate kept them: no "at once" test on those)
    se: float = math.nan
    df: float = math.nan


@dataclass(frozen=True)
class Night:
    date: str
    commit: str | None
    fingerprint: dict[str, Any]
    metrics: dict[str, NightMetric]
    verdict: str  # the night's own verdict against its reference
    run_dir: str | None = None
    schema: str = HISTORY_SCHEMA
    # what the ratios are relative to (``Baseline.identity``, or ``SAME_NIGHT`` when a reference
    # build runs beside the candidate): a change of it starts the series afresh. None in nights
    # recorded before perfgate kept it (judged with the nights around them).
    reference: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str) -> Night:
        _expect_schema(
            d,
            HISTORY_SCHEMA,
            where,
            "a history file written by another perfgate version, or not a perfgate history",
        )
        try:
            metrics = {k: NightMetric(**v) for k, v in d["metrics"].items()}
            return cls(
                date=d["date"],
                commit=d.get("commit"),
                fingerprint=dict(d.get("fingerprint") or {}),
                metrics=metrics,
                verdict=d["verdict"],
                run_dir=d.get("run_dir"),
                reference=_reference(d.get("reference"), where),
            )
        except (KeyError, TypeError) as exc:
            raise ResultError(f"{where}: not a night record ({exc})") from None


# ``Night.reference`` of a night whose reference build ran the same night (``--paired``)
SAME_NIGHT = "same-night reference build"


def _reference(value: Any, where: str) -> str | None:
    if value is None or (isinstance(value, str) and 0 < len(value) <= 200):
        return value
    raise ResultError(
        f"{where}: reference must be a baseline's identity (a short string) or null, got "
        f"{value!r:.80}; not a night perfgate wrote: remove that line to go on"
    )


# how a metric's change was judged (``Change.rule``)
AT_ONCE, LEVEL, STEP = "at once", "level", "step"


@dataclass(frozen=True)
class Change:
    metric: str
    night: int  # index (in the history) of the first night of the new level
    step: float  # relative change of the level (after / before - 1)
    nights_after: int  # nights of the metric's series from ``night`` to tonight
    regressed: bool
    pending: bool = False  # worse than the tolerance reaching tonight, not yet established
    first_date: str = ""
    commits: tuple[str | None, str | None] = (None, None)  # last before .. first after
    rule: str = STEP  # AT_ONCE (tonight alone), LEVEL (the current level), STEP (PELT's cut)
    tolerance: float = math.nan
    # the current level against the reference (relative, with its interval) and the p-value
    # of the test that decided (against the tolerance; for a STEP, of the step against none)
    level: float = math.nan
    level_low: float = math.nan
    level_high: float = math.nan
    p_value: float = math.nan
    nights_beyond: int = 0  # of the current window's nights, those worse than the tolerance
    nights_needed: int = 0  # the window a level is judged over (``[gate] min_nights``)


@dataclass
class Detection:
    changes: list[Change] = field(default_factory=list)  # PELT's change points
    regressed: list[Change] = field(default_factory=list)
    pending: list[Change] = field(default_factory=list)
    sigma: dict[str, float] = field(default_factory=dict)
    day: dict[str, float] = field(default_factory=dict)  # the day effect's SD, in sigma
    levels: list[Change] = field(default_factory=list)  # every metric's current level
    missing: dict[str, int] = field(default_factory=dict)  # metric -> nights missing to tonight
    # the first night judged against tonight's reference, when an earlier night had another
    # (a baseline recorded again): levels and change points are judged from there on
    reference_since: int | None = None


@dataclass
class GateOutcome:
    run: CompareRun
    night: Night
    nights: list[Night]
    detection: Detection
    verdict: str
    reason: str
    report: Path | None = None  # the night's report.md, once written

    @property
    def exit_code(self) -> int:
        return exit_code(COMPLETE, self.verdict)


_REFRESH = "record the baseline again with perfgate baseline record"


def _per_start(values: Any, where: str) -> list[float]:
    """A metric's stored per-start values: a non-empty list of finite positive numbers."""
    if not isinstance(values, list) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in values
    ):
        raise ResultError(f"{where} must be a list of numbers, got {values!r:.80}; {_REFRESH}")
    if not values:
        raise ResultError(f"{where} holds no value; {_REFRESH}")
    if not all(math.isfinite(x) and x > 0 for x in values):
        raise ResultError(
            f"{where} must hold finite positive values (a metric's per-start values), got "
            f"{values!r:.80}; {_REFRESH}"
        )
    return [float(x) for x in values]


def _tolerance(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 10:
        raise ResultError(f"{where} must be a number from 0 to 10, got {value!r:.80}; {_REFRESH}")
    return float(value)


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ResultError(f"{where} must be true or false, got {value!r:.80}; {_REFRESH}")
    return value


def _expect_schema(d: dict[str, Any], schema: str, where: str, hint: str) -> None:
    if d.get("schema") != schema:
        raise ResultError(f"{where}: schema {d.get('schema')!r}, expected {schema!r} ({hint})")
