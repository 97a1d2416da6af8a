"""The kernel-profile phase: a profiled server start per arm, its trace, the kernel table
and the expect/forbid assertions. Its timings are never used."""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

from perfgate import profiling
from perfgate.measure.bench import BenchError, run_bench
from perfgate.run.schedule import ARMS
from perfgate.run.servers import serve, server_spec, workload_config
from perfgate.run.state import CompareRun, RunFailed, SayFn


def profiler_args(trace_dir: Path) -> tuple[str, ...]:
    """vLLM's torch profiler, worker traces only, no Python stacks (they made a 30 MB trace of
    8 short CPU requests and a minute-long stop)."""
    config = {
        "profiler": "torch",
        "torch_profiler_dir": str(trace_dir.resolve()),
        "torch_profiler_with_stack": False,
        "ignore_frontend": True,
    }
    return ("--profiler-config", json.dumps(config))


def _post(url: str, timeout_s: float) -> None:
    req = urllib.request.Request(url, method="POST", data=b"")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            resp.read()
    except (urllib.error.URLError, OSError) as exc:
        raise profiling.ProfileError(
            f"POST {url} failed ({exc}); the server must run with --profiler-config "
            "(perfgate adds it to the servers it starts; start a --*-url server with it)"
        ) from None


def _profile_once(run: CompareRun, arm_name: str, url: str, trace_dir: Path) -> None:
    scenario, prof = run.scenario, run.scenario.profile
    w = scenario.workload
    base = replace(
        workload_config(scenario, url, arm_name),
        num_prompts=2,
        output_len=min(8, w.output_len),
        request_rate=math.inf,
        num_warmups=0,
        temperature=0.0,
        seed=w.seed + 1000,
    )
    run_bench(base)  # warm the server up before the profiler starts
    before = set(profiling.worker_traces(trace_dir))
    _post(f"{url}/start_profile", 60)
    try:
        result = run_bench(
            replace(
                base,
                num_prompts=prof.num_prompts,
                output_len=min(prof.output_len, w.output_len),
                seed=w.seed + 2000,
            )
        )
    finally:
        _post(f"{url}/stop_profile", 900)
    if not result.valid:
        raise RunFailed(
            f"{arm_name}: the profiled workload was invalid: "
            + "; ".join(p.message for p in result.problems),
            "invalid",
        )
    traces = _wait_for_traces(trace_dir, before)
    table = profiling.table_from_files(traces)
    run.profiles[arm_name] = table
    run.kernel_checks += profiling.evaluate_rules(
        table, arm_name, prof.expect.get(arm_name, ()), prof.forbid.get(arm_name, ())
    )
    run.save()


def _wait_for_traces(trace_dir: Path, before: set[Path], timeout_s: float = 120) -> list[Path]:
    """Worker traces written since ``before`` (the front end's are skipped), once complete."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [p for p in profiling.worker_traces(trace_dir) if p not in before]
        if found and all(_stable(p) for p in found):
            return found
        if time.monotonic() > deadline:
            raise profiling.ProfileError(
                f"no complete worker trace appeared in {trace_dir} within {timeout_s:.0f} s "
                "after /stop_profile"
            )
        time.sleep(1)


def _stable(path: Path) -> bool:
    size = path.stat().st_size
    time.sleep(0.5)
    return size > 0 and path.stat().st_size == size


def run_profiles(run: CompareRun, model: str, say: SayFn) -> None:
    """One profiled run per arm, on a server start of its own: profiler hooks never touch
    the timed repeats, and these timings are never used."""
    for arm_name in ARMS:
        arm = run.scenario.arms[arm_name]
        trace_dir = run.run_dir / f"profile-{arm_name}"
        trace_dir.mkdir(parents=True, exist_ok=True)
        say(
            f"[{arm_name}] profile: {run.scenario.profile.num_prompts} requests under the "
            "torch profiler"
        )
        try:
            if arm.url:
                _profile_once(run, arm_name, arm.url, trace_dir)
            else:
                spec = server_spec(
                    run.scenario, arm, model, run.run_dir / f"{arm_name}-profile.log"
                )
                spec = replace(spec, serve_args=(*spec.serve_args, *profiler_args(trace_dir)))
                with serve(run, arm_name, spec, say, profile=True) as server:
                    _profile_once(run, arm_name, server.url, trace_dir)
        except (profiling.ProfileError, BenchError) as exc:
            raise RunFailed(f"{arm_name} profile: {exc}", "failed") from exc
        t = run.profiles[arm_name]
        top = t.rows[0] if t.rows else None
        say(
            f"[{arm_name}] profile: {len(t.rows)} distinct {t.source} names"
            + (f", top {profiling.short_name(top.name, 60)} ({top.share:.0%})" if top else "")
        )
