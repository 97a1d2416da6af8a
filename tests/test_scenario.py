import json
from dataclasses import replace
from pathlib import Path

import pytest

from perfgate import registry
from perfgate.documents.spec import Budget, ScenarioError
from perfgate.scenario import (
    builtin_names,
    load,
    load_builtin,
    parse,
    parse_env_pairs,
    with_overrides,
)
from perfgate.scenario_fields import parse_budget
from perfgate.scenario_tables import DEFAULT_THRESHOLDS

MINIMAL = {"model": "m", "arms": {"baseline": {}, "candidate": {}}}


def doc(**changes):
    d = {**MINIMAL, "arms": {"baseline": {}, "candidate": {}}}
    for key, value in changes.items():
        d[key] = value
    return d


def test_minimal_scenario_gets_the_default_gate():
    s = parse(doc(), "x.toml")
    assert s.model == "m" and s.starts == 4 and s.repeats_per_start == 1
    assert s.budget is None and s.primary is None and s.workload.max_concurrency == 8
    assert {t.metric: t.tolerance for t in s.thresholds} == DEFAULT_THRESHOLDS
    assert "output_throughput" in DEFAULT_THRESHOLDS
    assert registry.get("output_throughput").higher_is_better


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": 3}, "x.toml: model must be a string"),
        ({"modle": "m"}, "x.toml: modle is not a known field"),
        ({"workload": {"input_len": -1}}, "x.toml: workload.input_len must be an integer >= 1"),
        ({"workload": {"endpoint": "embed"}}, 'x.toml: workload.endpoint must be "completions"'),
        ({"server": {"args": "--enforce-eager"}}, "x.toml: server.args must be a list of strings"),
        (
            {"server": {"env": {"VLLM_X": 1}}},
            "x.toml: server.env.VLLM_X must be a string, got 1 (quote it)",
        ),
        ({"thresholds": {"median_tpot": 0.02}}, "x.toml: thresholds.median_tpot is not a known"),
        (
            {"thresholds": {"median_tpot_ms": -1}},
            "x.toml: thresholds.median_tpot_ms must be a number",
        ),
        ({"compare": {"starts": 0}}, "x.toml: compare.starts must be an integer >= 1"),
        ({"compare": {"repeats": 4}}, "x.toml: compare.repeats was replaced: the unit is now"),
        (
            {"server": {"restart_between_repeats": True}},
            "x.toml: server.restart_between_repeats was replaced",
        ),
        ({"compare": {"resamples": 2000}}, "x.toml: compare.resamples is no longer used"),
        ({"compare": {"budget": "8h3"}}, "x.toml: compare.budget: budget '8h3': '8h3' is neither"),
        ({"compare": {"budget": 1}}, "most starts per arm must be 2..200"),
        ({"compare": {"budget": "4, 5"}}, "gives the number of starts twice"),
        (
            {"compare": {"primary": ["p99_ttft_ms"]}},
            "x.toml: compare.primary: 'p99_ttft_ms' is not a gated metric",
        ),
        ({"compare": {"primary": []}}, "x.toml: compare.primary is empty"),
        (
            {"compare": {"start_noise": {"median_tpot": 0.1}}},
            "x.toml: compare.start_noise.median_tpot is not a known field",
        ),
        (
            {"compare": {"start_noise": {"median_tpot_ms": 0}}},
            "x.toml: compare.start_noise.median_tpot_ms must be a number in",
        ),
        ({"compare": {"start_noise_df": 5}}, "compare.start_noise_df is set without start_noise"),
        ({"arms": {"baseline": {}}}, "x.toml: arms.candidate"),
        (
            {"arms": {"baseline": {"url": "http://a", "vllm": "/x"}, "candidate": {}}},
            "arms.baseline sets url and vllm; give one",
        ),
        (
            {"arms": {"baseline": {"url": "localhost:1"}, "candidate": {}}},
            "arms.baseline.url must start with http://",
        ),
        (
            {"arms": {"baseline": {"vllm": "/no/such/vllm"}, "candidate": {}}},
            "arms.baseline.vllm: /no/such/vllm does not exist",
        ),
        (
            {"arms": {"baseline": {"env": {"A": 1}}, "candidate": {}}},
            "arms.baseline.env.A must be a string",
        ),
        (
            {"arms": {"baseline": {}, "candidate": {"url": "http://a", "model": "/ckpt"}}},
            "arms.candidate sets url and model: a running server serves the model it was started",
        ),
    ],
)
def test_every_bad_field_names_file_field_and_fix(changes, message):
    d = doc(**changes)
    if "arms" in changes and "candidate" not in changes["arms"]:
        d["arms"] = changes["arms"]
    with pytest.raises(ScenarioError) as info:
        parse(d, "x.toml")
    assert message in str(info.value)


