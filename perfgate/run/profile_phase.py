"""The profiled window of a server start: after the start's timed repeats (and accuracy), a
short fixed decode workload under vLLM's torch profiler, read into per-start figures (device
time per decode step, per output token, launches and CUDA-graph replays per step, each kernel's
time per call and per step: ``perfgate.steps.window``), a kernel table, and the expect/forbid
assertions.

The window never disturbs a timing: the profiler is configured at the server's launch but runs
only between ``/start_profile`` and ``/stop_profile``, after the start's last timed repeat.
Its workload is the same on every start: ``[profile] num_prompts`` requests (default: the
scenario's concurrency), all sent at once with the same seed, so once their prompts are
prefilled every request decodes at one batch (``batch_of``), the batch the figures are read at.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

from perfgate import profiling, steps
from perfgate.documents.bench import BenchConfig
from perfgate.documents.kernels import ProfileError
from perfgate.documents.run import ProfiledStart
from perfgate.documents.spec import Scenario
from perfgate.measure.bench import BenchError, run_bench
from perfgate.run.servers import workload_config
from perfgate.run.state import LiveRun, RunFailed, SayFn


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


def batch_of(scenario: Scenario) -> int:
    """The decode batch of the window: its requests, at most the scenario's concurrency."""
    w = scenario.workload
    n = scenario.profile.num_prompts or w.max_concurrency or w.num_prompts
    return min(n, w.max_concurrency or n)


def window_workload(scenario: Scenario, url: str, arm_name: str) -> BenchConfig:
    """The same short decode workload on every start: all requests at once, greedy, one seed
    (not the timed repeats' seeds, so no prompt is in the prefix cache from them)."""
    w, prof = scenario.workload, scenario.profile
    return replace(
        workload_config(scenario, url, arm_name),
        num_prompts=batch_of(scenario),
        output_len=min(prof.output_len, w.output_len),
        request_rate=math.inf,
        num_warmups=0,
        temperature=0.0,
        seed=w.seed + 2000,
    )


def _post(url: str, timeout_s: float) -> None:
    req = urllib.request.Request(url, method="POST", data=b"")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            resp.read()
    except (urllib.error.URLError, OSError) as exc:
        raise ProfileError(
            f"POST {url} failed ({exc}); the server must run with --profiler-config "
            "(perfgate adds it to the servers it starts; start a url arm's server with it)"
        ) from None


def profile_window(
    run: LiveRun, arm_name: str, url: str, start: int, trace_dir: Path, say: SayFn
) -> ProfiledStart:
    """Profile one window on the arm's start ``start`` and record it in the run (saved). A
    violated expect/forbid assertion -> RunFailed "invalid" (the window is kept)."""
    scenario = run.scenario
    prof = scenario.profile
    say(f"[{arm_name}] profiled window: {batch_of(scenario)} requests under the torch profiler")
    try:
        before = set(profiling.worker_traces(trace_dir))
        _post(f"{url}/start_profile", 60)
        try:
            result = run_bench(window_workload(scenario, url, arm_name))
        finally:
            _post(f"{url}/stop_profile", 900)
        if not result.valid:
            raise RunFailed(
                f"{arm_name}: the profiled window's workload was invalid: "
                + "; ".join(p.message for p in result.problems),
                "invalid",
            )
        traces = _wait_for_traces(trace_dir, before)
        docs = profiling.load_traces(traces)
    except (ProfileError, BenchError) as exc:
        raise RunFailed(f"{arm_name} profiled window: {exc}", "failed") from exc
    table = profiling.kernel_table(docs, [str(p) for p in traces])
    # rank 0's trace: with tensor parallelism every rank runs the same steps
    window = steps.window(docs[0], batch_of(scenario))
    profiled = ProfiledStart(start=start, traces=[str(p) for p in traces], window=window)
    run.windows[arm_name].append(profiled)
    run.profiles.setdefault(arm_name, table)
    checks = profiling.evaluate_rules(
        table, arm_name, prof.expect.get(arm_name, ()), prof.forbid.get(arm_name, ())
    )
    run.kernel_checks += [{**c, "start": start} for c in checks]
    run.save()
    say(
        f"[{arm_name}] profiled window: {window.decode_steps} decode steps at batch "
        f"{window.batch}, {window.time_per_step_us:.1f} us "
        f"{'GPU kernel' if window.source == 'kernel' else 'CPU operator'} time per step"
    )
    violations = [c["message"] for c in checks if not c["ok"]]
    if violations:
        raise RunFailed("; ".join(violations), "invalid")
    return profiled


def _wait_for_traces(trace_dir: Path, before: set[Path], timeout_s: float = 120) -> list[Path]:
    """Worker traces written since ``before`` (the front end's are skipped), once complete."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [p for p in profiling.worker_traces(trace_dir) if p not in before]
        if found and all(_stable(p) for p in found):
            return found
        if time.monotonic() > deadline:
            raise ProfileError(
                f"no complete worker trace appeared in {trace_dir} within {timeout_s:.0f} s "
                "after /stop_profile"
            )
        time.sleep(1)


def _stable(path: Path) -> bool:
    size = path.stat().st_size
    time.sleep(0.5)
    return size > 0 and path.stat().st_size == size
