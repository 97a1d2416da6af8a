"""The bench document: one workload sent to one server, what the server said it was, and
what came back (request records, metrics, the reasons a run is invalid, cross-checks against
the server's own counters, warnings). Data, reading and writing only; ``perfgate.measure``
makes it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from perfgate import redact
from perfgate.documents.io import BENCH_SCHEMA, need
from perfgate.documents.records import RequestRecord

EndpointKind = Literal["completions", "chat"]


DEFAULT_PERCENTILES: tuple[float, ...] = (90.0, 99.0)


@dataclass(frozen=True)
class Workload:
    """The load to send, with one set of defaults (the reference case: 80 prompts of 1024 in /
    1024 out at concurrency 8): ``perfgate bench``'s flags, a scenario's ``[workload]`` table
    and compare's repeats all start from these. ``max_concurrency = None`` is no cap ("none"
    in a scenario or on the command line)."""

    endpoint: EndpointKind = "completions"
    num_prompts: int = 80
    input_len: int = 1024
    output_len: int = 1024
    max_concurrency: int | None = 8
    request_rate: float = math.inf  # requests per second; inf sends all at once
    burstiness: float = 1.0  # gamma shape of the arrival gaps; 1.0 is Poisson
    num_warmups: int = 8
    seed: int = 0
    temperature: float = 0.0
    stall_timeout_s: float = 600.0  # a stream silent this long fails its request
    # wall-clock deadlines per request, from its send (None: none): its first token, its end
    ttft_timeout_s: float | None = None
    request_timeout_s: float | None = None
    # processes that read the streams (perfgate.measure.workers); 0 is "auto"
    client_processes: int = 0

    @property
    def deadlines(self) -> Deadlines:
        return Deadlines(self.stall_timeout_s, self.ttft_timeout_s, self.request_timeout_s)


@dataclass(frozen=True)
class Deadlines:
    """When one request is given up, each named in its error: no token for ``stall_s``
    (keepalives and stray bytes do not count), no first token ``ttft_s`` after the send, not
    finished ``total_s`` after the send. None: no such limit."""

    stall_s: float | None = None
    ttft_s: float | None = None
    total_s: float | None = None


NO_DEADLINES = Deadlines()


@dataclass(frozen=True)
class ServerInfo:
    base_url: str
    models: tuple[str, ...]
    model: str
    max_model_len: int | None
    version: str | None
    root: str | None = None  # the model's path or hub id, as the server loaded it


@dataclass(frozen=True)
class Problem:
    """One reason the run is invalid, with how many requests showed it."""

    kind: str  # failed_requests | prompt_length_mismatch | output_length_mismatch | ...
    count: int
    message: str

    def to_json(self) -> dict:
        return {"kind": self.kind, "count": self.count, "message": self.message}


@dataclass(frozen=True)
class CrossCheck:
    name: str
    server: float | None
    client: float | None
    unit: str
    agrees: bool | None  # None: one side missing, nothing to compare
    note: str
    remedy: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "server": self.server,
            "client": self.client,
            "unit": self.unit,
            "agrees": self.agrees,
            "note": self.note,
            "remedy": self.remedy,
        }


@dataclass
class Bursts:
    """A run's bunching and its attribution (``analyze``)."""

    near_zero_fraction: float
    longest_stall_ms: float
    stall_threshold_ms: float
    stalled_requests: int
    worst: list[dict[str, Any]] = field(default_factory=list)  # per request, longest stall first
    client_stall_ms: float = 0.0
    # p50/p90/p99 of the server's inter-token histogram: [lower, upper] bounds of their buckets
    server_itl_ms: dict[str, list[float]] = field(default_factory=dict)
    client_itl_ms: dict[str, float] = field(default_factory=dict)  # the same, per token
    bursty: bool = False
    where: str | None = None  # "client", "engine", "server output path", "server"
    explanation: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Bursts:
        return cls(**d)


@dataclass(frozen=True, kw_only=True)
class BenchConfig(Workload):
    """A workload sent to one server: the workload's fields, where, and what to report."""

    url: str
    model: str | None = None
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES
    # The scenario file this workload comes from (None: command-line flags), so messages
    # name what the user wrote: "--random-input-len" or "x.toml: workload.input_len".
    scenario: str | None = None
    # Bearer token for a server started with --api-key; never written anywhere.
    api_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BenchConfig:
        """As ``to_json`` wrote it; settings a file predates take their defaults."""
        known = {f.name for f in fields(cls)} - {"scenario", "api_key"}
        kwargs = {k: v for k, v in d.items() if k in known}
        if kwargs.get("request_rate") == "inf":
            kwargs["request_rate"] = math.inf
        if "percentiles" in kwargs:
            kwargs["percentiles"] = tuple(kwargs["percentiles"])
        return cls(**{"url": need(d, "url", "bench config"), **kwargs})

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        del d["scenario"], d["api_key"]
        d["url"] = redact.url(self.url)
        d["request_rate"] = "inf" if math.isinf(self.request_rate) else self.request_rate
        d["percentiles"] = list(self.percentiles)
        return d


# the warning of a run whose tokens reached the client in bursts (perfgate.measure.bursts)
BURSTY = "bursty_stream"


@dataclass(frozen=True)
class RunWarning:
    """Something about the measurement a reader should know, with what to do about it."""

    code: str
    message: str
    remedy: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class BenchResult:
    config: BenchConfig
    server: ServerInfo
    environment: dict[str, Any]
    records: list[RequestRecord]
    metrics: dict[str, Any]
    problems: list[Problem]
    cross_checks: list[CrossCheck]
    warnings: list[RunWarning] = field(default_factory=list)
    started_at: str = ""
    bursts: Bursts | None = None

    @property
    def valid(self) -> bool:
        return not self.problems

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BenchResult:
        """A bench document (``perfgate bench --out``, or one repeat of a compare run); a
        missing part is a ResultError naming it."""
        where = "bench result"
        server = dict(need(d, "server", where))
        server["models"] = tuple(server.get("models") or ())
        return cls(
            config=BenchConfig.from_json(need(d, "config", where)),
            server=ServerInfo(**server),
            environment=d.get("environment") or {},
            records=[RequestRecord.from_json(r) for r in need(d, "records", where)],
            metrics=dict(need(d, "metrics", where)),
            problems=[Problem(**p) for p in d.get("problems") or []],
            cross_checks=[CrossCheck(**c) for c in d.get("server_cross_check") or []],
            warnings=[RunWarning(**w) for w in d.get("warnings") or []],
            started_at=d.get("started_at", ""),
            bursts=Bursts.from_json(d["bursts"]) if d.get("bursts") else None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": BENCH_SCHEMA,
            "started_at": self.started_at,
            "valid": self.valid,
            "config": self.config.to_json(),
            "server": {**asdict(self.server), "base_url": redact.url(self.server.base_url)},
            "environment": self.environment,
            "metrics": self.metrics,
            "problems": [p.to_json() for p in self.problems],
            "server_cross_check": [c.to_json() for c in self.cross_checks],
            "warnings": [w.to_json() for w in self.warnings],
            "bursts": None if self.bursts is None else self.bursts.to_json(),
            "records": [r.to_json() for r in self.records],
        }
