"""The floors of docs/architecture.md as checked contracts: import-linter's contracts in
pyproject.toml hold for the package, and an import that crosses a floor or closes a loop breaks
them (checked on a copy of the package with one such import added)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over the package under ``root`` with the contracts of its
    pyproject.toml, as `make lint` runs it."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=300,
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "perfgate", tmp_path / "perfgate",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_package_keeps_every_contract():
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def add_line(path: Path, line: str) -> None:
    """``line`` after the module's ``from __future__`` import."""
    text = path.read_text()
    marker = "from __future__ import annotations\n"
    assert marker in text, path
    path.write_text(text.replace(marker, marker + line + "\n", 1))


def test_a_document_that_imports_a_stage_breaks_the_floor(copy):
    add_line(copy / "perfgate" / "documents" / "compare.py", "from perfgate.run import state")
    proc = lint_imports(copy)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "documents are the floor" in proc.stdout and "BROKEN" in proc.stdout
    assert "perfgate.documents.compare -> perfgate.run.state" in proc.stdout


def test_a_loop_between_two_modules_of_a_package_breaks_the_contract(copy):
    # family imports stats; stats importing family closes a loop
    add_line(copy / "perfgate" / "decide" / "stats.py", "from perfgate.decide import family")
    proc = lint_imports(copy)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no import loops between the modules of a package BROKEN" in proc.stdout


def test_accuracy_that_decides_breaks_its_contract(copy):
    add_line(copy / "perfgate" / "accuracy.py", "from perfgate.decide import accuracy")
    proc = lint_imports(copy)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "accuracy grades with lm-eval and never decides" in proc.stdout


def test_no_module_imports_perfgate_inside_a_function():
    """Imports of perfgate sit at the top of a module, where the contracts (and a reader) see
    them; a function-level import is how a loop hides."""
    import ast

    found = []
    for path in sorted((ROOT / "perfgate").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                names = []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                if any(n == "perfgate" or n.startswith("perfgate.") for n in names):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, found