def test_missing_candidate_arm_is_an_error():
    with pytest.raises(ScenarioError, match=r"arms\.candidate"):
        parse({"model": "m", "arms": {"baseline": {}}}, "x.toml")


def test_broken_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("model = ")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load(bad)
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load(tmp_path / "none.toml")


def test_builtin_scenarios_load_and_unknown_names_list_them():
    assert {"demo-cpu", "gpt-oss-120b"} <= set(builtin_names())
    gpt = load_builtin("gpt-oss-120b")
    assert gpt.requires_gpu and gpt.workload.max_concurrency == 8
    assert (gpt.workload.input_len, gpt.workload.output_len) == (1024, 1024)
    with pytest.raises(ScenarioError, match=r"built-in: .*demo-cpu"):
        load_builtin("llama-9000")


def test_command_line_overrides_replace_the_launcher_and_add_env_and_args(tmp_path):
    exe = tmp_path / "vllm"
    exe.write_text("")
    s = parse(
        doc(arms={"baseline": {}, "candidate": {"env": {"A": "1"}, "args": ["--x"]}}), "x.toml"
    )
    s = with_overrides(
        s,
        arm_overrides={"candidate": {"vllm": str(exe), "env": {"B": "2"}, "args": ("--y",)}},
        starts=5,
        repeats_per_start=2,
        seed=9,
    )
    cand = s.arms["candidate"]
    assert cand.vllm == str(exe) and cand.url is None
    assert cand.env == {"A": "1", "B": "2"} and cand.args == ("--x", "--y")
    assert (s.starts, s.repeats_per_start, s.seed, s.budget) == (5, 2, 9, None)


def test_budgets_in_starts_time_or_both():
    assert parse_budget("8") == Budget(8, None)
    assert parse_budget("45m") == Budget(None, 2700.0)
    assert parse_budget("8, 2h") == Budget(8, 7200.0)
    assert parse_budget("90s,3") == Budget(3, 90.0)
    assert Budget(None, 60.0).most_starts == 20  # wall time alone: a cap for the spending
    s = parse(doc(compare={"budget": "6, 1h", "starts": 2}), "x.toml")
    # --starts gives a fixed design; --budget replaces the scenario's; "none" drops it
    assert with_overrides(s, arm_overrides={}, starts=4).budget is None
    assert with_overrides(s, arm_overrides={}, budget="3").budget == Budget(3, None)
    assert with_overrides(s, arm_overrides={}, budget="none").budget is None
    with pytest.raises(ScenarioError, match="--budget: budget 'soon'"):
        with_overrides(s, arm_overrides={}, budget="soon")


def test_env_pairs_need_an_equals_sign():
    assert parse_env_pairs(("A=1", "B=x=y"), "--candidate-env") == {"A": "1", "B": "x=y"}
    with pytest.raises(ScenarioError, match="--candidate-env takes KEY=VALUE, got 'A'"):
        parse_env_pairs(("A",), "--candidate-env")


def test_shipped_scenario_files_parse():
    paths = sorted((Path(__file__).resolve().parents[1] / "scenarios").glob("*.toml"))
    assert sorted(p.stem for p in paths) == builtin_names() and len(paths) >= 3
    for path in paths:
        assert load(path).name == path.stem


def test_accuracy_section_is_validated_and_off_when_absent():
    assert parse(doc(), "x.toml").accuracy.enabled is False
    s = parse(doc(accuracy={"k": 4, "source": "bundled"}), "x.toml")
    assert s.accuracy.enabled and s.accuracy.k == 4
    with pytest.raises(ScenarioError, match=r"x.toml: accuracy.source must be"):
        parse(doc(accuracy={"source": "kaggle"}), "x.toml")
    with pytest.raises(ScenarioError, match=r"x.toml: accuracy.k must be an integer >= 1"):
        parse(doc(accuracy={"k": 0}), "x.toml")
    with pytest.raises(ScenarioError, match=r"accuracy.reasoning_effort must be low, medium"):
        parse(doc(accuracy={"reasoning_effort": "max"}), "x.toml")


