"""The example GitHub workflows (.github/workflows) and the scripts they run (ci/*.sh): the
workflows valid against GitHub's workflow schema and clean under zizmor's audits (pedantic
persona), every step of their logic a call of a ci script step (which the e2e tests run on CPU
vLLM), the scripts clean under shellcheck, and every perfgate command line in them parsing with
this perfgate's CLI (all three linters from the package index, in the dev extra)."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml

from perfgate.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is in the dev extra: pip install -e '.[dev]'"
    return str(path)


def test_there_are_a_nightly_and_a_pr_workflow():
    assert {p.name for p in WORKFLOWS} == {"perfgate-nightly.yml", "perfgate-pr.yml"}


def test_workflows_match_githubs_schema():
    proc = subprocess.run(
        [
            tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            *map(str, WORKFLOWS),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflows_pass_zizmors_audits():
    proc = subprocess.run(
        [
            tool("zizmor"),
            "--offline",
            "--no-progress",
            "--persona",
            "pedantic",
            str(ROOT / ".github" / "workflows"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


SCRIPTS = sorted((ROOT / "ci").glob("*.sh"))


def perfgate_lines(path: Path) -> list[list[str]]:
    """Every `perfgate ...` (or `$PERFGATE ...`) command in a script, continuation lines
    joined, shell expansions replaced by a placeholder word."""
    text = path.read_text().replace("\\\n", " ")
    commands = "|".join(main.list_commands(click.Context(main)))
    out = []
    for line in text.splitlines():
        m = re.search(rf"(?:^|\s)(?:\S*/bin/perfgate|\$PERFGATE) ((?:{commands})\b.*)$", line)
        if not m:
            continue
        words = re.sub(r"\$\([^)]*\)", "X", m.group(1))  # $(command)
        words = re.sub(r'"\$\{\w+\[@\]\}"', "", words)  # "${array[@]}": its own check
        words = re.sub(r"\$\{?\w+(:-)?\}?", "X", words)  # $VAR, ${VAR}, ${VAR:-}
        out.append(shlex.split(words))
    return out


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_every_perfgate_command_line_in_a_ci_script_parses(path):
    lines = perfgate_lines(path)
    assert lines, f"{path.name} runs no perfgate command"
    for words in lines:
        ctx = main.make_context("perfgate", list(words), resilient_parsing=True)
        name, cmd, rest = main.resolve_command(ctx, list(words))
        assert cmd is not None, words
        try:
            cmd.make_context(name, rest)  # parses and validates every option, runs nothing
        except click.UsageError as exc:
            raise AssertionError(f"{path.name}: perfgate {' '.join(words)}: {exc}") from None


def script_steps(path: Path) -> set[str]:
    """The steps a ci script takes as its first argument (the labels of its last `case`)."""
    text = path.read_text()
    tail = text[text.rindex("case $step in") :]
    return set(re.findall(r"^\s+([\w-]+)\)", tail, flags=re.M))


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_each_step_of_a_workflow_calls_a_ci_script_step(path):
    """The workflows hold no logic of their own: set-up apart, every run block is a call of a
    step of ci/pr.sh or ci/nightly.sh, so what the e2e tests run is what the job runs."""
    doc = yaml.safe_load(path.read_text())
    calls = []
    for job in doc["jobs"].values():
        for step in job["steps"]:
            run = step.get("run")
            if run is None or step.get("name", "").startswith("Install"):
                continue
            calls += re.findall(r"perfgate/ci/(\w+\.sh) ([\w-]+)", run)
            assert "perfgate/ci/" in run, f"{path.name}: step {step.get('name')!r} is not a script"
    assert calls
    for script, step_name in calls:
        assert step_name in script_steps(ROOT / "ci" / script), (script, step_name)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_ci_scripts_pass_shellcheck(path):
    proc = subprocess.run([tool("shellcheck"), str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def git_in(repo: Path, *args: str) -> str:
    """git in ``repo`` with a throwaway identity; its output, stripped."""
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_a_change_to_compiled_code_asks_for_a_compiled_build(tmp_path):
    """pr.sh needs-compile: a Python-only change reuses vLLM's precompiled kernels
    (VLLM_USE_PRECOMPILED=1), a change under csrc/ or to a .cu file is built."""

    def git(*args: str) -> str:
        return git_in(tmp_path, *args)

    git("init", "-q")
    (tmp_path / "vllm").mkdir()
    (tmp_path / "vllm" / "a.py").write_text("x = 1\n")
    git("add", "-A")
    git("commit", "-qm", "base")
    base = git("rev-parse", "HEAD")
    (tmp_path / "vllm" / "a.py").write_text("x = 2\n")
    git("commit", "-qam", "python")
    python_only = git("rev-parse", "HEAD")
    (tmp_path / "csrc").mkdir()
    (tmp_path / "csrc" / "k.cu").write_text("// kernel\n")
    git("add", "-A")
    git("commit", "-qm", "kernel")
    kernel = git("rev-parse", "HEAD")

    def needs(a: str, b: str) -> str:
        proc = subprocess.run(
            [str(ROOT / "ci" / "pr.sh"), "needs-compile", str(tmp_path), a, b],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    assert needs(base, python_only) == "no"
    assert needs(base, kernel) == "yes"


def test_a_script_called_wrongly_says_how_to_call_it():
    for script in SCRIPTS:
        proc = subprocess.run([str(script), "no-such-step"], capture_output=True, text=True)
        assert proc.returncode == 2 and "step by step" in proc.stderr, script


def test_pr_build_caches_a_compiled_build_by_commit(tmp_path):
    """pr.sh build, on a stand-in for vLLM's repository (a package named vllm): a precompiled
    install for a Python-only change, and for a compiled one a wheel kept in the cache under
    its commit, which the next build of that commit installs instead of building again."""

    def git(*args: str) -> str:
        return git_in(repo, *args)

    repo = tmp_path / "vllm-src"
    (repo / "vllm").mkdir(parents=True)
    (repo / "vllm" / "__init__.py").write_text('__version__ = "0.0.1+test"\n')
    (repo / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "vllm"\nversion = "0.0.1"\n[tool.setuptools]\npackages = ["vllm"]\n'
    )
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "stand-in")
    sha = git("rev-parse", "HEAD")
    cache = tmp_path / "wheels"
    env = {**os.environ, "PERFGATE_WHEEL_CACHE": str(cache)}

    def build(venv: str, mode: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ROOT / "ci" / "pr.sh"), "build", str(repo), sha, str(tmp_path / venv), mode],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )

    quick = build("venv-pre")
    assert quick.returncode == 0, quick.stderr
    assert quick.stdout.strip().endswith("0.0.1+test") and not cache.exists()
    first = build("venv-a", "compiled")
    assert first.returncode == 0, first.stderr
    (wheel,) = (cache / sha).glob("*.whl")
    stamp = wheel.stat().st_mtime_ns
    again = build("venv-b", "compiled")  # a rerun: the cached wheel, not a new build
    assert again.returncode == 0 and again.stdout.strip().endswith("0.0.1+test"), again.stderr
    assert [p.stat().st_mtime_ns for p in (cache / sha).glob("*.whl")] == [stamp]
    assert git("worktree", "list").count("\n") == 0  # the build's work trees are gone
