"""Engine steps in a vLLM worker trace: which steps decoded, at what batch, and how much device
time each took. The building block of a low-noise kernel metric (GPU time per decode step).

vLLM wraps every engine step in a profiler range named
``execute_context_{P}({p})_generation_{D}({d})``: P requests prefilling p tokens, D requests
decoding d tokens. On a GPU the range appears twice: on the host (``user_annotation``) and on
the device timeline (``gpu_user_annotation``, spanning the kernels the step ran, CUDA-graph
replays included). Steps are identified from these ranges, not assumed:

- **decode** steps: P = 0, D > 0. Their kernels, at a given batch d, are nearly the same from
  step to step and from start to start (on an H200 the router GEMM's 62 calls took 711.7,
  710.8 and 710.7 us on three starts), so their device time is a quiet signal.
- **prefill** (D = 0) and **mixed** steps: how prompts were batched into them depends on when
  requests arrived; they are reported apart and never mixed into the decode figure.
- steps with no request (P = D = 0) are skipped.

Device time of a step: on a GPU trace the summed duration of the kernels that start inside
the step's device range; on a CPU trace (no device timeline) the time the step's thread spent
in operators inside the host range (top-level operator durations, nested ones not counted
twice).
"""

from __future__ import annotations

import bisect
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from perfgate.documents.kernels import KernelInStep, StepGroup, Window

STEP = re.compile(r"execute_context_(\d+)\((\d+)\)_generation_(\d+)\((\d+)\)")


@dataclass(frozen=True)
class Step:
    prefill_reqs: int
    prefill_tokens: int
    decode_reqs: int
    decode_tokens: int
    device_us: float  # kernel time (GPU) or operator time (CPU) inside the step
    launches: int  # kernels (GPU) or top-level operators (CPU) inside the step
    span_us: float  # the step's range, start to end
    # (name, us) of each kernel (GPU) or top-level operator (CPU) inside the step
    kernels: tuple[tuple[str, float], ...] = field(default=(), repr=False, compare=False)

    @property
    def kind(self) -> str:
        if self.prefill_reqs == 0 and self.decode_reqs > 0:
            return "decode"
        if self.decode_reqs == 0 and self.prefill_reqs > 0:
            return "prefill"
        return "mixed" if self.prefill_reqs and self.decode_reqs else "idle"

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.decode_tokens


def _complete(events: Iterable[Any]) -> list[dict[str, Any]]:
    return [e for e in events if isinstance(e, dict) and e.get("ph") == "X" and "dur" in e]


def _step(e: dict[str, Any], inside: Sequence[tuple[str, float]]) -> Step | None:
    m = STEP.fullmatch(str(e.get("name")))
    if m is None:
        return None
    p, pt, d, dt = (int(g) for g in m.groups())
    device_us = sum(us for _, us in inside)
    return Step(p, pt, d, dt, device_us, len(inside), float(e["dur"]), tuple(inside))


def graph_replays(doc: dict[str, Any], batch: int) -> list[int]:
    """cudaGraphLaunch calls inside each decode step's host range at ``batch`` (host ranges:
    a step whose device range is missing from the trace still counts); [] on a CPU trace."""
    events = _complete(doc.get("traceEvents") or [])
    launches = sorted(
        float(e["ts"])
        for e in events
        if e.get("cat") in ("cuda_runtime", "cuda_driver") and e.get("name") == "cudaGraphLaunch"
    )
    if not any(e.get("cat") == "gpu_user_annotation" for e in events):
        return []
    out = []
    for e in events:
        m = STEP.fullmatch(str(e["name"])) if e.get("cat") == "user_annotation" else None
        if m is None or int(m.group(1)) != 0 or int(m.group(4)) != batch:
            continue
        lo, hi = float(e["ts"]), float(e["ts"]) + float(e["dur"])
        out.append(bisect.bisect_left(launches, hi) - bisect.bisect_left(launches, lo))
    return out


