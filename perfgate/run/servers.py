"""The servers of a run: launch specs (each arm its own compile cache), healthy starts
recorded in the run, death detection, and the workload each repeat sends."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from perfgate import redact
from perfgate.documents.bench import BenchConfig
from perfgate.documents.spec import ArmSpec, Scenario
from perfgate.measure.bench import ProgressFn
from perfgate.run import placement
from perfgate.run.state import LiveRun, RunFailed, SayFn
from perfgate.serve.server import ServerError, ServerSpec, VllmServer


def server_spec(scenario: Scenario, arm: ArmSpec, model: str, log_path: Path) -> ServerSpec:
    """The arm's server launch. ``log_path`` lies in the run directory, which also holds each
    arm's own vLLM cache (``compile_cache_root``) unless the scenario shares vLLM's default."""
    env = {**scenario.server_env, **arm.env}
    if not scenario.shared_compile_cache:
        env.setdefault("VLLM_CACHE_ROOT", str(compile_cache_root(log_path.parent, arm.name)))
    if arm.gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = arm.gpus
    kwargs: dict[str, Any] = {}
    if arm.python:
        kwargs["python"] = arm.python
    return ServerSpec(
        name=arm.name,
        model=arm.model or model,
        log_path=log_path,
        served_model_name=scenario.served_model_name,
        vllm_executable=arm.vllm,
        serve_args=(*scenario.server_args, *arm.args),
        env=env,
        startup_timeout_s=scenario.startup_timeout_s,
        **kwargs,
    )


def compile_cache_root(run_dir: Path, arm_name: str) -> Path:
    """vLLM's cache (torch.compile artifacts included) for one arm of one run. vLLM keys its
    compiled graphs on config and traced source, not on what a plugin reads at run time: with
    one shared cache, an arm can load the graph the other arm (or an earlier build) compiled
    and run code it does not contain. Starts of the same arm still reuse its own graphs."""
    return (run_dir / "vllm-cache" / arm_name).resolve()


@contextlib.contextmanager
def serve(
    run: LiveRun, arm_name: str, spec: ServerSpec, say: SayFn, *, slot: tuple[int, int] = (0, 1)
) -> Iterator[VllmServer]:
    """A healthy server for ``arm_name``, pinned (``[server] pin_cpus``; ``slot`` = (i, k):
    the i-th of k servers running at once, each pinned within its own share of the cores)
    and recorded in the run with where it ran; start failures -> RunFailed."""
    say(f"[{arm_name}] starting vLLM (log: {spec.log_path})")
    cache = spec.env.get("VLLM_CACHE_ROOT")
    cold = None if cache is None else not any(Path(cache).glob("*"))
    try:
        with VllmServer(spec) as server:
            record_start(run, arm_name, server, spec.log_path)
            cores = None
            setting = run.scenario.arms[arm_name].pin_cpus or run.scenario.pin_cpus
            if placement.pin_wanted(setting, run.scenario.requires_gpu):
                cores = placement.pin_plan(spec.env.get("CUDA_VISIBLE_DEVICES"), slot)
            assert server.proc is not None  # a healthy server is running
            if cores is not None:
                placement.pin_server(server.proc.pid, cores)
            run.servers[arm_name][-1]["facts"] = {
                "compile_cache_cold": cold,
                "pinning": None
                if cores is None
                else {k: placement.cpulist(v) for k, v in cores.items()},
                "processes": placement.server_facts(server.proc.pid),
                "host_at_start": placement.host_facts(),
            }
            run.save()
            say(
                f"[{arm_name}] healthy at {server.url} after {server.startup_s:.0f} s"
                + (
                    f", pinned (engine on cores {placement.cpulist(cores['engine'])})"
                    if cores
                    else ""
                )
            )
            yield server
    except ServerError as exc:
        raise RunFailed(str(exc), "failed") from exc


def check_alive(servers: dict[str, VllmServer], wait_s: float = 0.0) -> None:
    """RunFailed saying how a server died (exit code or signal, its log's cause line, the
    log's path), if one has; ``wait_s`` gives one that is going down time to finish."""
    for server in servers.values():
        if (death := server.death(wait_s)) is not None:
            raise RunFailed(f"{death}; everything measured before it is kept", "failed")


def record_start(run: LiveRun, arm_name: str, server: VllmServer, log: Path) -> None:
    """What the report's launch line and a reader of results.json need of a server start."""
    run.servers[arm_name].append(
        {
            "log": str(log),
            "argv": redact.args(server.argv),
            "startup_s": server.startup_s,
            "env": redact.env(server.spec.env),
            "gpus": server.spec.env.get("CUDA_VISIBLE_DEVICES"),
        }
    )


def workload_config(scenario: Scenario, url: str, arm: str) -> BenchConfig:
    """The scenario's workload as one ``perfgate bench`` run against ``arm``'s ``url``."""
    return BenchConfig(
        **asdict(scenario.workload),
        url=url,
        model=scenario.served_model_name,
        scenario=scenario.source,
        api_key=scenario.api_key(arm),
    )


def labelled(bar: ProgressFn | None, label: str) -> ProgressFn | None:
    if bar is None:
        return None
    return lambda phase, done, total: bar(f"{label} {phase}", done, total)
