"""Kernel documents: a profiled window's kernel table, the decode steps it measured, and the
kernel rules a scenario asserts. Data, reading and writing only; the trace parsing that
makes them is in perfgate.profiling and perfgate.steps."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from perfgate.documents.io import from_fields, need


class ProfileError(Exception):
    """A trace cannot be read or the profile cannot be taken; the message says why."""


@dataclass(frozen=True)
class KernelStat:
    name: str
    calls: int
    total_us: float
    mean_us: float
    share: float  # of the table's total time


@dataclass(frozen=True)
class KernelCheck:
    """One kernel assertion on one profiled window, as results.json keeps it (a plain object
    there, in ``profile.checks``): the arm, ``expect``/``forbid``, the pattern, the calls seen,
    whether it held and, if not, the sentence saying so."""

    arm: str
    kind: str
    pattern: str
    min_calls: int
    calls: int
    ok: bool
    message: str = ""


@dataclass
class KernelTable:
    source: str  # "kernel" (GPU) or "cpu_op" (CPU self time)
    total_us: float
    rows: list[KernelStat] = field(default_factory=list)  # by total time, descending
    traces: list[str] = field(default_factory=list)
    graph_launches: int = 0  # cudaGraphLaunch events: kernels replayed from CUDA graphs

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "total_us": self.total_us,
            "traces": self.traces,
            "graph_launches": self.graph_launches,
            "rows": [asdict(r) for r in self.rows],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> KernelTable:
        where = "kernel table"
        return from_fields(
            cls,
            d,
            where,
            traces=list(d.get("traces") or []),
            rows=[from_fields(KernelStat, r, f"{where}.rows") for r in need(d, "rows", where)],
        )

    def calls_matching(self, pattern: str) -> int:
        rx = re.compile(pattern)
        return sum(r.calls for r in self.rows if rx.search(r.name))


CPU_GEMM = "builtin:cpu-gemm"


BUILTIN_PATTERNS = {
    CPU_GEMM: (
        r"_C::onednn_mm|_C::weight_packed_linear|zentorch_linear|^aten::addmm$|^aten::mm$",
        "any CPU GEMM vLLM dispatches to",
    ),
}


@dataclass(frozen=True)
class KernelRule:
    """``pattern`` is a regular expression searched in kernel names, or a ``builtin:`` name."""

    pattern: str
    min_calls: int = 1

    def __post_init__(self) -> None:
        if self.pattern.startswith("builtin:") and self.pattern not in BUILTIN_PATTERNS:
            raise ProfileError(
                f"kernel pattern {self.pattern!r} is not a built-in one; built-in: "
                f"{', '.join(BUILTIN_PATTERNS)}"
            )
        try:
            compiled = re.compile(self.regex)
        except re.error as exc:
            raise ProfileError(
                f"kernel pattern {self.pattern!r} is not a valid regular expression ({exc})"
            ) from None
        if compiled.search("") is not None or not self.pattern.strip():
            raise ProfileError(
                f"kernel pattern {self.pattern!r} matches every name (it matches the empty "
                "string), so its check could never fail; name the kernel, e.g. 'tinygemm'"
            )

    @property
    def regex(self) -> str:
        builtin = BUILTIN_PATTERNS.get(self.pattern)
        return builtin[0] if builtin else self.pattern

    @property
    def meaning(self) -> str:
        """``'pattern'``, plus what a built-in name stands for."""
        builtin = BUILTIN_PATTERNS.get(self.pattern)
        return f"{self.pattern!r}" + (f" ({builtin[1]})" if builtin else "")


def short_name(name: str, width: int = 90) -> str:
    """Kernel names can be kilobytes of template arguments; keep the head."""
    name = " ".join(name.split())
    return name if len(name) <= width else name[: width - 3] + "..."


@dataclass(frozen=True)
class StepGroup:
    """Steps of one kind at one batch size (decode tokens, or prefill + decode tokens)."""

    kind: str
    tokens: int
    steps: int
    median_us: float
    min_us: float
    max_us: float
    per_token_us: float
    launches: float  # median per step


@dataclass(frozen=True)
class KernelInStep:
    """One kernel (GPU) or top-level operator (CPU) in the decode steps of a window: calls per
    step, mean time per call, and its time per step (its total over the steps / the steps)."""

    name: str
    calls_per_step: float
    us_per_call: float
    us_per_step: float


@dataclass(frozen=True)
class Window:
    """What one profiled window (one server start's trace) measured at its decode batch.

    ``time_per_step_us`` is the median device time of the decode steps at ``batch`` (the
    window's requests all decoding: its workload sends ``batch`` requests at once); the
    kernels' ``us_per_step`` are means, so they add up to the steps' mean, not median. Prefill
    and mixed steps, and decode steps at other batches, are in ``groups`` only."""

    source: str  # "kernel" (GPU) or "cpu_op" (CPU)
    batch: int
    decode_steps: int  # decode steps at ``batch``
    time_per_step_us: float  # NaN when the trace has no decode step at ``batch``
    time_per_token_us: float
    launches_per_step: float
    graph_replays_per_step: float  # NaN on CPU
    kernels: tuple[KernelInStep, ...]  # by time per step, largest first
    groups: tuple[StepGroup, ...]

    def figures(self) -> dict[str, float]:
        """The window's per-start figures under their metric-registry names (a figure stored
        as null reads as NaN: missing is not zero)."""
        return {
            name: float("nan") if (v := getattr(self, attr)) is None else float(v)
            for name, attr in FIGURES.items()
        }


# registry name -> Window attribute: the per-start metrics a profiled window gives
FIGURES = {
    "device_time_per_step_us": "time_per_step_us",
    "device_time_per_token_us": "time_per_token_us",
    "launches_per_step": "launches_per_step",
    "graph_replays_per_step": "graph_replays_per_step",
}
