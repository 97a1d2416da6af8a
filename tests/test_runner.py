"""How ``perfgate compare`` launches each arm's server (no server started here)."""

from pathlib import Path

from perfgate.runner import server_spec
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
