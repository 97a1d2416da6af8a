"""How ``perfgate compare`` launches each arm's server (no server started here)."""

import contextlib
import types
from pathlib import Path

import pytest

from perfgate.run import runner
from perfgate.run.servers import server_spec
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

    def __init__(self):
        self.valid = True
        self.problems = []
        self.metrics = {"median_tpot_ms": 2.0, "median_ttft_ms": 30.0, "output_throughput": 1e3}

    def to_json(self):
        return {"metrics": dict(self.metrics), "records": []}


@pytest.mark.parametrize(
    ("repeats", "restart", "starts"),
    [
        (2, False, {"baseline": [0, 1], "candidate": [0, 0]}),  # A | B B | A
        (3, False, {"baseline": [0, 1, 1], "candidate": [0, 0, 1]}),  # A | B B | A A | B
        (2, True, {"baseline": [0, 1], "candidate": [0, 1]}),  # A | B | B | A
    ],
)
def test_every_repeat_records_the_server_start_it_ran_on(
    tmp_path, monkeypatch, repeats, restart, starts
):
    @contextlib.contextmanager
    def fake_serve(run, arm_name, spec, say, *, profile=False):
        run.servers[arm_name].append({"log": str(spec.log_path), "profile": profile})
        yield types.SimpleNamespace(url="http://127.0.0.1:1", death=lambda wait_s=0: None)

    monkeypatch.setattr(runner, "serve", fake_serve)
    monkeypatch.setattr(runner, "run_bench", lambda cfg, progress=None: _FakeResult())
    s = parse(
        {
            "model": "m",
            "arms": ARMS,
            "server": {"restart_between_repeats": restart},
            "compare": {"repeats": repeats},
        },
        "x.toml",
    )
    run = runner.CompareRun(scenario=s, run_dir=tmp_path, command="test")
    runner._run_blocks(run, "m", lambda _msg: None)
    got = {a: [r.start for r in run.repeats[a]] for a in ("baseline", "candidate")}
    assert got == starts
