"""``perfgate noise``: start_noise calibrated from stored compare results, checked against the
per-start values the runs themselves compared, and pasted back into a scenario that loads."""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from perfgate.cli.main import main
from perfgate.cli.noise import _up
from perfgate.decide.calibration import calibrate
from perfgate.documents.io import read_json
from perfgate.documents.run import CompareRun
from perfgate.scenario import load_builtin, parse

RESULTS = Path(__file__).resolve().parents[1] / "docs/gpu/results"
COMPLETE = [RESULTS / f"h100-120b-{n}.json.xz" for n in ("aa", "tiled", "tinygemm")]
METRICS = ["device_time_per_step_us", "median_tpot_ms", "median_itl_ms", "output_throughput"]


def _pooled_from_stored_values(paths: list[Path], metric: str) -> tuple[float, int]:
    """The pooled log SD from the per-start values each run's own comparison recorded."""
    ss, df = 0.0, 0
    for path in paths:
        row = next(r for r in read_json(path)["comparison"] if r["metric"] == metric)
        for values in (row["values_baseline"], row["values_candidate"]):
            logs = np.log(np.asarray(values, dtype=float))
            ss += float(((logs - logs.mean()) ** 2).sum())
            df += logs.size - 1
    return math.sqrt(ss / df), df


def test_the_pooled_noise_is_the_spread_of_the_values_the_runs_compared():
    runs = [(p.name, CompareRun.from_json(read_json(p))) for p in COMPLETE]
    compared = [{r["metric"] for r in read_json(p)["comparison"]} for p in COMPLETE]
    common = [m for m in METRICS if all(m in c for c in compared)]
    assert "device_time_per_step_us" in common and len(common) >= 3
    rows = calibrate(runs, common)
    for row in rows:
        expected, df = _pooled_from_stored_values(COMPLETE, row.metric)
        assert row.df == df == 3 + 3 + 1 + 1 + 1 + 1
        assert math.isclose(row.cv, expected, rel_tol=1e-9), row.metric
        assert row.starts == 16 and row.missing == 0
    # the A/A's candidate arm holds the one start 0.8% low in GPU time per step
    step = rows[0]
    assert step.widest is not None and step.widest.where == "h100-120b-aa.json.xz candidate"


def test_an_interrupted_run_counts_with_every_start_it_finished():
    path = RESULTS / "h100-120b-headline.json.xz"
    run = CompareRun.from_json(read_json(path))
    assert run.status == "interrupted"
    (row,) = calibrate([(path.name, run)], ["median_tpot_ms"])
    assert row.starts == 5 + 4 and row.df == 4 + 3  # one more baseline start than its last look


def test_rounding_errs_toward_more_noise():
    assert _up(0.005712) == 0.0058
    assert _up(0.075) == 0.075
    assert _up(0.00131) == 0.0014
    assert _up(0.3) == 0.3


def test_the_cli_prints_lines_that_a_scenario_takes_back(tmp_path):
    files = [str(p) for p in [*COMPLETE, RESULTS / "h100-120b-headline.json.xz"]]
    result = CliRunner().invoke(main, ["noise", *files, "--model", "gpt-oss-120b"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("## perfgate noise: gpt-oss-120b")
    assert "NVIDIA H100 80GB HBM3" in out and "vLLM 0.26.0" in out and "2026-12-07" in out
    assert "| Device time per decode step (us) |" in out
    block = re.search(r"```toml\n(.*?)```", out, re.S)
    assert block is not None
    pasted = tomllib.loads(block.group(1))
    assert set(pasted["start_noise"]) == set(METRICS)
    assert pasted["start_noise_df"] == 17
    # pasted into the scenario's [compare] table, it loads, and the pre-run check uses it
    doc = tomllib.loads(
        (Path(__file__).resolve().parents[1] / "scenarios/gpt-oss-120b.toml").read_text()
    )
    doc["compare"].update(pasted)
    scenario = parse(doc, "pasted.toml")
    assert scenario.start_noise is not None
    assert scenario.start_noise.cv == pasted["start_noise"]
    assert scenario.start_noise.source == pasted["start_noise_source"]


def test_a_run_directory_is_read_through_its_results_json(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps(read_json(COMPLETE[0])))
    result = CliRunner().invoke(main, ["noise", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "scenario gpt-oss-120b" not in result.output  # its own scenario: no note
    assert load_builtin("gpt-oss-120b").name in result.output


def test_bad_inputs_exit_2_naming_the_file_and_the_fix(tmp_path):
    missing = CliRunner().invoke(main, ["noise", str(tmp_path / "none.json")])
    assert missing.exit_code == 2 and "none.json" in missing.output

    bench = tmp_path / "bench.json"
    doc = read_json(COMPLETE[0])["arms"]["baseline"]["repeats"][0]
    bench.write_text(json.dumps(doc))
    wrong = CliRunner().invoke(main, ["noise", str(bench)])
    assert wrong.exit_code == 2 and "compare results" in wrong.output, wrong.output

    one = read_json(COMPLETE[0])
    for arm in ("baseline", "candidate"):
        one["arms"][arm]["repeats"] = one["arms"][arm]["repeats"][:1]
        one["profile"]["windows"][arm] = one["profile"]["windows"][arm][:1]
    single = tmp_path / "single.json"
    single.write_text(json.dumps(one))
    result = CliRunner().invoke(main, ["noise", str(single)])
    assert result.exit_code == 2 and "two or more starts per arm" in result.output, result.output

    other = CliRunner().invoke(main, ["noise", str(COMPLETE[0]), "--model", "no-such"])
    assert other.exit_code == 2 and "no-such" in other.output


def test_the_reference_scenario_carries_the_calibration_of_the_runs_it_names():
    """scenarios/gpt-oss-120b.toml's start_noise is what `perfgate noise` gives over the runs
    its start_noise_source names, so the pre-run check speaks from those measurements."""
    scenario = load_builtin("gpt-oss-120b")
    assert scenario.start_noise is not None and scenario.start_noise.source is not None
    names = re.search(r"h100-120b-\{([^}]*)\}", scenario.start_noise.source)
    assert names is not None
    paths = [RESULTS / f"h100-120b-{n}.json.xz" for n in names.group(1).split(",")]
    runs = [(p.name, CompareRun.from_json(read_json(p))) for p in paths]
    rows = calibrate(runs, [t.metric for t in scenario.thresholds])
    assert {r.metric: _up(r.cv) for r in rows} == dict(scenario.start_noise.cv)
    assert min(r.df for r in rows) == scenario.start_noise.df


def test_the_readme_command_runs_as_typed():
    """The README's `perfgate noise` line, run by a shell from the repository root."""
    import os
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    (line,) = re.findall(r"^perfgate noise .*$", (root / "README.md").read_text(), re.M)
    exe = Path(sys.executable).parent / "perfgate"
    assert exe.exists() or shutil.which("perfgate")
    env = {**os.environ, "PATH": f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        ["bash", "-c", line], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "h100-120b-tinygemm-broken.json.xz ended invalid" in done.stdout
    assert "start_noise_df = 17" in done.stdout
