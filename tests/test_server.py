import http.server
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest

from perfgate.serve.server import (
    ServerError,
    ServerSpec,
    VllmServer,
    first_error,
    group_members,
    how_it_ended,
    log_tail,
)


def test_first_error_finds_the_root_cause_not_the_last_reraise(tmp_path):
    log = tmp_path / "s.log"
    log.write_text(
        "INFO starting\n"
        "ValueError: Available memory on node 0 is less than desired\n"
        "Traceback (most recent call last):\n"
        "RuntimeError: Engine core initialization failed. See root cause above.\n"
    )
    assert first_error(log) == "ValueError: Available memory on node 0 is less than desired"
    log.write_text("usage: api_server.py [-h]\napi_server.py: error: unrecognized arguments: -x\n")
    assert first_error(log) == "api_server.py: error: unrecognized arguments: -x"
    assert log_tail(log, 1) == "api_server.py: error: unrecognized arguments: -x\n"


def test_argv_uses_the_api_server_module_unless_a_vllm_executable_is_given(tmp_path):
    spec = ServerSpec(
        name="a",
        model="m",
        log_path=tmp_path / "l",
        python="/py",
        served_model_name="tiny",
        serve_args=("--enforce-eager",),
    )
    assert spec.argv(8000) == [
        "/py",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "m",
        "--host",
        "127.0.0.1",
        "--port",
        "8000",
        "--served-model-name",
        "tiny",
        "--enforce-eager",
    ]
    exe = ServerSpec(name="b", model="m", log_path=tmp_path / "l", vllm_executable="/v/vllm")
    assert exe.argv(1)[:3] == ["/v/vllm", "serve", "m"]


def test_group_members_sees_children_of_a_process_group_and_skips_zombies():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], process_group=0)
    try:
        time.sleep(0.2)
        assert group_members(child.pid) == [child.pid]
        assert os.getpgid(child.pid) == child.pid
    finally:
        child.kill()
        time.sleep(0.2)
    assert group_members(child.pid) == []  # a zombie until reaped: not counted
    child.wait()


ULIMIT_WARNING = (
    "(APIServer pid=7) WARNING 11-28 10:00:00 [system_utils.py:123] Found ulimit of 1024 and "
    "failed to automatically increase with error current limit exceeds maximum limit. This can "
    "cause fd limit errors like `OSError: [Errno 24] Too many open files`.\n"
)


def test_first_error_passes_over_warnings_that_mention_an_exception(tmp_path):
    log = tmp_path / "s.log"
    log.write_text(
        ULIMIT_WARNING + "(APIServer pid=7) Traceback (most recent call last):\n"
        '(APIServer pid=7)   File "x.py", line 1, in <module>\n'
        "(APIServer pid=7) OSError: Invalid repository ID or local directory specified: "
        "'/no/such/model'.\n"
        "(APIServer pid=7) RuntimeError: Engine core initialization failed. See root cause above.\n"
    )
    assert first_error(log) == (
        "(APIServer pid=7) OSError: Invalid repository ID or local directory specified: "
        "'/no/such/model'."
    )


def test_how_a_process_ended_names_the_signal():
    assert how_it_ended(1) == "exited with code 1"
    assert how_it_ended(-9) == "was killed by signal 9 (SIGKILL)"


def _sleeper(tmp_path, name="fake", **kw):
    """A 'server' that never serves: a Python sleeping in the arm's place."""
    return ServerSpec(
        name=name,
        model="m",
        log_path=tmp_path / f"{name}.log",
        vllm_executable=str(_script(tmp_path, "import time; time.sleep(60)")),
        **kw,
    )


def _script(tmp_path, code):
    exe = tmp_path / "fake-vllm"
    exe.write_text(f"#!{sys.executable}\n{code}\n")
    exe.chmod(0o700)
    return exe


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_port_already_taken_fails_before_the_server_starts(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(ServerError, match=f"port {port} on 127.0.0.1 is already in use"):
            VllmServer(_sleeper(tmp_path, port=port)).start()
    assert not (tmp_path / "fake.log").exists() or "$" not in (tmp_path / "fake.log").read_text()


def test_a_health_answer_from_a_process_that_is_not_the_server_is_refused(tmp_path, monkeypatch):
    # Another process takes the port between perfgate's check and the server's bind, and
    # answers /health: perfgate must not measure it as if it were the arm's server.
    squatter = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    port = squatter.server_address[1]
    threading.Thread(target=squatter.serve_forever, daemon=True).start()
    monkeypatch.setattr("perfgate.serve.server.port_in_use", lambda host, port: False)
    try:
        server = VllmServer(_sleeper(tmp_path, port=port, startup_timeout_s=30))
        not_ours = "the process listening there is not this server"
        with pytest.raises(ServerError, match=not_ours), server:
            pass
        assert server.proc is None  # stopped, group and all
    finally:
        squatter.shutdown()
        squatter.server_close()


def test_a_server_that_dies_says_how_and_where_its_log_is(tmp_path):
    spec = _sleeper(tmp_path)
    server = VllmServer(spec)
    server.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert server.death() is None
    spec.log_path.write_text(ULIMIT_WARNING + "RuntimeError: CPU out of memory\n")
    server.proc.kill()
    server.proc.wait()
    assert server.death() == (
        "server 'fake' was killed by signal 9 (SIGKILL) during the run; cause in the log: "
        f"RuntimeError: CPU out of memory (full log: {spec.log_path})"
    )


def test_server_logs_are_readable_by_their_owner_only(tmp_path):
    spec = replace(_sleeper(tmp_path), vllm_executable=str(_script(tmp_path, "print('hi')")))
    with pytest.raises(ServerError, match="exited with code 0 before becoming"), VllmServer(spec):
        pass
    assert stat.S_IMODE(spec.log_path.stat().st_mode) == 0o600
