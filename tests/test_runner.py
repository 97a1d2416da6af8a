"""How ``perfgate compare`` launches each arm's server (no server started here)."""

import contextlib
import threading
import time
import types
from pathlib import Path

import pytest

from perfgate.decide.design import design_warnings
from perfgate.decide.judge import compare_repeats
from perfgate.run import runner
from perfgate.run.servers import server_spec
from perfgate.run.state import LiveRun
from perfgate.scenario import parse, with_overrides

ARMS = {"baseline": {}, "candidate": {"env": {"VLLM_PLUGINS": "mine"}}}


def spec(tmp_path: Path, arm: str, **top):
    s = parse({"model": "m", "arms": ARMS, **top}, "x.toml")
    return server_spec(s, s.arms[arm], "m", tmp_path / f"{arm}-1.log")


def test_each_arm_gets_a_torch_compile_cache_of_its_own(tmp_path):
    # On the GPU, a candidate whose code differs only at run time (an env switch in a plugin)
    # loaded the other candidate's compiled graph from vLLM's shared cache: arms never share one.
    base, cand = spec(tmp_path, "baseline"), spec(tmp_path, "candidate")
    assert base.env["VLLM_CACHE_ROOT"] != cand.env["VLLM_CACHE_ROOT"]
    for s in (base, cand):
        assert Path(s.env["VLLM_CACHE_ROOT"]).parent == tmp_path / "vllm-cache"


def test_the_cache_is_per_run_so_no_earlier_build_leaks_in(tmp_path):
    first = spec(tmp_path / "run1", "candidate").env["VLLM_CACHE_ROOT"]
    second = spec(tmp_path / "run2", "candidate").env["VLLM_CACHE_ROOT"]
    assert first != second


def test_shared_compile_cache_leaves_vllms_default(tmp_path):
    s = spec(tmp_path, "candidate", server={"shared_compile_cache": True})
    assert "VLLM_CACHE_ROOT" not in s.env


def test_an_arms_own_cache_root_wins(tmp_path):
    s = parse({"model": "m", "arms": ARMS}, "x.toml")
    s = with_overrides(s, arm_overrides={"candidate": {"env": {"VLLM_CACHE_ROOT": "/mine"}}})
    got = server_spec(s, s.arms["candidate"], "m", tmp_path / "candidate-1.log")
    assert got.env["VLLM_CACHE_ROOT"] == "/mine"


class _FakeResult:
    """What ``_run_repeats`` reads of a bench result."""

    def __init__(self, throughput=1e3):
        self.valid = True
        self.bursts = None  # steady delivery
        self.problems = []
        self.metrics = {
            "median_tpot_ms": 2.0,
            "median_ttft_ms": 30.0,
            "output_throughput": throughput,
        }

    def to_json(self):
        return {"metrics": dict(self.metrics), "records": []}


def fake_run(
    tmp_path, monkeypatch, compare, *, server=None, throughput=None, bench_s=0.0, together=False
):
    """A run whose servers and benches are stand-ins: what the rounds do, no vLLM. Each
    bench takes ``bench_s``; ``run.spans`` lists (arm, began, ended) of every bench.
    ``together``: each bench waits until the other arm's is running too (a barrier of two),
    so a round that ran its arms one after the other fails instead of passing by timing."""
    meet = threading.Barrier(2, timeout=60) if together else None
    order = []
    spans = []

    @contextlib.contextmanager
    def fake_serve(run, arm_name, spec, say, *, slot=(0, 1)):
        order.append(arm_name)
        gpus = spec.env.get("CUDA_VISIBLE_DEVICES")
        run.servers[arm_name].append({"log": str(spec.log_path), "gpus": gpus, "slot": slot})
        port = 1 if arm_name == "baseline" else 2
        yield types.SimpleNamespace(url=f"http://127.0.0.1:{port}", death=lambda wait_s=0: None)

    values = {a: iter((throughput or {}).get(a, [])) for a in ("baseline", "candidate")}

    def fake_bench(cfg, progress=None):
        arm = "baseline" if cfg.url.endswith(":1") else "candidate"
        began = time.monotonic()
        if meet is not None:
            meet.wait()  # BrokenBarrierError: the other arm's bench never ran at the same time
        if bench_s:
            time.sleep(bench_s)
        spans.append((arm, began, time.monotonic()))
        return _FakeResult(next(values[arm], 1e3))

    monkeypatch.setattr(runner, "serve", fake_serve)
    monkeypatch.setattr(runner, "run_bench", fake_bench)
    s = parse(
        {
            "model": "m",
            "arms": ARMS,
            "server": server or {},
            "compare": {"seed": 3, **compare},
            "thresholds": {"output_throughput": 0.05},
        },
        "x.toml",
    )
    run = LiveRun(scenario=s, run_dir=tmp_path, command="test")
    run.design = runner.new_design(s)
    runner._run_rounds(run, "m", lambda _msg: None)
    run.spans = spans
    return run, order


