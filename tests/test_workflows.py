"""The example GitHub workflows (.github/workflows): valid against GitHub's workflow schema,
clean under zizmor's security audits (both from the package index, in the dev extra), and every
perfgate command line in them parses with this perfgate's CLI."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from perfgate.cli import main

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
        [tool("zizmor"), "--offline", "--no-progress", str(ROOT / ".github" / "workflows")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def perfgate_lines(path: Path) -> list[list[str]]:
    """Every `perfgate ...` command in the workflow's run blocks, continuation lines joined,
    shell expansions replaced by a placeholder word."""
    text = path.read_text().replace("\\\n", " ")
    commands = "|".join(main.list_commands(click.Context(main)))
    out = []
    for line in text.splitlines():
        m = re.search(rf"(?:^|\s)(?:\S*/bin/)?perfgate ((?:{commands})\b.*)$", line)
        if not m:
            continue
        words = re.sub(r"\$\([^)]*\)", "X", m.group(1))  # $(command)
        words = re.sub(r"\$\{?\w+\}?", "X", words)  # $VAR, ${VAR}
        out.append(shlex.split(words))
    return out


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_perfgate_command_line_in_a_workflow_parses(path):
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
