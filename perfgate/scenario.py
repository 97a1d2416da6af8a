"""Scenarios: what to compare, how to launch each arm, and what counts as a regression.

A scenario is a TOML file (``scenarios/*.toml``; ``--model NAME`` picks the built-in one of
that name). Every field is validated here, and every error names the file, the field and the
fix. Unknown keys are errors too, so a typo never silently falls back to a default.

    name = "demo-cpu"
    model = "builtin:tiny-llama"          # a path, a hub id, or builtin:tiny-llama / tiny-taught
    served_model_name = "tiny"
    requires_gpu = false

    [server]                              # shared by both arms
    args = ["--enforce-eager", "--max-model-len", "2048"]
    env = { VLLM_CPU_KVCACHE_SPACE = "1" }
    startup_timeout_s = 300
    colocate = false                      # true: both servers up at once (if both fit)
    shared_compile_cache = false          # false: each arm its own vLLM cache in the run dir
    pin_cpus = "auto"                     # engine / API server / client on their own cores

    [workload]                            # as `perfgate bench`; defaults: perfgate.measure.workload
    num_prompts = 32
    input_len = 256
    output_len = 128
    max_concurrency = 8                   # "none": no cap
    num_warmups = 8
    request_rate = "inf"                  # or requests per second, with burstiness (gamma)
    stall_timeout_s = 600
    ttft_timeout_s = 120                  # deadlines per request from its send (default: none):
    request_timeout_s = 3600              # its first token, its end
    client_processes = "auto"             # processes reading the streams: one per 16 at once

    [compare]
    starts = 4                            # server starts per arm, in rounds of one per arm
                                          # (even: each arm goes first equally often)
    repeats_per_start = 1                 # timed repeats on each start (same in both arms)
    budget = "8, 2h"                      # instead of starts: add rounds until decided, at
                                          # most 8 starts per arm / 2 hours (either may go)
    seed = 7                              # the rounds' random order (default: drawn, recorded)
    confidence = 0.95                     # intervals; alpha = 1 - confidence is the run's
                                          # family-wise false-fail rate
    primary = ["median_tpot_ms"]          # must be decided for a pass (default: every gated)
    start_noise = { median_tpot_ms = 0.09 }  # calibrated between-start CV (stored A/A runs)
    start_noise_df = 30                   # its degrees of freedom
    start_noise_source = "H200, vLLM 0.26, 2026-12-07, docs/gpu/..."  # where it was measured

    [thresholds]                          # metric = tolerance (relative; 0.05 = 5%)
    median_tpot_ms = 0.05
    output_throughput = 0.05

    [accuracy]                            # GPQA through lm-eval, after the timed repeats
    source = "bundled"                    # bundled | local (path = FILE) | hub (gated)
    k = 2                                 # evaluations per arm, each with its own seed
    max_drop = 0.01                       # 1 pp: drop beyond it AND significant = regressed

    [profile]                             # a profiled window on every start (--profile)
    enabled = false
    output_len = 32                       # tokens per request; num_prompts: the concurrency
    [profile.candidate]
    expect_kernels = ["tinygemm", { pattern = "router_gemm", min_calls = 10 }]
    [profile.baseline]
    forbid_kernels = ["tinygemm"]

    [arms.baseline]                       # vllm = EXE | python = INTERPRETER | url = URL
    [arms.candidate]
    args = ["--max-num-seqs", "2"]
    env = { SOME_FLAG = "1" }
    model = "/ckpt/requantized"           # weights of its own (default: the scenario's model)
"""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

from perfgate import limits, redact
from perfgate import scenario_tables as tables
from perfgate.documents.eval import AccuracySpec
from perfgate.documents.spec import (
    ProfileSpec,
    Scenario,
    ScenarioError,
)
from perfgate.scenario_fields import Fields, integer, parse_budget

# The built-in scenarios: the repository's scenarios/ (perfgate/scenarios links to it), copied
# into the package when it is built, so an installed perfgate finds them too.
BUILTIN_DIR = Path(__file__).parent / "scenarios"
BUILTIN_TINY = "builtin:tiny-llama"
# the tiny model taught the bundled GPQA questions (``testmodels.taught``: right ~70% of the
# time at temperature 1, taught in float32): a model whose accuracy means something
BUILTIN_TAUGHT = "builtin:tiny-taught"
BUILTIN_MODELS = (BUILTIN_TINY, BUILTIN_TAUGHT)


