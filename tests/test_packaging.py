"""perfgate installed as a package (a wheel, no checkout) has its built-in scenarios and data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from perfgate.environment import gpus

ROOT = Path(__file__).resolve().parents[1]


def test_the_installed_wheel_finds_its_builtin_scenarios_outside_the_checkout(tmp_path):
    wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    # a copy of what the wheel is built from: no build/ left over from earlier builds
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("perfgate", "scenarios"):
        skip = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=skip)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("perfgate-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    env = {**os.environ, "PYTHONPATH": str(site)}

    def perfgate(*code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *code], cwd=elsewhere, env=env, capture_output=True, text=True
        )

    where = perfgate("-c", "import perfgate; print(perfgate.__file__)")
    assert where.stdout.startswith(str(site)), where  # the wheel, not the checkout
    listed = perfgate(
        "-c",
        "from perfgate.scenario import builtin_names, load_builtin;"
        "from perfgate.accuracy import BUNDLED_GPQA;"
        "print(builtin_names(), load_builtin('demo-cpu').name, BUNDLED_GPQA.exists())",
    )
    assert listed.returncode == 0, listed.stderr
    assert "'demo-cpu'" in listed.stdout and "'gpt-oss-120b'" in listed.stdout
    assert listed.stdout.strip().endswith("demo-cpu True")
    if gpus() is None:  # the reference command finds its scenario, and says there is no GPU
        ref = perfgate("-m", "perfgate", "compare", "--model", "gpt-oss-120b")
        assert ref.returncode == 2 and "needs an NVIDIA GPU" in ref.stderr, ref.stderr