@pytest.mark.parametrize("colocate", [False, True])
def test_rounds_give_every_arm_equal_starts_in_a_balanced_random_order(
    tmp_path, monkeypatch, colocate
):
    run, order = fake_run(
        tmp_path,
        monkeypatch,
        {"starts": 4, "repeats_per_start": 2},
        server={"colocate": colocate},
    )
    got = {a: [r.start for r in run.repeats[a]] for a in ("baseline", "candidate")}
    assert got == {a: [0, 0, 1, 1, 2, 2, 3, 3] for a in got}
    # server starts in each round's order, from the recorded seed; two rounds, both orders
    rounds = [tuple(order[i : i + 2]) for i in range(0, 8, 2)]
    assert rounds == [runner.round_order(3, r) for r in range(4)]
    assert set(rounds[:2]) == {("baseline", "candidate"), ("candidate", "baseline")}
    assert run.design["seed"] == 3 and run.design["looks"] == []  # a fixed design: no looks


def test_a_budget_stops_at_the_first_look_that_decides(tmp_path, monkeypatch):
    # identical arms, no noise: "no change" at the first look (2 starts per arm)
    run, order = fake_run(tmp_path, monkeypatch, {"budget": "6"})
    assert len(order) == 4
    (look,) = run.design["looks"]
    assert look["starts"] == 2 and look["verdict"] == "pass"
    assert look["share"] == pytest.approx(0.2 / 4)  # one of four interim looks


def test_a_budget_runs_to_its_most_starts_while_undecided(tmp_path, monkeypatch):
    # starts 30% apart against a 5% tolerance: never decided; the last look takes what the
    # earlier ones left of alpha
    noisy = {"baseline": [1000.0, 1300.0] * 5, "candidate": [1300.0, 1000.0] * 5}
    run, order = fake_run(tmp_path, monkeypatch, {"budget": "4"}, throughput=noisy)
    assert len(order) == 8
    looks = run.design["looks"]
    assert [x["starts"] for x in looks] == [2, 3, 4]
    assert all(x["verdict"] == "inconclusive" for x in looks)
    assert sum(x["share"] for x in looks) == pytest.approx(1.0)


def test_a_wall_time_budget_stops_before_a_round_that_would_not_fit(tmp_path, monkeypatch):
    clock = iter(range(0, 10_000, 100))  # every reading of the clock: 100 s later
    monkeypatch.setattr(runner, "clock", lambda: float(next(clock)))
    noisy = {"baseline": [1000.0, 1300.0] * 5, "candidate": [1300.0, 1000.0] * 5}
    run, order = fake_run(tmp_path, monkeypatch, {"budget": "250s"}, throughput=noisy)
    # the clock is read at the start and at each look: 100 s at the look after 2 rounds (a
    # third round fits in 250 s), 200 s after 3 (a fourth would end near 267 s): stop at 3
    looks = run.design["looks"]
    assert [x["starts"] for x in looks] == [2, 3] and len(order) == 6
    assert sum(x["share"] for x in looks) == pytest.approx(1.0)  # the last spends the rest