def steps_of(doc: dict[str, Any]) -> tuple[str, list[Step]]:
    """(``"kernel"`` or ``"cpu_op"``, the trace's engine steps in time order)."""
    events = _complete(doc.get("traceEvents") or [])
    ranges = [
        e
        for e in events
        if e.get("cat") == "gpu_user_annotation" and STEP.fullmatch(str(e["name"]))
    ]
    if ranges:
        ranges.sort(key=lambda e: float(e["ts"]))
        kernels = sorted(
            (float(e["ts"]), float(e["dur"]), str(e["name"]))
            for e in events
            if e.get("cat") == "kernel"
        )
        starts = [ts for ts, _, _ in kernels]
        out = []
        for r in ranges:
            lo, hi = float(r["ts"]), float(r["ts"]) + float(r["dur"])
            hits = kernels[bisect.bisect_left(starts, lo) : bisect.bisect_left(starts, hi)]
            step = _step(r, [(n, d) for _, d, n in hits])
            if step is not None and step.kind != "idle":
                out.append(step)
        return "kernel", out
    host = [
        e for e in events if e.get("cat") == "user_annotation" and STEP.fullmatch(str(e["name"]))
    ]
    ops: dict[tuple[Any, Any], list[tuple[float, float, str]]] = {}
    for e in events:
        if e.get("cat") == "cpu_op":
            ops.setdefault((e.get("pid"), e.get("tid")), []).append(
                (float(e["ts"]), float(e["dur"]), str(e["name"]))
            )
    for v in ops.values():
        v.sort()
    out = []
    for r in sorted(host, key=lambda e: float(e["ts"])):
        lo, hi = float(r["ts"]), float(r["ts"]) + float(r["dur"])
        thread = ops.get((r.get("pid"), r.get("tid")), [])
        first = bisect.bisect_left(thread, (lo, -1.0, ""))
        inside: list[tuple[str, float]] = []
        reach = lo
        for ts, dur, name in thread[first:]:
            if ts >= hi:
                break
            if ts >= reach:  # a top-level operator: not inside the previous one
                inside.append((name, min(ts + dur, hi) - ts))
                reach = ts + dur
        step = _step(r, inside)
        if step is not None and step.kind != "idle":
            out.append(step)
    return "cpu_op", out


def groups(steps: Sequence[Step]) -> list[StepGroup]:
    """Steps grouped by kind and batch: decode first, most frequent batch first."""
    by: dict[tuple[str, int], list[Step]] = {}
    for s in steps:
        by.setdefault((s.kind, s.tokens), []).append(s)
    order = {"decode": 0, "mixed": 1, "prefill": 2}
    out = []
    for (kind, tokens), ss in sorted(by.items(), key=lambda kv: (order[kv[0][0]], -len(kv[1]))):
        times = [s.device_us for s in ss]
        median = statistics.median(times)
        out.append(
            StepGroup(
                kind=kind,
                tokens=tokens,
                steps=len(ss),
                median_us=median,
                min_us=min(times),
                max_us=max(times),
                per_token_us=median / tokens if tokens else float("nan"),
                launches=statistics.median(s.launches for s in ss),
            )
        )
    return out


def decode_time_per_step(steps: Sequence[Step], batch: int | None = None) -> float:
    """Median device time of the decode steps at ``batch`` decode tokens (default: the most
    frequent decode batch in the trace); NaN without such steps (missing is not zero)."""
    decode = [s for s in steps if s.kind == "decode"]
    if not decode:
        return float("nan")
    if batch is None:
        counts: dict[int, int] = {}
        for s in decode:
            counts[s.decode_tokens] = counts.get(s.decode_tokens, 0) + 1
        batch = max(counts, key=lambda b: (counts[b], b))
    times = [s.device_us for s in decode if s.decode_tokens == batch]
    return statistics.median(times) if times else float("nan")


def window(doc: dict[str, Any], batch: int) -> Window:
    """The figures of one worker trace at decode batch ``batch``; NaN figures (missing is not
    zero) when no decode step ran at that batch."""
    source, found = steps_of(doc)
    at = [s for s in found if s.kind == "decode" and s.decode_tokens == batch]
    nan = float("nan")
    per_kernel: dict[str, list[float]] = {}
    for s in at:
        for name, us in s.kernels:
            acc = per_kernel.setdefault(name, [0, 0.0])
            acc[0] += 1
            acc[1] += us
    kernels = sorted(
        (
            KernelInStep(name, calls / len(at), total / calls, total / len(at))
            for name, (calls, total) in per_kernel.items()
        ),
        key=lambda k: (-k.us_per_step, k.name),
    )
    replays = graph_replays(doc, batch)
    median = statistics.median(s.device_us for s in at) if at else nan
    return Window(
        source=source,
        batch=batch,
        decode_steps=len(at),
        time_per_step_us=median,
        time_per_token_us=median / batch if at else nan,
        launches_per_step=statistics.median(s.launches for s in at) if at else nan,
        graph_replays_per_step=statistics.median(replays) if replays else nan,
        kernels=tuple(kernels),
        groups=tuple(groups(found)),
    )
