"""The stored compare run (results.json, ``perfgate.compare/1``): the scenario as it ran, each
arm's server starts and timed repeats, the profiled windows, accuracy, the comparison and the
verdict, and the design as recorded; and the one migration that brings older files to what
this perfgate reads. Apart from ``documents.compare`` (the verdict words and comparison rows)
because it holds the spec, bench and eval documents, which themselves use those words."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from perfgate.documents.bench import BenchResult
from perfgate.documents.compare import AccuracyComparison, MetricComparison, exit_code
from perfgate.documents.eval import ArmAccuracy
from perfgate.documents.io import COMPARE_SCHEMA, from_fields, jsonable, need
from perfgate.documents.kernels import KernelCheck, KernelInStep, KernelTable, StepGroup, Window
from perfgate.documents.records import RequestRecord
from perfgate.documents.spec import Scenario

ARMS = ("baseline", "candidate")


@dataclass(frozen=True)
class Repeat:
    """One timed repeat of one arm: the bench result it produced, which repeat of the arm it
    was (its seed is the workload's seed + ``repeat``), and which of the arm's server starts
    it ran on (``None`` only in files written before perfgate recorded it: see
    ``migrate``). A ``decide.comparison.Measured``."""

    result: BenchResult
    repeat: int
    start: int | None

    @property
    def records(self) -> list[RequestRecord]:
        return self.result.records

    @property
    def metrics(self) -> dict[str, Any]:
        return self.result.metrics

    def to_json(self) -> dict[str, Any]:
        return {**self.result.to_json(), "repeat": self.repeat, "start": self.start}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Repeat:
        return cls(BenchResult.from_json(d), need(d, "repeat", "repeat"), d.get("start"))


@dataclass(frozen=True)
class ProfiledStart:
    """The profiled window of one server start of one arm: its trace files and figures."""

    start: int
    traces: list[str]
    window: Window

    @property
    def metrics(self) -> dict[str, float]:
        """The window's figures under their registry names."""
        return self.window.figures()

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "traces": self.traces, **asdict(self.window)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ProfiledStart:
        where = "profile.windows"
        window = from_fields(
            Window,
            d,
            where,
            kernels=tuple(
                from_fields(KernelInStep, k, f"{where}.kernels") for k in d.get("kernels") or ()
            ),
            groups=tuple(
                from_fields(StepGroup, g, f"{where}.groups") for g in d.get("groups") or ()
            ),
        )
        return cls(need(d, "start", where), list(d.get("traces") or []), window)


def migrate(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored compare document brought to what this perfgate reads, in one place (the
    input is not changed). perfgate.compare/1 files from before server starts were recorded
    get each repeat's ``start`` from the schedule that ran them (A B B A ..., consecutive
    repeats of an arm sharing a start unless ``restart_between_repeats``); files from before
    rounds keep their fixed design (alpha share 1), and their comparison rows the unit they
    were made in, the repeat."""
    doc = copy.deepcopy(doc)
    where = "compare result"
    sc, arms = need(doc, "scenario", where), need(doc, "arms", where)
    starts: dict[str, list[int]] = {a: [] for a in ARMS}
    if any(r.get("start") is None for a in ARMS for r in arms.get(a, {}).get("repeats", [])):
        for arm, count in _legacy_blocks(
            need(sc, "repeats", "scenario"), bool(sc.get("restart_between_repeats"))
        ):
            starts[arm] += [len(set(starts[arm]))] * count
    for arm in ARMS:
        repeats = need(need(arms, arm, "arms"), "repeats", f"arms.{arm}")
        single = sc.get("colocate") or arms[arm].get("spec", {}).get("url")
        for k, rep in enumerate(repeats):
            if rep.get("start") is None:
                rep["start"] = 0 if single else starts[arm][k]
    doc.setdefault("design", None)
    for row in doc.get("comparison") or []:  # rows from before the start was the unit
        row.setdefault("unit", "repeat")
    return doc


def _legacy_blocks(repeats: int, restart_between_repeats: bool) -> list[tuple[str, int]]:
    """perfgate.compare/1's order: A B B A A B ..., consecutive repeats of one arm on one
    start; as [(arm, repeats on that start), ...]."""
    order: list[str] = []
    for i in range(repeats):
        order += list(ARMS) if i % 2 == 0 else list(reversed(ARMS))
    out: list[tuple[str, int]] = []
    for arm in order:
        if out and out[-1][0] == arm and not restart_between_repeats:
            out[-1] = (arm, out[-1][1] + 1)
        else:
            out.append((arm, 1))
    return out


@dataclass
class CompareRun:
    scenario: Scenario
    command: str
    repeats: dict[str, list[Repeat]] = field(default_factory=lambda: {a: [] for a in ARMS})
    servers: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {a: [] for a in ARMS})
    status: str = "running"
    error: str | None = None
    comparison: list[MetricComparison] = field(default_factory=list)
    accuracy: dict[str, ArmAccuracy] = field(default_factory=dict)
    accuracy_comparison: AccuracyComparison | None = None
    profiles: dict[str, KernelTable] = field(default_factory=dict)  # first window's
    kernel_checks: list[dict[str, Any]] = field(default_factory=list)  # every window's
    windows: dict[str, list[ProfiledStart]] = field(default_factory=lambda: {a: [] for a in ARMS})
    kernel_comparison: dict[str, Any] | None = None  # perfgate.decide.kernels, as JSON
    plots: list[str] = field(default_factory=list)  # PNG files beside report.md
    verdict: str | None = None
    # the design as run: seed of the order, starts or budget, looks, the final alpha share
    design: dict[str, Any] = field(default_factory=dict)
    started_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def alpha(self) -> float:
        """The family-wise false-fail rate this analysis may use: 1 - confidence, times the
        share of it the current look spends (1 for a fixed design)."""
        return (1 - self.scenario.confidence) * float(self.design.get("share", 1.0))

    @property
    def exit_code(self) -> int:
        return exit_code(self.status, self.verdict)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": COMPARE_SCHEMA,
            "started_at": self.started_at,
            "status": self.status,
            "error": self.error,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "command": self.command,
            "scenario": self.scenario.to_json(),
            "design": self.design,
            "environment": self.environment,
            "arms": {
                a: {
                    "spec": self.scenario.arms[a].to_json(),
                    "servers": self.servers[a],
                    "repeats": [r.to_json() for r in self.repeats[a]],
                }
                for a in ARMS
            },
            "comparison": [c.to_json() for c in self.comparison],
            "plots": self.plots,
            "profile": {
                "enabled": self.scenario.profile.enabled,
                "arms": {a: t.to_json() for a, t in self.profiles.items()},
                "checks": self.kernel_checks,
                "windows": {a: [w.to_json() for w in self.windows[a]] for a in ARMS},
                "kernels": self.kernel_comparison,
            },
            "accuracy": {
                "spec": self.scenario.accuracy.to_json(),
                "arms": {a: r.to_json() for a, r in self.accuracy.items()},
                "comparison": None
                if self.accuracy_comparison is None
                else asdict(self.accuracy_comparison),
            },
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CompareRun:
        """A stored run (through ``migrate``), typed: what ``perfgate report --recompute``
        and later comparisons read. Its run directory is where the file was, unknown here."""
        d = migrate(d)
        where = "compare result"
        run = cls(
            scenario=Scenario.from_json(need(d, "scenario", where)),
            command=d.get("command", ""),
            started_at=d.get("started_at", ""),
            environment=d.get("environment") or {},
        )
        run.status = need(d, "status", where)
        run.error, run.verdict = d.get("error"), d.get("verdict")
        run.design = dict(d.get("design") or {"looks": [], "share": 1.0})
        for arm in ARMS:
            stored = need(need(d, "arms", where), arm, "arms")
            run.repeats[arm] = [Repeat.from_json(r) for r in need(stored, "repeats", arm)]
            run.servers[arm] = list(stored.get("servers") or [])
        run.comparison = [
            from_fields(MetricComparison, c, "comparison") for c in d.get("comparison") or []
        ]
        acc_doc = d.get("accuracy") or {}
        run.accuracy = {
            a: from_fields(ArmAccuracy, x, f"accuracy.arms.{a}")
            for a, x in (acc_doc.get("arms") or {}).items()
        }
        if acc_doc.get("comparison"):
            run.accuracy_comparison = from_fields(
                AccuracyComparison, acc_doc["comparison"], "accuracy.comparison"
            )
        prof = d.get("profile") or {}
        run.profiles = {a: KernelTable.from_json(t) for a, t in (prof.get("arms") or {}).items()}
        run.plots = list(d.get("plots") or [])
        run.kernel_checks = [  # plain objects in the run, their types checked here
            asdict(from_fields(KernelCheck, c, "profile.checks")) for c in prof.get("checks") or []
        ]
        stored_windows = prof.get("windows") or {}
        run.windows = {
            a: [ProfiledStart.from_json(w) for w in stored_windows.get(a) or []] for a in ARMS
        }
        run.kernel_comparison = prof.get("kernels")
        return run


def recorded(run: CompareRun) -> CompareRun:
    """``run`` as its results.json records it (what cannot be measured as null, tuples as
    lists), read back: what report.md renders, so a live run's report and ``perfgate report``
    on its file say the same."""
    return CompareRun.from_json(jsonable(run.to_json()))


@dataclass(frozen=True)
class Recomputed:
    """What a stored run itself reported, beside a comparison this perfgate computed again
    from its stored repeats (``perfgate report --recompute``)."""

    perfgate_version: str
    verdict: str | None
    exit_code: int
