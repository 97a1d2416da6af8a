from dataclasses import replace
from pathlib import Path

import numpy as np

from perfgate.decide.judge import judge_run
from perfgate.documents.bench import BenchConfig, BenchResult, ServerInfo
from perfgate.documents.run import CompareRun, Repeat
from perfgate.report.markdown import render_compare_markdown
from perfgate.run.runner import new_design
from perfgate.scenario import load
from tests.golden_util import assert_golden
from tests.test_compare import repeat

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    "hostname": "ci",
    "platform": "Linux",
    "python": "3.11.7",
    "gpus": None,
    "perfgate_version": "test",
}


def bench_result(data):
    """A bench result around a simulated repeat, as the tiny model's server would report."""
    server = ServerInfo("http://127.0.0.1:8000", ("tiny",), "tiny", 2048, "0.32.0")
    return BenchResult(
        config=BenchConfig(url=server.base_url),
        server=server,
        environment={},
        records=list(data.records),
        metrics=dict(data.metrics),
        problems=[],
        cross_checks=[],
    )


def run_doc(cand_tpot, status="complete", error=None, starts=None, thresholds=None):
    """A run of the e2e tests' CPU scenario, two starts per arm, one repeat each (``starts``:
    other starts)."""
    scenario = load(ROOT / "tests" / "e2e" / "compare-cpu.toml")
    if thresholds is not None:
        scenario = replace(scenario, thresholds=tuple(thresholds))
    scenario = replace(scenario, seed=1)
    starts = starts or {"baseline": [0, 1], "candidate": [0, 1]}
    rng = np.random.default_rng(0)
    run = CompareRun(
        scenario=scenario,
        command="perfgate compare --scenario tests/e2e/compare-cpu.toml",
        started_at="2026-01-01T00:00:00+0000",
        environment=ENV,
    )
    for arm, tpot in (("baseline", 3.0), ("candidate", cand_tpot)):
        for k in range(2):
            data = repeat(rng, tpot)
            start = starts[arm][k]
            run.repeats[arm].append(Repeat(bench_result(data), k, start))
        run.servers[arm].append(
            {
                "log": f"{arm}-1.log",
                "argv": ["python", "-m", "vllm"],
                "env": {"VLLM_CPU_KVCACHE_SPACE": "1"},
                "startup_s": 30.0,
            }
        )
    run.design = new_design(scenario)
    judge_run(run, accuracy=False)
    run.status, run.error = status, error
    return run.to_json()


def render(doc: dict) -> str:
    """report.md of a compare document, as ``perfgate report`` renders its file."""
    return render_compare_markdown(CompareRun.from_json(doc))


def test_regression_report_matches_golden_file():
    assert_golden("report_regressed.md", render(run_doc(6.0)))


def test_report_says_what_the_unit_was_and_when_starts_went_unsampled():
    one_start = {"baseline": [0, 0], "candidate": [0, 0]}
    md = render(run_doc(3.0, starts=one_start))
    assert "Start-to-start variation is not sampled" in md
    assert "Unit of replication: the server start (1 baseline, 1 candidate)" in md
    assert "inconclusive: start-to-start variation unsampled" in md
    md = render(run_doc(3.0))
    assert "Unit of replication: the server start (2 baseline, 2 candidate)" in md
    assert "seed 1" in md and "Holm" in md
    assert "not sampled" not in md


def test_report_of_a_failed_run_shows_the_error_and_what_was_measured():
    md = render(run_doc(3.0, status="failed", error="server 'candidate' exited with code 1"))
    assert "⛔ **run failed** (exit 2)" in md
    assert "server 'candidate' exited with code 1" in md
    assert "| Median TPOT (ms) |" in md


