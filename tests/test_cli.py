import json

import pytest
from click.testing import CliRunner

from perfgate.cli.main import main
from perfgate.environment import gpus
from perfgate.serve.server import free_port


def run(*args):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--random-input-len", "-5"], "--random-input-len"),
        (["--random-output-len", "0"], "--random-output-len"),
        (["--num-prompts", "0"], "--num-prompts"),
        (["--max-concurrency", "0"], "--max-concurrency"),
        (["--num-warmups", "-1"], "--num-warmups"),
        (["--endpoint", "embeddings"], "--endpoint"),
        (["--metric-percentiles", "p99"], "--metric-percentiles"),
        (["--metric-percentiles", "99,150"], "--metric-percentiles"),
        (["--request-rate", "0"], "--request-rate"),
        (["--burstiness", "-1"], "--burstiness"),
        (["--url", "localhost:8000"], "--url must start with http://"),
        (["--url", "http://x", "--serve", "m"], "--url and --serve exclude each other"),
        (["--serve-arg=--enforce-eager"], "--serve-arg needs --serve"),
    ],
)
def test_bad_bench_flags_exit_2_naming_the_flag(args, message):
    result = run("bench", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_unreachable_url_exits_2_and_says_what_to_check():
    port = free_port()  # nothing listens there
    result = run("bench", "--url", f"http://127.0.0.1:{port}", "--num-prompts", "1")
    assert result.exit_code == 2
    assert f"cannot reach http://127.0.0.1:{port}/v1/models" in result.output
    assert "is the server running" in result.output


def test_bench_help_documents_the_vllm_named_flags():
    result = run("bench", "--help")
    assert result.exit_code == 0
    for flag in (
        "--max-concurrency",
        "--random-input-len",
        "--random-output-len",
        "--num-prompts",
        "--num-warmups",
        "--seed",
        "--request-rate",
        "--endpoint",
        "--out",
    ):
        assert flag in result.output


def test_report_rejects_a_file_that_is_not_a_result(tmp_path):
    missing = run("report", str(tmp_path / "nope.json"))
    assert missing.exit_code == 2 and "no such file" in missing.output
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    result = run("report", str(other))
    assert result.exit_code == 2 and "not a perfgate result" in result.output


@pytest.mark.skipif(bool(gpus()), reason="this machine has a GPU")
def test_gpu_scenario_fails_fast_on_a_machine_without_a_gpu(server_starts):
    result = run("compare", "--model", "gpt-oss-120b")
    assert result.exit_code == 2
    assert "needs an NVIDIA GPU" in result.output and "demo-cpu" in result.output
    assert server_starts == []


def test_compare_needs_exactly_one_scenario_source():
    result = run("compare")
    assert result.exit_code == 2 and "give exactly one of --scenario NAME|FILE or --model NAME" in (
        result.output
    )
    result = run("compare", "--model", "nope")
    assert result.exit_code == 2 and "--model 'nope' names no built-in scenario" in result.output


def test_compare_rejects_a_bad_env_override():
    result = run("compare", "--model", "demo-cpu", "--candidate-env", "NOEQUALS")
    assert result.exit_code == 2
    assert "--candidate-env takes KEY=VALUE, got 'NOEQUALS'" in result.output


def test_bad_accuracy_input_fails_before_any_server_starts(tmp_path, monkeypatch, server_starts):
    missing = run("compare", "--model", "demo-cpu", "--gpqa-path", str(tmp_path / "no.csv"))
    assert missing.exit_code == 2 and "does not exist" in missing.output
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    scenario = tmp_path / "hub.toml"
    scenario.write_text(
        'model = "m"\n[accuracy]\nsource = "hub"\n[arms.baseline]\n[arms.candidate]\n'
    )
    gated = run("compare", "--scenario", str(scenario))
    assert gated.exit_code == 2 and "gated and no Hugging Face token" in gated.output
    scenario.write_text(
        'model = "m"\n[accuracy]\nsource = "hub"\nsubset = "diamnd"\n'
        "[arms.baseline]\n[arms.candidate]\n"
    )
    typo = run("compare", "--scenario", str(scenario))
    assert typo.exit_code == 2 and "accuracy.subset must be one of" in typo.output
    assert server_starts == []


def test_report_recompute_renders_a_stored_compare_result_again(tmp_path):
    from perfgate.documents.io import write_json
    from tests.test_markdown import run_doc

    path = tmp_path / "results.json"
    write_json(path, run_doc(6.0))
    result = run("report", str(path), "--recompute")
    assert result.exit_code == 0, result.output
    assert "Comparison recomputed from the stored repeats" in result.output
    assert "| Median TPOT (ms) |" in result.output
    bench = tmp_path / "bench.json"
    write_json(bench, {"schema": "perfgate.bench/1"})
    refused = run("report", str(bench), "--recompute")
    assert refused.exit_code == 2 and "--recompute needs a compare result" in refused.output


def test_ctrl_c_inside_a_connection_callback_interrupts_the_run_not_the_connection():
    # The signal lands while the event loop runs a connection's data_received (as it did in a
    # profiled window): uvloop turned a KeyboardInterrupt raised there into a broken connection
    # and the run ended "failed"; perfgate's handler has the loop raise it instead.
    import asyncio
    import os
    import signal

    import pytest

    from perfgate.cli.common import _sigterm_as_interrupt
    from perfgate.measure.client import run_async

    class Interrupted(asyncio.Protocol):
        def __init__(self, lost: asyncio.Future) -> None:
            self.lost = lost

        def data_received(self, data: bytes) -> None:
            os.kill(os.getpid(), signal.SIGINT)  # delivered here, inside the callback

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.lost.done():
                self.lost.set_result(exc)

    async def main() -> str:
        async def serve(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"data: x\n\n")
            await writer.drain()
            await asyncio.sleep(5)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        lost = loop.create_future()
        await loop.create_connection(lambda: Interrupted(lost), "127.0.0.1", port)
        exc = await asyncio.wait_for(lost, 3)
        return f"the connection broke instead: {exc!r}"

    previous = signal.signal(signal.SIGINT, _sigterm_as_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            print(run_async(main()))
    finally:
        signal.signal(signal.SIGINT, previous)


def test_escape_sequences_from_a_file_never_reach_the_terminal(tmp_path):
    """A stored file's (or a server's) text may carry terminal escapes: retitling the window,
    moving the cursor, hiding what follows. perfgate prints it without them."""
    import json
    import lzma
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    stored = root / "docs" / "gpu" / "results" / "h200-aa-pinning.json.xz"
    doc = json.loads(lzma.decompress(stored.read_bytes()))
    doc["error"] = "boom \x1b]0;pwned\x07 \x1b[2J\x1b[31mred\x1b[0m end"
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    for fmt in ("markdown", "text"):
        result = run("report", str(path), "--format", fmt)
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output and "\x07" not in result.output
        assert "pwned" in result.output and "red" in result.output  # the text itself stays


def test_an_error_message_with_escapes_is_printed_without_them():
    from perfgate.cli.common import _scrubbed, printable

    assert printable("a\x1b[31mb\x00c\x9bd\ne\tf") == "a[31mbcd\ne\tf"
    from rich.text import Text

    assert "\x1b" not in _scrubbed(Text.assemble(("error:", "bold red"), " x\x1b[1m")).plain


def test_a_url_with_credentials_and_an_api_key_is_refused_with_a_message(monkeypatch):
    """Both would go in the request's Authorization header (aiohttp refused with a traceback)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-abcdef12345")
    result = run("bench", "--url", "http://user:pw123456@127.0.0.1:9", "--num-prompts", "1")
    assert result.exit_code == 2, result.output
    assert "carries credentials (user:password@) and an API key is set" in result.output
    assert "pw123456" not in result.output and "Traceback" not in result.output


def test_a_report_in_a_ci_log_at_80_columns_cuts_no_header_or_verdict(tmp_path):
    """Not a terminal (a CI log, a pipe), at 80 columns: the report is the Markdown itself,
    so every header and verdict is whole (rich's tables squeezed them to "candida…")."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    stored = Path(__file__).resolve().parents[1] / "docs/gpu/results/h100-120b-tiled.json.xz"
    proc = subprocess.run(
        [sys.executable, "-m", "perfgate", "report", str(stored), "--format", "text"],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"}, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "…" not in out
    assert "| metric | baseline | candidate | change (CI) | detectable |" in out
    assert "| Device time per decode step (us) |" in out and "| regressed |" in out
    assert out.splitlines()[2].startswith("❌ **regressed**: Device time per decode step")


def test_every_command_has_examples_and_exit_codes_and_every_option_help():
    import click

    from perfgate.cli.main import main

    def commands(cmd, path):
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                yield from commands(sub, [*path, name])
        else:
            yield " ".join(path), cmd

    found = dict(commands(main, ["perfgate"]))
    assert {"perfgate compare", "perfgate gate", "perfgate history"} <= set(found)
    for name, cmd in found.items():
        assert "Example" in (cmd.help or ""), f"{name}: no example in --help"
        assert "Exit codes" in (cmd.help or ""), f"{name}: no exit codes in --help"
        bare = [p.opts for p in cmd.params if isinstance(p, click.Option) and not p.help]
        assert bare == [], f"{name}: options without help {bare}"


def test_served_model_is_the_flag_and_model_its_earlier_name_with_a_warning():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    old = run("bench", "--url", url, "--model", "tiny", "--num-prompts", "1")
    assert "--served-model from now on" in old.output and "cannot reach" in old.output
    new = run("bench", "--url", url, "--served-model", "tiny", "--num-prompts", "1")
    assert "from now on" not in new.output and "cannot reach" in new.output
    both = run("bench", "--url", url, "--served-model", "a", "--model", "b")
    assert both.exit_code == 2 and "give only one" in both.output
    assert "--served-model" in run("eval", "--help").output
    assert "--model" not in run("bench", "--help").output.replace("--served-model", "")


@pytest.mark.skipif(bool(gpus()), reason="this machine has a GPU")
def test_scenario_takes_a_builtin_name_as_model_does(server_starts):
    by_name = run("compare", "--scenario", "gpt-oss-120b")
    by_model = run("compare", "--model", "gpt-oss-120b")
    assert by_name.exit_code == by_model.exit_code == 2
    assert "needs an NVIDIA GPU" in by_name.output and "needs an NVIDIA GPU" in by_model.output
    assert server_starts == []


def test_profile_and_weights_flags_turn_the_scenario_both_ways():
    from perfgate.cli.common import scenario_from_flags
    from perfgate.documents.spec import ScenarioError
    from perfgate.scenario import load_builtin, with_overrides

    gpt = load_builtin("gpt-oss-120b")  # [profile] on
    assert with_overrides(gpt, arm_overrides={}, profile=None).profile.enabled
    assert not with_overrides(gpt, arm_overrides={}, profile=False).profile.enabled
    demo = load_builtin("demo-cpu")
    assert with_overrides(demo, arm_overrides={}, profile=True).profile.enabled

    flags = {
        f"{arm}_{k}": None for arm in ("baseline", "candidate") for k in
        ("url", "vllm", "python", "weights", "model")
    } | {"baseline_env": (), "candidate_env": (), "baseline_arg": (), "candidate_arg": (),
         "weights": None}  # fmt: skip
    new = scenario_from_flags(None, "demo-cpu", {**flags, "candidate_weights": "/w/new"})
    old = scenario_from_flags(None, "demo-cpu", {**flags, "candidate_model": "/w/new"})
    assert new.arms["candidate"].model == old.arms["candidate"].model == "/w/new"
    with pytest.raises(ScenarioError, match="earlier name of --candidate-weights"):
        scenario_from_flags(
            None, "demo-cpu", {**flags, "candidate_weights": "/a", "candidate_model": "/b"}
        )