def parse(doc: dict[str, Any], source: str) -> Scenario:
    top = Fields(source, "", doc)
    top.check_keys(
        {
            "name",
            "description",
            "model",
            "served_model_name",
            "requires_gpu",
            "server",
            "workload",
            "compare",
            "thresholds",
            "arms",
            "accuracy",
            "profile",
            "gate",
        }
    )
    server = top.sub("server")
    tables.replaced_keys(top.sub("compare"), server)
    server.check_keys(
        {
            "args",
            "env",
            "startup_timeout_s",
            "colocate",
            "shared_compile_cache",
            "pin_cpus",
        }
    )
    workload = tables.workload(top.sub("workload"), source)
    cmp = top.sub("compare")
    cmp.check_keys(
        {
            "starts",
            "repeats_per_start",
            "budget",
            "seed",
            "confidence",
            "primary",
            "start_noise",
            "start_noise_df",
            "start_noise_source",
            "parallel_gpus",
        }
    )
    thresholds = tables.thresholds(top.sub("thresholds"), "thresholds" in doc, source)
    arms = tables.arms(top.sub("arms"))
    accuracy = (
        tables.accuracy(top.sub("accuracy")) if "accuracy" in doc else AccuracySpec(enabled=False)
    )
    model = top.text("model", required=True)
    if model is None:  # unreachable: required=True raises
        raise ScenarioError(f"{top.where('model')} is required")
    server_args = server.str_list("args")
    server_env = server.env("env")
    redact.register_args(server_args)
    redact.register_env(server_env)
    for arm in arms.values():
        tables.check_server_args(source, (*server_args, *arm.args), workload, arm.name)
    return Scenario(
        name=tables.scenario_name(top, source),
        source=source,
        description=top.text("description", "") or "",
        model=model,
        served_model_name=top.text("served_model_name"),
        requires_gpu=top.flag("requires_gpu", False),
        server_args=server_args,
        server_env=server_env,
        startup_timeout_s=server.number("startup_timeout_s", 900.0, low=1.0, high=86400.0),
        colocate=server.flag("colocate", False),
        shared_compile_cache=server.flag("shared_compile_cache", False),
        pin_cpus=tables.pin_cpus(server),
        workload=workload,
        starts=integer(cmp, "starts", Scenario.starts, 1, limits.MAX_STARTS),
        repeats_per_start=integer(cmp, "repeats_per_start", 1, 1, limits.MAX_REPEATS),
        budget=tables.budget(cmp),
        seed=cmp.integer("seed", None),
        primary=tables.primary(cmp, thresholds),
        start_noise=tables.start_noise(cmp, thresholds),
        confidence=cmp.number("confidence", 0.95, low=0.5, high=0.999),
        parallel_gpus=tables.parallel_gpus(cmp, server, arms),
        thresholds=thresholds,
        arms=arms,
        accuracy=accuracy,
        profile=tables.profile(top.sub("profile")) if "profile" in doc else ProfileSpec(),
        gate=tables.change_rule(top.sub("gate")),
    )


def load(path: Path) -> Scenario:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except IsADirectoryError:
        raise ScenarioError(f"{path}: is a directory, not a scenario file") from None
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark some editors write is not TOML
    except UnicodeDecodeError:
        raise ScenarioError(
            f"{path}: not a UTF-8 text file; a scenario is TOML text (see scenarios/*.toml)"
        ) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML ({exc})") from None
    return parse(doc, str(path))


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def load_builtin(name: str) -> Scenario:
    path = BUILTIN_DIR / f"{name}.toml"
    if not path.exists():
        raise ScenarioError(
            f"--model {name!r} names no built-in scenario; built-in: "
            f"{', '.join(builtin_names())} (or pass --scenario FILE)"
        )
    return load(path)


def parse_env_pairs(pairs: tuple[str, ...], flag: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ScenarioError(f"{flag} takes KEY=VALUE, got {pair!r}")
        if (problem := limits.env_problem(key, value)) is not None:
            raise ScenarioError(f"{flag} {key}=...: {problem}")
        out[key] = value
    return out


def with_overrides(
    scenario: Scenario,
    *,
    arm_overrides: dict[str, dict[str, Any]],
    starts: int | None = None,
    repeats_per_start: int | None = None,
    budget: str | None = None,
    seed: int | None = None,
    skip_accuracy: bool = False,
    gpqa_path: str | None = None,
    profile: bool | None = None,
    weights: str | None = None,
) -> Scenario:
    """Apply command-line overrides (``--candidate-vllm`` etc.) on top of the file."""
    if weights is not None:
        if not weights.strip():
            raise ScenarioError("--weights is empty; give a checkpoint directory or a hub id")
        scenario = replace(scenario, model=weights)
    if profile is not None:  # --profile / --no-profile; None: the scenario's own
        scenario = replace(scenario, profile=replace(scenario.profile, enabled=profile))
    accuracy = scenario.accuracy
    if gpqa_path is not None:
        accuracy = replace(accuracy, enabled=True, source="local", path=gpqa_path)
    if skip_accuracy:
        accuracy = replace(accuracy, enabled=False)
    scenario = replace(scenario, accuracy=accuracy)
    arms = dict(scenario.arms)
    for name, ov in arm_overrides.items():
        arm = arms[name]
        launcher = {k: ov[k] for k in ("url", "vllm", "python") if ov.get(k)}
        if launcher:
            arm = replace(arm, **{"url": None, "vllm": None, "python": None, **launcher})
        if ov.get("model"):
            arm = replace(arm, model=ov["model"])
        if ov.get("env"):
            arm = replace(arm, env={**arm.env, **ov["env"]})
        if ov.get("args"):
            arm = replace(arm, args=(*arm.args, *ov["args"]))
        tables.validate_arm(arm, "command line")
        tables.check_server_args(
            "command line", (*scenario.server_args, *arm.args), scenario.workload, name
        )
        arms[name] = arm
    scenario = replace(scenario, arms=arms)
    if starts is not None:  # a fixed number of starts: no budget
        scenario = replace(scenario, starts=starts, budget=None)
    if budget is not None:
        try:
            parsed = None if budget.strip().lower() == "none" else parse_budget(budget)
        except ValueError as exc:
            raise ScenarioError(f"--budget: {exc}") from None
        scenario = replace(scenario, budget=parsed)
    if repeats_per_start is not None:
        scenario = replace(scenario, repeats_per_start=repeats_per_start)
    if seed is not None:
        scenario = replace(scenario, seed=seed)
    return scenario
