"""Where a result was measured: host, Python, perfgate, GPUs, and the server's own version.

Captured once per run and stored inside the result, so a number is never separated from the
machine and software that produced it.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from perfgate import __version__

_GPU_FIELDS = (
    "index",
    "name",
    "uuid",
    "driver_version",
    "memory.total",
    "clocks.sm",
    "clocks.max.sm",
    "clocks.mem",
    "power.limit",
    "persistence_mode",
)


def gpus() -> list[dict[str, str]] | None:
    """One dict per GPU from ``nvidia-smi``; None when there is no nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={','.join(_GPU_FIELDS)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return [{"error": f"nvidia-smi failed: {exc}"}]
    rows = []
    for line in out.strip().splitlines():
        values = [v.strip() for v in line.split(",")]
        rows.append(dict(zip(_GPU_FIELDS, values, strict=False)))
    return rows


def cuda_version() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for token in out.split("CUDA Version:")[1:2]:
        return token.split()[0].strip("|")
    return None


def cpu_model() -> str:
    """The CPU's model name (vLLM's CPU kernels and the host side of a GPU run depend on it)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else platform.processor() or "unknown"


def uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The client's event loop: uvloop's where it imports (it comes with vLLM: less time per
    read between two streams' events than asyncio's own, docs/fidelity.md), else None for
    asyncio's. ``perfgate.measure.client.run_async`` runs on it; results record it."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def event_loop_name() -> str:
    return f"uvloop {package_version('uvloop')}" if uvloop_factory() else "asyncio"


def package_version(name: str) -> str | None:
    """An installed package's version, without importing it."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def capture() -> dict[str, Any]:
    """The client machine's environment."""
    return {
        "perfgate_version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "torch": package_version("torch"),
        "gpus": gpus(),
        "cuda_version": cuda_version(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "event_loop": event_loop_name(),
    }