def test_skip_accuracy_and_gpqa_path_overrides():
    s = parse(doc(accuracy={}), "x.toml")
    assert with_overrides(s, arm_overrides={}, skip_accuracy=True).accuracy.enabled is False
    local = with_overrides(s, arm_overrides={}, gpqa_path="/d/g.csv").accuracy
    assert (local.source, local.path) == ("local", "/d/g.csv")


def test_colocate_is_off_unless_asked():
    assert parse(doc(), "x.toml").colocate is False
    assert parse(doc(server={"colocate": True}), "x.toml").colocate is True
    with pytest.raises(ScenarioError, match=r"server.colocate must be true or false"):
        parse(doc(server={"colocate": "yes"}), "x.toml")


def test_a_byte_order_mark_is_not_a_toml_error(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + b'model = "m"\n[arms.baseline]\n[arms.candidate]\n')
    assert load(path).model == "m"


def test_an_arm_with_weights_of_its_own_serves_them_and_records_them(tmp_path):
    from perfgate.run.servers import server_spec

    d = doc(arms={"baseline": {}, "candidate": {"model": "/ckpt/requantized"}})
    sc = parse(d, "x.toml")
    assert sc.arms["candidate"].model == "/ckpt/requantized" and sc.arms["baseline"].model is None
    specs = {a: server_spec(sc, sc.arms[a], "/ckpt/main", tmp_path / f"{a}.log") for a in sc.arms}
    assert specs["baseline"].model == "/ckpt/main"
    assert specs["candidate"].model == "/ckpt/requantized"
    assert "/ckpt/requantized" in specs["candidate"].argv(8000)
    assert sc.to_json()["arms"]["candidate"]["model"] == "/ckpt/requantized"
    again = with_overrides(sc, arm_overrides={"baseline": {"model": "/ckpt/other"}})
    assert again.arms["baseline"].model == "/ckpt/other"


def test_weights_replace_the_scenarios_model_and_a_shape_only_folder_gets_random_weights(
    tmp_path,
):
    """--weights PATH: both arms serve PATH (an arm's own model still wins); a folder with a
    config and no weight files is served with --load-format dummy, a checkpoint is not, and a
    load format the arguments choose is kept."""
    from perfgate.run.servers import server_spec
    from perfgate.scenario import load_builtin

    shape = tmp_path / "shape"
    shape.mkdir()
    (shape / "config.json").write_text("{}")
    (shape / "tokenizer.json").write_text("{}")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    (ckpt / "model-00001-of-00002.safetensors").write_bytes(b"")

    sc = with_overrides(load_builtin("gpt-oss-120b"), arm_overrides={}, weights=str(shape))
    assert sc.model == str(shape)
    spec = server_spec(sc, sc.arms["baseline"], sc.model, tmp_path / "b.log")
    argv = spec.argv(8000)
    assert argv[argv.index("--load-format") + 1] == "dummy" and str(shape) in argv
    real = server_spec(sc, sc.arms["baseline"], str(ckpt), tmp_path / "b.log").argv(8000)
    assert "--load-format" not in real
    chosen = replace(sc, server_args=(*sc.server_args, "--load-format=safetensors"))
    argv = server_spec(chosen, chosen.arms["baseline"], str(shape), tmp_path / "b.log").argv(8000)
    assert argv.count("--load-format=safetensors") == 1 and "dummy" not in argv
    own = with_overrides(
        load_builtin("gpt-oss-120b"),
        arm_overrides={"candidate": {"model": str(ckpt)}},
        weights=str(shape),
    )
    assert own.model == str(shape) and own.arms["candidate"].model == str(ckpt)
    with pytest.raises(ScenarioError, match="--weights is empty"):
        with_overrides(sc, arm_overrides={}, weights=" ")


def test_the_shipped_shape_folder_is_served_with_random_weights():
    from perfgate.serve.server import load_format_args

    shape = str(Path(__file__).resolve().parents[1] / "examples" / "gpt-oss-120b-shape")
    assert load_format_args(shape, ()) == ("--load-format", "dummy")
    config = json.loads((Path(shape) / "config.json").read_text())
    assert config["num_hidden_layers"] == 36 and config["num_local_experts"] == 128
    assert config["quantization_config"]["quant_method"] == "mxfp4"
    assert config["layer_types"] == ["sliding_attention", "full_attention"] * 18