def test_accuracy_table_shows_scores_difference_p_and_verdict():
    from perfgate.decide.accuracy import paired_accuracy
    from perfgate.documents.eval import ArmAccuracy
    from perfgate.report.accuracy_md import render_accuracy_section

    base = [[1, 1], [0, 1], [1, 0], [0, 0]] * 10
    cand = [[1, 1], [0, 0], [1, 0], [0, 0]] * 10
    arms = {
        name: ArmAccuracy(
            source="bundled synthetic",
            task="perfgate_gpqa",
            k=2,
            questions=[str(i) for i in range(40)],
            correct=rows,
        )
        for name, rows in (("baseline", base), ("candidate", cand))
    }
    comparison = paired_accuracy(base, cand, max_drop=0.01)
    md = "\n".join(render_accuracy_section(arms, comparison))
    assert "**Accuracy** (GPQA via lm-eval, bundled synthetic)" in md
    assert "| accuracy | 50.0% (" in md and "| 37.5% (" in md
    assert "-12.5 pp (" in md
    assert "40 questions x k = 2 (baseline) / 2 (candidate), paired by question" in md
    assert f"| {comparison.verdict}" in md


def test_unbounded_and_missing_interval_ends_render_without_crashing(tmp_path):
    from perfgate.documents.io import read_json, write_json

    doc = run_doc(3.0)
    doc["comparison"][0].update(low=float("-inf"), high=float("inf"))
    write_json(tmp_path / "r.json", doc)  # JSON has no infinity: written as null
    md = render(read_json(tmp_path / "r.json"))
    assert "(n/a to n/a)" in md


def test_recompute_infers_server_starts_from_the_schedule_and_keeps_the_old_verdict():
    from perfgate.decide.judge import recompute

    doc = run_doc(6.0)
    for arm in doc["arms"].values():  # as stored before "start" was recorded
        for rep in arm["repeats"]:
            del rep["start"]
    del doc["design"]
    doc["scenario"].update(repeats=2, restart_between_repeats=False)  # perfgate.compare/1
    doc["scenario"]["colocate"] = False  # sequential: A | B B | A
    run, was = recompute(doc)
    again = run.to_json()
    starts = {a: [r["start"] for r in again["arms"][a]["repeats"]] for a in again["arms"]}
    assert starts == {"baseline": [0, 1], "candidate": [0, 0]}
    assert all(r["unit"] == "server start" for r in again["comparison"])
    # the candidate's one start gives no confident verdict any more
    assert all(r["verdict"] == "inconclusive" for r in again["comparison"])
    assert was.verdict == doc["verdict"]
    assert "start" not in doc["arms"]["baseline"]["repeats"][0]  # the input is left alone
    md = render_compare_markdown(run, was)
    assert f"the run itself reported **{doc['verdict']}** (exit {doc['exit_code']})" in md
    doc["scenario"]["colocate"] = True
    colocated = recompute(doc)[0].to_json()
    assert {
        r["start"] for a in ("baseline", "candidate") for r in colocated["arms"][a]["repeats"]
    } == {0}


def test_user_and_server_text_cannot_inject_markup_or_break_the_report():
    doc = run_doc(3.0, status="failed", error="boom\n```\n<img src=x onerror=alert(1)>")
    doc["scenario"]["name"] = "x\n## <script>alert(1)</script>"  # an older file's name
    doc["scenario"]["description"] = "a | b [link](http://evil) **bold**"
    doc["command"] = "perfgate compare ``` --x"
    doc["environment"]["hostname"] = "host`name|x"
    md = render(doc)
    lines = md.splitlines()
    # the name stays one heading line, its HTML neutralised
    assert lines[0] == "## perfgate: x ## &lt;script&gt;alert(1)&lt;/script&gt;"
    assert "<script>" not in md
    assert r"a \| b \[link\](http://evil) \*\*bold\*\*" in md
    # the error's own ``` cannot close its block: the fence is longer, so <img> stays text
    i = lines.index("boom")
    assert lines[i - 1] == "````" and lines[i + 1 : i + 4] == [
        "```",
        "<img src=x onerror=alert(1)>",
        "````",
    ]
    assert "````\nperfgate compare ``` --x\n````" in md
    assert "Host ``host`name|x``," in md


