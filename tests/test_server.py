import os
import subprocess
import sys
import time

from perfgate.server import ServerSpec, first_error, group_members, log_tail


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
