"""The pre-run decidability check: the smallest change a design can decide at calibrated noise."""

import math

import pytest

from perfgate.decide import decidability, stats
from perfgate.decide.design import check_design, design_decidability
from perfgate.documents.spec import ScenarioError, Threshold
from perfgate.scenario import parse

ALPHA = 0.025  # 95% two-sided, fixed design


def test_tpot_at_one_percent_and_nine_percent_noise_needs_far_more_than_eight_starts():
    (row,) = decidability.check(
        [Threshold("median_tpot_ms", 0.01)], {"median_tpot_ms": 0.09}, starts_allowed=8, alpha=ALPHA
    )
    # 2 (z_0.975 + z_0.9)^2 (0.09 / log 1.01)^2 ~ 1700: far beyond 8
    assert row.starts_needed is not None and row.starts_needed > 1000
    assert not row.decidable
    assert row.smallest is not None and 0.10 < row.smallest < 0.25
    text = row.message()
    assert "needs ~" in text and "starts per arm at 9% noise" in text and "allows 8" in text


def test_the_smallest_decidable_tolerance_is_the_inverse_of_the_starts_needed():
    cv, n = 0.004, 8
    tol = decidability.smallest_tolerance(cv, n, alpha=ALPHA, higher_is_better=False)
    margin = stats.margin_log(tol, False)
    assert stats.starts_for(cv, margin * 1.001, alpha=ALPHA, power=0.9, cap=10_000) <= n
    assert stats.starts_for(cv, margin * 0.97, alpha=ALPHA, power=0.9, cap=10_000) > n
    up = decidability.smallest_tolerance(cv, n, alpha=ALPHA, higher_is_better=True)
    assert up < tol  # a drop of x in a higher-is-better metric is a larger log step
    assert math.isinf(decidability.smallest_tolerance(cv, 1, alpha=ALPHA, higher_is_better=False))


def test_a_quiet_metric_is_decidable_and_an_uncalibrated_one_unchecked():
    rows = decidability.check(
        [Threshold("device_time_per_step_us", 0.005), Threshold("output_throughput", 0.05)],
        {"device_time_per_step_us": 0.002},
        starts_allowed=8,
        alpha=ALPHA,
    )
    assert rows[0].decidable and rows[0].starts_needed <= 8
    assert not rows[1].checked and "not checked" in rows[1].message()


SCENARIO = """
name = "x"
model = "builtin:tiny-llama"
[compare]
budget = "8"
start_noise = {{ median_tpot_ms = {cv} }}
start_noise_df = 12
start_noise_source = "H200, vLLM 0.26, 2026-12-07"
[thresholds]
median_tpot_ms = 0.01
[arms.baseline]
[arms.candidate]
"""


def _scenario(cv: float):
    import tomllib

    return parse(tomllib.loads(SCENARIO.format(cv=cv)), "x.toml")


def test_a_budget_is_judged_at_its_final_looks_share_of_alpha():
    sc = _scenario(0.002)
    assert sc.start_noise.source == "H200, vLLM 0.26, 2026-12-07"
    (row,) = design_decidability(sc)
    fixed = decidability.check(sc.thresholds, sc.start_noise.cv, starts_allowed=8, alpha=ALPHA)
    assert row.smallest > fixed[0].smallest  # 80% of alpha at the final look: a wider bound


def test_check_design_warns_or_refuses_under_strict():
    said: list[str] = []
    check_design(_scenario(0.09), said.append, strict=False)
    assert said[0] == "decidability (noise from H200, vLLM 0.26, 2026-12-07):"
    assert said[1].startswith("  warning: Median TPOT (ms) at 1% needs ~") and "allows 8" in said[1]
    with pytest.raises(ScenarioError, match=r"x.toml: --strict: the design cannot decide Median"):
        check_design(_scenario(0.09), said.append, strict=True)
    quiet: list[str] = []
    check_design(_scenario(0.001), quiet.append, strict=True)  # decidable: no refusal
    assert "decidable" in quiet[1]


def test_start_noise_source_without_start_noise_is_refused():
    import tomllib

    doc = tomllib.loads(
        'name = "x"\nmodel = "m"\n[compare]\nstart_noise_source = "H200"\n'
        "[arms.baseline]\n[arms.candidate]\n"
    )
    with pytest.raises(
        ScenarioError, match=r"compare\.start_noise_source is set without start_noise"
    ):
        parse(doc, "x.toml")


def test_the_cli_says_it_before_any_server_starts_and_strict_refuses(tmp_path):
    """`perfgate compare` on the reference scenario with a 5% throughput guard (its calibrated
    noise is 7.5% a start): the warning comes before anything starts; under --strict the run
    is refused (exit 2), naming the metric."""
    from click.testing import CliRunner

    from perfgate.cli.main import main
    from perfgate.scenario import BUILTIN_DIR

    text = (BUILTIN_DIR / "gpt-oss-120b.toml").read_text()
    text = text.replace("output_throughput = 0.15", "output_throughput = 0.05")
    assert "output_throughput = 0.05" in text
    path = tmp_path / "tight.toml"
    path.write_text(text)
    runner = CliRunner()
    args = ["compare", "--scenario", str(path), "--no-accuracy", "--out-dir", str(tmp_path / "r")]
    strict = runner.invoke(main, [*args, "--strict"])
    assert strict.exit_code == 2
    assert "--strict: the design cannot decide Output token throughput (tok/s) at 5% needs ~" in (
        strict.output
    )
    assert not (tmp_path / "r").exists()
    warned = runner.invoke(main, args)  # goes on, to the next check (no GPU here)
    assert "warning: Output token throughput (tok/s) at 5% needs ~" in warned.output
    assert "Device time per decode step (us) at 1%: decidable" in warned.output
    assert "Median TPOT (ms) at 1%: decidable" in warned.output