def test_the_paired_comparison_lists_the_most_changed_questions_with_every_reply():
    from perfgate.decide.accuracy import paired_accuracy
    from perfgate.documents.eval import ArmAccuracy
    from perfgate.report.accuracy_md import render_accuracy_section

    letters = {"baseline": [["A", "A"], ["B", "C"], ["D", "D"]],
               "candidate": [["C", None], ["B", "C"], ["D", "D"]]}  # fmt: skip
    targets = ["A", "B", "D"]
    arms = {}
    for arm, replies in letters.items():
        samples = [
            {"question": f"q{i}", "repeat": r, "target": f"({targets[i]})",
             "answer": f"({x})" if x else "[no answer]", "correct": int(x == targets[i])}
            for i, row in enumerate(replies) for r, x in enumerate(row)
        ]  # fmt: skip
        correct = [[int(x == targets[i]) for x in row] for i, row in enumerate(replies)]
        arms[arm] = ArmAccuracy("bundled", "perfgate_gpqa", 2, ["q0", "q1", "q2"], correct,
                                samples=samples)  # fmt: skip
    c = paired_accuracy(arms["baseline"].correct, arms["candidate"].correct, max_drop=0.01)
    md = "\n".join(render_accuracy_section(arms, c))
    assert "the candidate did worse on 1, better on 0 and the same on 2 of 3 questions" in md
    assert "| q0 | A | 2/2 | 0/2 | -100.0 pp | A A | C - |" in md
    assert "| q1 |" not in md  # unchanged questions stay out of the table


def test_a_stored_run_states_the_alpha_split_it_ran_with_not_todays():
    from perfgate.documents.io import read_json

    gpu = Path(__file__).resolve().parents[1] / "docs" / "gpu"
    # an older run (no interim_share recorded): derived from its first interim look, as the
    # report written on the GPU machine said it
    for name in ("h200-decode-plugin", "h200-splitk-plugin-budget"):
        doc = read_json(gpu / "results" / f"{name}.json.xz")
        assert "interim_share" not in doc["design"]
        line = "interim looks share 20% of alpha, the final look keeps the rest"
        assert line in render(doc) and line in (gpu / f"{name}.md").read_text()
    # a run that recorded another split renders that split
    doc = read_json(gpu / "results" / "h200-decode-plugin.json.xz")
    doc["design"]["interim_share"] = 0.1
    assert "interim looks share 10% of alpha" in render(doc)
    # nothing to derive it from: said, not guessed
    doc["design"].pop("interim_share")
    doc["design"]["looks"] = []
    assert "the interim looks' share of alpha was not recorded" in render(doc)


def test_text_from_outside_cannot_break_out_of_its_place_or_ping_anyone():
    """Commits, dates, labels and messages come from flags, servers and files: in report.md
    (pasted into PRs and issues) they stay literal, and @mentions and #references stay dead."""
    from perfgate.report.mdtext import md_code, md_text

    hostile = "x` <img src=y onerror=z> | @octocat fixes #12 [link](http://e)"
    text = md_text(hostile)
    assert "<img" not in text and "@octocat" not in text and "#12" not in text
    assert "&#64;octocat" in text and "&#35;12" in text and "\\|" in text and "\\[link\\]" in text
    code = md_code("abc`def | @x", in_table=True)
    assert code.startswith("``") and code.endswith("``") and "\\|" in code


def test_a_gate_commit_with_a_backtick_stays_inside_its_code_span():
    from pathlib import Path

    from perfgate.documents.io import read_json
    from perfgate.documents.nightly import Detection, GateOutcome, Night, NightMetric
    from perfgate.documents.run import CompareRun
    from perfgate.report.gate import render_gate_markdown

    stored = Path(__file__).resolve().parents[1] / "docs/gpu/results/h200-aa-pinning.json.xz"
    run = CompareRun.from_json(read_json(stored))
    commit = "abc` <b>bold</b> @octocat"
    m = NightMetric(1.0, 1.0, 0.0, 0.0, "no change", 2)
    night = Night("2026-12-07", commit, {}, {"median_tpot_ms": m}, "pass", None)
    outcome = GateOutcome(run, night, [night], Detection(), "pass", "no change point")
    md = render_gate_markdown(outcome)
    assert "``abc` <b>bold</b> @octocat``" in md  # inside a longer fence: literal, no mention
    assert md.count("<b>") == md.count("``abc` <b>bold</b>")
