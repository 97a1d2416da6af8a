"""No secret reaches anything perfgate writes, against real vLLM servers: the candidate is
started with --api-key (so perfgate and lm-eval must authenticate to measure it at all), its
environment holds an HF_TOKEN, and the baseline is a running server reached through a URL with
a password."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from urllib.parse import urlsplit

from tests.e2e.conftest import perfgate

TOKEN = "hf_FAKEtoken0123456789"
API_KEY = "sk-FAKEapikey9876543210"
PASSWORD = "pw-FAKEpassword-4242"


def test_a_run_with_secrets_writes_none_of_them_and_its_reproduce_command_runs(
    vllm_server, tmp_path
):
    port = urlsplit(vllm_server.url).port
    baseline_url = f"http://perfgate:{PASSWORD}@127.0.0.1:{port}"
    run_dir = tmp_path / "secret-run"
    argv = [
        "compare",
        "--scenario",
        "tests/e2e/compare-cpu.toml",
        "--out-dir",
        str(run_dir),
        "--starts",
        "1",
        "--baseline-url",
        baseline_url,
        "--candidate-env",
        f"HF_TOKEN={TOKEN}",
        f"--candidate-arg=--api-key={API_KEY}",
    ]
    proc = perfgate(*argv)
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr[-3000:]
    doc = json.loads((run_dir / "results.json").read_text())
    # the candidate answered perfgate's authenticated requests, and lm-eval's
    assert all(r["valid"] for r in doc["arms"]["candidate"]["repeats"])
    assert len(doc["accuracy"]["arms"]["candidate"]["samples"]) == 48

    # none of the three values anywhere: results, report, server logs, lm-eval output, or
    # what perfgate printed
    written = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".log") for p in written)
    for path in written:
        data = path.read_bytes()
        for secret in (TOKEN, API_KEY, PASSWORD):
            assert secret.encode() not in data, f"{secret} in {path}"
    for secret in (TOKEN, API_KEY, PASSWORD):
        assert secret not in proc.stdout + proc.stderr
    server = doc["arms"]["candidate"]["servers"][0]
    assert server["env"]["HF_TOKEN"] == "***" and "--api-key=***" in server["argv"]

    # owner-only: the run directory, its logs and its reports
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    for name in ("report.md", "results.json", "candidate-1.log"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o600

    # report.md's reproduce command gives back exactly the arguments of the run once the
    # variables it names are set (the command itself echoes its arguments here)
    report = (run_dir / "report.md").read_text()
    command = report.split("Reproduce:", 1)[1].split("```")[1].strip()
    assert command.startswith("perfgate compare ")
    echo = "python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))'"
    env = {
        **os.environ,
        "HF_TOKEN": TOKEN,
        "VLLM_API_KEY": API_KEY,
        "BASELINE_URL_PASSWORD": PASSWORD,
    }
    replay = subprocess.run(
        ["sh", "-c", command.replace("perfgate", echo, 1)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(replay.stdout) == argv
