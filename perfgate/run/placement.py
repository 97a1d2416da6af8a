"""Where a server start ran and what state the host and GPU were in, and the CPU pinning
perfgate applies to cut host noise (never touching the GPU's own settings).

Recorded per start (``results.json`` ``arms.<arm>.servers[i].facts``): the CPU affinity and
NUMA node(s) of every process of the server's process group (the API server is the group's
leader; the engine core and its workers are its children) and of perfgate's client, the host's
load average and CPU frequency, whether the arm's compile cache was cold, and, sampled through
``nvidia-smi`` while the timed repeats ran, the GPU's SM and memory clocks, its clock-event
(throttle) reasons, temperature and power.

Pinning (``[server] pin_cpus``; "auto" = on for GPU scenarios on a machine with 8 or more
usable cores): once a server is healthy, the engine and worker processes (every thread) go on
the first half of the cores of the GPU's NUMA node, the API server on the next quarter, and
perfgate's client, while it sends the timed repeats, on the rest. The engine's busy loop and
the GPU launches then never share a core with HTTP, tokenization or the client's reads.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

PROC = Path("/proc")
NODES = Path("/sys/devices/system/node")


def parse_cpulist(text: str) -> list[int]:
    """'0-3,8,10-11' -> [0, 1, 2, 3, 8, 10, 11]."""
    out: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out


def cpulist(cpus: Sequence[int]) -> str:
    """[0, 1, 2, 3, 8] -> '0-3,8'."""
    out: list[str] = []
    run: list[int] = []
    for c in sorted(set(cpus)):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def numa_nodes() -> dict[int, list[int]]:
    """NUMA node -> its CPUs (one node 0 with every CPU where sysfs says nothing)."""
    nodes = {}
    for d in sorted(NODES.glob("node[0-9]*")):
        with contextlib.suppress(OSError, ValueError):
            nodes[int(d.name[4:])] = parse_cpulist((d / "cpulist").read_text())
    return nodes or {0: sorted(os.sched_getaffinity(0))}


def nodes_of(cpus: Sequence[int], nodes: dict[int, list[int]]) -> list[int]:
    return sorted(n for n, members in nodes.items() if set(members) & set(cpus))


def gpu_node(gpus: str | None) -> int | None:
    """The NUMA node of the first GPU of ``gpus`` (CUDA_VISIBLE_DEVICES form), from its PCI
    device in sysfs; None when unknown."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    index = (gpus or "0").split(",")[0].strip() or "0"
    try:
        bus = subprocess.run(
            [exe, "-i", index, "--query-gpu=pci.bus_id", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
        # nvidia-smi prints 00000000:19:00.0; sysfs names it 0000:19:00.0
        node = int((Path("/sys/bus/pci/devices") / bus[-12:].lower() / "numa_node").read_text())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return node if node >= 0 else None


def group_pids(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` (a server's: its leader and children)."""
    out = []
    for d in PROC.glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # the field after the parenthesised command name: state ppid pgrp
            stat = (d / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
                out.append(int(d.name))
    return sorted(out)


def process_facts(pid: int, nodes: dict[int, list[int]]) -> dict[str, Any]:
    """Name, allowed CPUs, their NUMA nodes and thread count of one process."""
    fact: dict[str, Any] = {"pid": pid}
    with contextlib.suppress(OSError):
        fact["name"] = (PROC / str(pid) / "comm").read_text().strip()
        status = (PROC / str(pid) / "status").read_text()
        if m := re.search(r"^Cpus_allowed_list:\s*(\S+)", status, re.M):
            cpus = parse_cpulist(m.group(1))
            fact["cpus"] = cpulist(cpus)
            fact["numa_nodes"] = nodes_of(cpus, nodes)
        if m := re.search(r"^Threads:\s*(\d+)", status, re.M):
            fact["threads"] = int(m.group(1))
    return fact


def thread_facts() -> dict[str, Any]:
    """The calling thread's allowed CPUs and their NUMA nodes (perfgate's client)."""
    cpus = sorted(os.sched_getaffinity(0))
    return {"pid": os.getpid(), "cpus": cpulist(cpus), "numa_nodes": nodes_of(cpus, numa_nodes())}


def host_facts() -> dict[str, Any]:
    """Load average and CPU frequency (MHz: min, mean, max over CPUs) now."""
    out: dict[str, Any] = {}
    with contextlib.suppress(OSError):
        out["loadavg"] = [float(x) for x in os.getloadavg()]
    with contextlib.suppress(OSError):
        mhz = [
            float(m.group(1))
            for m in re.finditer(
                r"^cpu MHz\s*:\s*([\d.]+)", Path("/proc/cpuinfo").read_text(), re.M
            )
        ]
        if mhz:
            out["cpu_mhz"] = [min(mhz), sum(mhz) / len(mhz), max(mhz)]
    return out


def plan(node_cpus: Sequence[int]) -> dict[str, list[int]]:
    """engine / api_server / client core sets from the cores usable on the GPU's node."""
    cpus = sorted(node_cpus)
    half, three_q = len(cpus) // 2, (3 * len(cpus)) // 4
    return {"engine": cpus[:half], "api_server": cpus[half:three_q], "client": cpus[three_q:]}


def pin_wanted(setting: str, requires_gpu: bool) -> bool:
    """``[server] pin_cpus``: "auto" pins GPU scenarios on machines with >= 8 usable cores."""
    if setting == "auto":
        return requires_gpu and len(os.sched_getaffinity(0)) >= 8
    return setting == "true"


def pin_plan(gpus: str | None, slot: tuple[int, int] = (0, 1)) -> dict[str, list[int]] | None:
    """The core sets for a server on ``gpus``: cores of the GPU's NUMA node that perfgate may
    use (all usable cores when the node is unknown), or, for the i-th of k servers running at
    once (``slot`` = (i, k)), the i-th k-th of them; None when fewer than 4."""
    usable = sorted(os.sched_getaffinity(0))
    node = gpu_node(gpus)
    on_node = numa_nodes().get(node, usable) if node is not None else usable
    cpus = [c for c in usable if c in set(on_node)] or usable
    i, k = slot
    if k > 1:
        share = len(cpus) // k
        cpus = cpus[i * share : (i + 1) * share]
    return plan(cpus) if len(cpus) >= 4 else None


def _set_threads(pid: int, cpus: Sequence[int]) -> None:
    for task in (PROC / str(pid) / "task").glob("[0-9]*"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task.name), cpus)


def pin_server(pgid: int, cores: dict[str, list[int]]) -> None:
    """Every thread of the group's leader (the API server) on ``api_server``, of every other
    process (engine core, workers) on ``engine``."""
    for pid in group_pids(pgid):
        _set_threads(pid, cores["api_server"] if pid == pgid else cores["engine"])


def server_facts(pgid: int) -> list[dict[str, Any]]:
    nodes = numa_nodes()
    return [process_facts(pid, nodes) for pid in group_pids(pgid)]


@contextlib.contextmanager
def client_pinned(cpus: Sequence[int] | None) -> Iterator[None]:
    """perfgate's own thread on ``cpus`` while the timed repeats run (None: untouched)."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


GPU_QUERY = (
    "index",
    "clocks.sm",
    "clocks.mem",
    "clocks_event_reasons.active",
    "temperature.gpu",
    "power.draw",
)


class GpuSampler:
    """``nvidia-smi`` queried every ``interval_ms`` in the background (queries only) while a
    block of work runs; ``summary()`` per GPU: SM and memory clock (min / median / max), the
    clock-event reasons seen (OR of the bit masks), the highest temperature, median power."""

    def __init__(self, interval_ms: int = 500) -> None:
        self.rows: list[list[str]] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self.interval_ms = interval_ms

    def __enter__(self) -> GpuSampler:
        exe = shutil.which("nvidia-smi")
        if exe is None:
            return self
        try:
            self._proc = subprocess.Popen(
                [
                    exe,
                    f"--query-gpu={','.join(GPU_QUERY)}",
                    "--format=csv,noheader,nounits",
                    f"-lms={self.interval_ms}",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        except OSError:
            return self
        self._thread = threading.Thread(target=self._read, name="gpu-sampler", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self.rows.append([v.strip() for v in line.split(",")])

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def summary(self) -> list[dict[str, Any]]:
        by: dict[str, list[list[str]]] = {}
        for row in self.rows:
            if len(row) == len(GPU_QUERY):
                by.setdefault(row[0], []).append(row)
        out = []
        for index, rows in sorted(by.items()):

            def col(i: int, rows: list[list[str]] = rows) -> list[float]:
                vals = []
                for r in rows:
                    with contextlib.suppress(ValueError):
                        vals.append(float(r[i]))
                return sorted(vals)

            reasons = 0
            for r in rows:
                with contextlib.suppress(ValueError):
                    reasons |= int(r[3], 16)
            sm, mem, temp, power = col(1), col(2), col(4), col(5)
            out.append(
                {
                    "gpu": index,
                    "samples": len(rows),
                    "sm_mhz": [sm[0], sm[len(sm) // 2], sm[-1]] if sm else None,
                    "mem_mhz": [mem[0], mem[len(mem) // 2], mem[-1]] if mem else None,
                    "clock_event_reasons": hex(reasons),
                    "max_temperature_c": temp[-1] if temp else None,
                    "median_power_w": power[len(power) // 2] if power else None,
                }
            )
        return out