def test_designs_that_cannot_give_a_speed_verdict_are_named_before_anything_runs():
    url_arm = {"baseline": {"url": "http://127.0.0.1:1"}, "candidate": {}}
    s = parse({"model": "m", "arms": url_arm, "thresholds": {"median_tpot_ms": 0.05}}, "x.toml")
    (warning,) = design_warnings(s)
    assert "the baseline is a running server (url)" in warning and "median_tpot_ms" in warning
    calibrated = parse(
        {
            "model": "m",
            "arms": url_arm,
            "thresholds": {"median_tpot_ms": 0.05},
            "compare": {"start_noise": {"median_tpot_ms": 0.05}},
        },
        "x.toml",
    )
    assert design_warnings(calibrated) == []
    one = parse({"model": "m", "arms": ARMS, "compare": {"starts": 1}}, "x.toml")
    assert "one server start per arm gives no speed verdict" in design_warnings(one)[0]
    assert design_warnings(parse({"model": "m", "arms": ARMS}, "x.toml")) == []
    split = parse(
        {"model": "m", "arms": {"baseline": {"gpus": "0"}, "candidate": {"gpus": "1"}}}, "x.toml"
    )
    assert "the arms run on different GPUs (baseline 0, candidate 1)" in (design_warnings(split)[0])
    # an odd fixed design leaves one arm first once more often: said; the default is even
    odd = parse({"model": "m", "arms": ARMS, "compare": {"starts": 3}}, "x.toml")
    (warning,) = design_warnings(odd)
    assert warning.startswith("starts = 3 is odd") and "up to 1/3 of that effect" in warning
    assert parse({"model": "m", "arms": ARMS}, "x.toml").starts % 2 == 0


def test_parallel_gpus_run_both_arms_at_once_and_swap_gpus_every_round(tmp_path, monkeypatch):
    # GPU "1" is 10% slower than GPU "0"; the candidate is no different from the baseline
    slow = {"0": 1000.0, "1": 900.0}
    gpu_of = {
        a: [runner.gpus_of(runner.round_order(3, r), ("0", "1"))[a] for r in range(4)]
        for a in ("baseline", "candidate")
    }
    run, _ = fake_run(
        tmp_path,
        monkeypatch,
        {"starts": 4, "parallel_gpus": ["0", "1"]},
        throughput={a: [slow[g] for g in gpu_of[a]] for a in gpu_of},
        together=True,
    )
    got = {a: [s["gpus"] for s in run.servers[a]] for a in ("baseline", "candidate")}
    assert got == gpu_of
    for a in got:  # crossover: every arm on each GPU equally often, never both on one
        assert sorted(got[a]) == ["0", "0", "1", "1"]
    assert all(b != c for b, c in zip(got["baseline"], got["candidate"], strict=True))
    # each server pinned within its own half of the cores
    assert {s["slot"] for a in got for s in run.servers[a]} == {(0, 2), (1, 2)}
    # the two arms' repeats of a round ran at once: every bench met the other arm's at the
    # barrier (run one after the other, the first would have waited in vain)
    assert sorted(arm for arm, _, _ in run.spans) == ["baseline"] * 4 + ["candidate"] * 4
    # logs numbered per start, both arms of a round distinct
    logs = [s["log"] for a in got for s in run.servers[a]]
    assert len(set(logs)) == 8
    # the GPU is a block in the model: its 10% is taken out, the arms' difference is 0
    compare_repeats(run)
    (row,) = run.comparison
    assert row.method == "ols-log (GPU as block)" and abs(row.estimate) < 1e-9
    assert row.verdict == "no change"


def test_parallel_gpus_are_two_different_gpus_on_arms_perfgate_starts():
    from perfgate.documents.spec import ScenarioError

    for bad in (["0"], ["0", "0"], [0, 1], "0,1"):
        with pytest.raises(ScenarioError, match="parallel_gpus must be two different GPUs"):
            parse({"model": "m", "arms": ARMS, "compare": {"parallel_gpus": bad}}, "x.toml")
    with pytest.raises(ScenarioError, match=r"remove colocate = true from \[server\]"):
        parse(
            {
                "model": "m",
                "arms": ARMS,
                "server": {"colocate": True},
                "compare": {"parallel_gpus": ["0", "1"]},
            },
            "x.toml",
        )
    url = {"baseline": {"url": "http://127.0.0.1:1"}, "candidate": {}}
    with pytest.raises(ScenarioError, match=r"arms\.baseline is a running server"):
        parse({"model": "m", "arms": url, "compare": {"parallel_gpus": ["0", "1"]}}, "x.toml")
