"""``perfgate report --recompute`` of every stored GPU run, and of the two H200 runs that
contradicted each other under the old rule (issue 12): under the rule now, no confident verdict
of one contradicts another of the same comparison."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from perfgate.decide.judge import recompute
from perfgate.documents.io import read_json
from perfgate.documents.run import CompareRun, Repeat
from perfgate.documents.spec import Threshold
from perfgate.report.markdown import render_compare_markdown
from perfgate.run.runner import new_design
from perfgate.scenario import load
from tests.test_compare import tpot_repeat
from tests.test_markdown import ENV, bench_result

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "gpu"
RUNS = json.loads((FIXTURES / "issue12_h200_runs.json").read_text())["runs"]
STORED = sorted((ROOT / "docs" / "gpu" / "results").glob("*.json.xz"))
CONFIDENT = {"regressed", "improved", "no change"}
# verdicts that cannot both be true of one change
CONTRADICT = {("regressed", "improved"), ("regressed", "no change"), ("improved", "regressed")}


def issue_run(name: str) -> dict:
    """A compare document of one of issue 12's runs, each request at its repeat's TPOT."""
    scenario = load(ROOT / "scenarios" / "toy-gpt-oss-router-gemm-gpu.toml")
    scenario = replace(scenario, thresholds=(Threshold("median_tpot_ms", 0.01),), seed=0)
    run = CompareRun(
        scenario=scenario,
        command="examples/router_gemm_plugin/run_three_arms.sh",  # as it was then
        environment=ENV,
    )
    run.status, run.verdict, run.design = "complete", "regressed", new_design(scenario)
    for arm in ("baseline", "candidate"):
        for k, rep in enumerate(RUNS[name][arm]):
            data = tpot_repeat([rep["median_tpot_ms"]] * 32, rep["start"])
            run.repeats[arm].append(Repeat(bench_result(data), k, rep["start"]))
    return run.to_json()


def verdicts(doc: dict) -> dict[str, str]:
    again = recompute(doc)[0].to_json()
    return {r["metric"]: r["verdict"] for r in again["comparison"]}


def test_the_issue_runs_are_re_created_as_reported():
    run = CompareRun.from_json(issue_run("two-repeats"))
    medians = [r.metrics["median_tpot_ms"] for r in run.repeats["candidate"]]
    assert medians == pytest.approx([1.915, 1.802], abs=1e-3)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_neither_issue_run_is_confident_now(name):
    (verdict,) = verdicts(issue_run(name)).values()
    # two-repeats: the candidate's one start; four-restarted: 4 + 4 starts at ~7% spread
    # against a 1% tolerance
    assert verdict == "inconclusive"


def test_no_confident_verdict_contradicts_another_of_the_same_comparison():
    by_comparison: dict[str, list[dict[str, str]]] = {}
    for path in STORED:
        doc = read_json(path)  # compressed: read as perfgate reads stored results
        # the plugin runs (working, broken, broken with a shared cache) run the same change
        key = "router-gemm" if path.name.startswith("router-gemm") else path.name
        by_comparison.setdefault(key, []).append(verdicts(doc))
    for name in RUNS:
        by_comparison["router-gemm"].append(verdicts(issue_run(name)))
    seen = 0
    for runs in by_comparison.values():
        for a in runs:
            for b in runs:
                for metric in a.keys() & b.keys():
                    seen += 1
                    assert (a[metric], b[metric]) not in CONTRADICT, (metric, a, b)
    assert seen > 20
    # the A/A run never regresses or improves
    (aa,) = by_comparison["aa-4-repeats.json.xz"]
    assert not set(aa.values()) & {"regressed", "improved"}


# Issue 13's H200 runs: profiled windows on every start, GPU kernel time per decode step gated.
ISSUE13 = ROOT / "docs" / "gpu" / "results"


def run13(name: str) -> dict:
    return read_json(ISSUE13 / f"h200-{name}.json.xz")


def test_aa_on_the_gpu_decides_no_change_on_kernel_time_per_step():
    doc = run13("aa-pinning")
    again = recompute(doc)[0].to_json()
    rows = {r["metric"]: r for r in again["comparison"]}
    step = rows["device_time_per_step_us"]
    assert step["verdict"] == "no change" and step["n_baseline"] == step["n_candidate"] == 6
    assert step["high"] - step["low"] < 0.005  # the interval is under half a percent wide
    assert step["cv_between_units"] < 0.002  # vs ~5-10% for end-to-end TPOT
    assert rows["median_tpot_ms"]["cv_between_units"] > 10 * step["cv_between_units"]
    assert again["verdict"] == doc["verdict"] == "pass"
    assert again["profile"]["kernels"]["rows"] == []  # the same kernels in both arms


def test_the_slower_plugin_is_a_regression_explained_by_the_router_gemm():
    doc = run13("tiled-plugin")
    again = recompute(doc)[0].to_json()
    step = {r["metric"]: r for r in again["comparison"]}["device_time_per_step_us"]
    assert step["verdict"] == "regressed" and step["low"] > step["tolerance"]
    assert step["n_baseline"] == step["n_candidate"] <= 4
    rows = {r["name"]: r for r in doc["profile"]["kernels"]["rows"]}
    router = rows["gpt_oss_router_gemm_kernel"]
    assert router["change"] == "appeared" and router["candidate_calls_per_step"] == 2
    assert router["low"] > 20  # +22.9 us per step, its interval far from 0
    cublas = next(r for n, r in rows.items() if "splitK_bias" in n)
    assert cublas["change"] == "disappeared"
    report = render_compare_markdown(*recompute(doc))
    assert "`gpt_oss_router_gemm_kernel` | appeared | n/a -> 11.44 |" in report
    assert "| Device time per decode step (us) |" in report and "❌ **regressed**" in report


def test_the_decode_kernel_plugin_is_no_worse_and_the_broken_twin_is_still_invalid():
    rows = recompute(run13("decode-plugin"))[0].comparison
    step = next(r for r in rows if r.metric == "device_time_per_step_us").to_json()
    # faster per call than cuBLAS's pair, but ~2 us of an 830 us step: not decided as improved
    assert step["verdict"] == "no change" and step["estimate"] < 0
    broken = run13("broken-plugin-windows")
    assert broken["status"] == "invalid" and broken["exit_code"] == 2
    assert "no kernel matching 'gpt_oss_router_gemm' ran" in broken["error"]
    (cache,) = {s["env"]["VLLM_CACHE_ROOT"] for s in broken["arms"]["candidate"]["servers"]}
    assert cache.endswith("vllm-cache/candidate")  # its own compile cache


def test_the_split_k_plugin_is_improved_on_two_gpus_in_crossover():
    """The plugin's split-K kernel, stock vs plugin with both arms of every round at once on
    the machine's two H200s, GPUs swapped by round: improved, with the GPU a block effect
    (the two GPUs differ by ~0.5% per step, more than the change)."""
    doc = run13("splitk-plugin")
    again = recompute(doc)[0].to_json()
    rows = {r["metric"]: r for r in again["comparison"]}
    step = rows["device_time_per_step_us"]
    assert step["verdict"] == "improved" and step["high"] < 0
    assert step["method"] == "ols-log (GPU as block)" and step["n_baseline"] == 8
    for arm in ("baseline", "candidate"):
        gpus = [s["gpus"] for s in doc["arms"][arm]["servers"]]
        assert sorted(gpus) == ["0"] * 4 + ["1"] * 4  # each arm on each GPU equally often
    # the end-to-end guards: not regressed, but their noise leaves them undecided. The run
    # passed when it ran; undecided guards now hold a pass back: a +6% TPOT could hide more
    assert {rows[m]["verdict"] for m in ("median_tpot_ms", "output_throughput")} == {"inconclusive"}
    assert doc["verdict"] == "pass" and again["verdict"] == "inconclusive"
    head = render_compare_markdown(*recompute(doc)).splitlines()[2]
    assert "inconclusive: guards unverified" in head
    assert "Median TPOT (ms), Output token throughput" in head
    kernels = {r["name"]: r for r in doc["profile"]["kernels"]["rows"]}
    router = kernels["gpt_oss_router_gemm_splitk_kernel"]
    cublas = next(r for n, r in kernels.items() if "splitK_bias" in n)
    assert router["change"] == "appeared" and cublas["change"] == "disappeared"
    # per call the split-K kernel beats cuBLAS's GEMM (whose reduce is listed apart)
    assert router["candidate_us_per_call"] < cublas["baseline_us_per_call"]


def test_the_split_k_plugin_under_the_budget_stops_at_no_change_and_its_twin_is_invalid():
    """The same change under the scenario's budget: the interim look at 4 starts called it
    "no change" (its stringent share of alpha), a true statement that does not show the gain."""
    rows = recompute(run13("splitk-plugin-budget"))[0].comparison
    step = next(r for r in rows if r.metric == "device_time_per_step_us").to_json()
    assert step["verdict"] == "no change" and step["n_baseline"] == 4 and step["estimate"] < 0
    broken = read_json(ISSUE13 / "h200-splitk-broken.json.xz")
    assert broken["status"] == "invalid" and broken["exit_code"] == 2
    assert "no kernel matching 'gpt_oss_router_gemm' ran" in broken["error"]
