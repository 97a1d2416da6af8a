"""Checks before any server starts: the machine, the model, the accuracy source."""

from __future__ import annotations

import os
from pathlib import Path

from perfgate import accuracy as acc
from perfgate import environment, registry
from perfgate.documents.eval import AccuracyError
from perfgate.documents.spec import Scenario, ScenarioError
from perfgate.scenario import BUILTIN_MODELS, BUILTIN_TAUGHT, BUILTIN_TINY
from perfgate.serve.server import model_problem
from perfgate.testmodels import taught, tinymodel


def tiny_model_dir() -> Path:
    return Path(os.environ.get("PERFGATE_TINY_MODEL", Path.cwd() / ".cache" / "tiny-model"))


def preflight(scenario: Scenario) -> None:
    """Fail fast, before any server starts, on a machine that cannot run the scenario."""
    needs_server = [a for a in scenario.arms.values() if not a.url]
    if scenario.requires_gpu and needs_server:
        gpus = environment.gpus()
        if not gpus or "error" in gpus[0]:
            raise ScenarioError(
                f"scenario {scenario.name!r} needs an NVIDIA GPU to start its vLLM servers, "
                "and nvidia-smi found none on this machine; run it on a GPU machine, give "
                "both arms a running server (--baseline-url / --candidate-url), or try "
                "--scenario scenarios/demo-cpu.toml"
            )
    if scenario.accuracy.enabled:
        try:
            acc.preflight(scenario.accuracy)
        except AccuracyError as exc:
            raise ScenarioError(f"{scenario.source}: {exc}") from None
        try:
            import lm_eval  # noqa: F401
        except ImportError:
            raise ScenarioError(
                "the accuracy phase needs lm-eval: pip install 'perfgate[eval]' "
                "(or pass --no-accuracy)"
            ) from None
    windowed = [t.metric for t in scenario.thresholds if registry.get(t.metric).from_window]
    if windowed and not scenario.profile.enabled:
        raise ScenarioError(
            f"{scenario.source}: thresholds.{windowed[0]} is read from each server start's "
            "profiled window; turn it on with [profile] enabled = true (or --profile), or "
            "remove that threshold"
        )
    if scenario.profile.enabled:
        for arm in scenario.arms.values():
            if arm.url and not arm.trace_dir:
                raise ScenarioError(
                    f"{scenario.source}: arms.{arm.name} is a running server (url) and "
                    "[profile] is on: set arms."
                    f"{arm.name}.trace_dir to the folder that server writes torch-profiler "
                    "traces to (the torch_profiler_dir of its --profiler-config), or pass "
                    "--no-profile"
                )
    if any(not a.model for a in needs_server) and scenario.model not in BUILTIN_MODELS:
        problem = model_problem(scenario.model)
        if problem is not None:
            raise ScenarioError(f"{scenario.source}: model: {problem}")
    for arm in needs_server:
        if arm.model and (problem := model_problem(arm.model)) is not None:
            raise ScenarioError(f"{scenario.source}: arms.{arm.name}.model: {problem}")


def taught_model_dir() -> Path:
    """Where ``builtin:tiny-taught`` is built: beside the tiny model it is taught from."""
    return tiny_model_dir().parent / "taught-model"


def resolve_model(scenario: Scenario) -> str:
    """The scenario's model as vLLM takes it; a built-in test model is built on first use
    (seconds for the tiny model, about a minute on CPU to teach it) and cached."""
    if scenario.model == BUILTIN_TINY:
        return str(tinymodel.build(tiny_model_dir()))
    if scenario.model == BUILTIN_TAUGHT:
        return str(taught.build_taught(tinymodel.build(tiny_model_dir()), taught_model_dir()))
    return scenario.model
