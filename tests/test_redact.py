import json
import subprocess

import pytest

from perfgate import redact


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch):
    monkeypatch.setattr(redact, "_registered", set())


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("HF_TOKEN", True),
        ("VLLM_API_KEY", True),
        ("--api-key", True),
        ("aws_secret_access_key", True),
        ("DB_PASSWORD", True),
        ("GITHUB_AUTH", True),
        ("GOOGLE_APPLICATION_CREDENTIALS", True),
        ("HFTOKEN", True),
        ("GITHUB_PAT", True),
        ("DB_PASS", True),
        ("MYAPIKEY", True),
        ("SERVICE_PASSWD", True),
        ("PATH", False),
        ("--max-model-len", False),
        ("--max-num-batched-tokens", False),
        ("--tokenizer", False),
        ("VLLM_CPU_KVCACHE_SPACE", False),
        ("MAX_TOKENS", False),
    ],
)
def test_secret_names_are_told_by_their_words(name, secret):
    assert redact.is_secret_name(name) is secret


def test_env_args_and_urls_are_masked():
    assert redact.env({"HF_TOKEN": "hf_x", "A": "1"}) == {"HF_TOKEN": "***", "A": "1"}
    assert redact.args(
        ["--api-key", "sk-1", "--api-key=sk-2", "--max-num-batched-tokens", "8"]
    ) == [
        "--api-key",
        "***",
        "--api-key=***",
        "--max-num-batched-tokens",
        "8",
    ]
    assert redact.args(["--candidate-arg=--api-key=sk-3", "--url=http://u:p@h/"]) == [
        "--candidate-arg=--api-key=***",
        "--url=http://u:***@h/",
    ]
    assert redact.secrets_in_args(["--api-key", "sk-1", "--hf-token=t", "http://u:p@h"]) == [
        "sk-1",
        "t",
        "p",
    ]
    assert redact.url("http://user:pw@host:8000/v1") == "http://user:***@host:8000/v1"
    assert redact.url("http://host:8000/") == "http://host:8000/"


def test_registered_secrets_are_scrubbed_from_any_text_but_short_ones_are_not():
    redact.register("hf_secret_value")
    redact.register("1")  # AUTH_ENABLED=1: too short to scrub everywhere
    doc = {"a": ["x hf_secret_value y", 1, "1"], "b": "hf_secret_value"}
    assert redact.scrub(doc) == {"a": ["x *** y", 1, "1"], "b": "***"}
    assert redact.scrub_bytes(b"--api-key hf_secret_value\n") == b"--api-key ***\n"


def test_the_reproduce_command_refers_to_variables_and_still_runs(tmp_path):
    argv = [
        "perfgate",
        "compare",
        "--candidate-env",
        "HF_TOKEN=hf_fake_token_123",
        "--candidate-env=OTHER=plain value",
        "--candidate-arg=--api-key=sk-fake-key-456",
        "--baseline-url",
        "http://user:pw-fake-789@127.0.0.1:8000/",
        "--candidate-arg",
        "--enforce-eager",
    ]
    line = redact.reproduce(argv)
    for secret in ("hf_fake_token_123", "sk-fake-key-456", "pw-fake-789"):
        assert secret not in line
    assert '"HF_TOKEN=${HF_TOKEN}"' in line
    assert '"--candidate-arg=--api-key=${VLLM_API_KEY}"' in line
    assert '"http://user:${BASELINE_URL_PASSWORD}@127.0.0.1:8000/"' in line
    # a shell given the variables gets back exactly the original arguments
    env = {"HF_TOKEN": "hf_fake_token_123", "VLLM_API_KEY": "sk-fake-key-456"}
    env["BASELINE_URL_PASSWORD"] = "pw-fake-789"
    echo = "python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))'"
    script = line.replace("perfgate compare", echo, 1)
    out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == argv[2:]


def test_a_secret_in_a_url_query_is_masked_and_scrubbed():
    masked = redact.url("http://h:8000/v1?api_key=abcdef123&x=1")
    assert masked == "http://h:8000/v1?api_key=***&x=1"
    assert redact.url("http://u:pw123456@h/v1?token=zzzzzz99") == "http://u:***@h/v1?token=***"
    redact.register_url("http://h:8000/v1?access_token=qqqqqq777&model=m")
    assert "qqqqqq777" not in redact.scrub("cannot reach http://h:8000/v1?access_token=qqqqqq777")
