"""``perfgate compare``: owns the phases, the server starts and the A B B A order.

Plan: preflight (machine and model checks, before any server starts) -> for each block of the
interleaved schedule, start that arm's server (or use its URL), send warmups, run the block's
repeats with ``perfgate bench``'s engine, stop the server -> compare -> verdict.

The schedule interleaves arms as A B B A A B ... so slow drift of the machine (thermal, clocks,
background load) falls on both arms alike. By default arms run one at a time, so both never
compete for the hardware, and consecutive repeats of one arm share a server start unless
``restart_between_repeats`` is set; with ``colocate`` both servers stay up and the repeats
alternate one by one. Repeat ``k`` of both arms uses the same seed, hence the same prompts, and no
server sees the same prompt twice (no prefix-cache hits across repeats).

``results.json`` is rewritten after every repeat and at every exit (complete, invalid, failed,
interrupted), so nothing measured is lost when a later phase fails.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from perfgate import __version__
from perfgate import accuracy as acc
from perfgate.decide import verdict as judge
from perfgate.decide.comparison import compare
from perfgate.decide.stats import AccuracyComparison
from perfgate.measure.bench import BenchError, ProgressFn, run_bench
from perfgate.run.preflight import preflight, resolve_model
from perfgate.run.profile_phase import run_profiles
from perfgate.run.schedule import ARMS, blocks, schedule
from perfgate.run.servers import check_alive, labelled, serve, server_spec, workload_config
from perfgate.run.state import CompareRun, Repeat, RunFailed, SayFn, make_run_dir
from perfgate.scenario import Scenario
from perfgate.serve.server import VllmServer


def run_compare(
    scenario: Scenario,
    run_dir: Path,
    command: str,
    progress: SayFn | None = None,
    bench_progress: ProgressFn | None = None,
) -> CompareRun:
    """Run the whole comparison. Raises ``RunFailed`` (results written) when it cannot finish.

    ``progress`` gets one line per phase; ``bench_progress`` (optional) per-request progress
    of each repeat, as ``(label, done, total)``."""
    say = progress or (lambda _msg: None)
    preflight(scenario)
    run = CompareRun(
        scenario=scenario, run_dir=run_dir, command=command, bench_progress=bench_progress
    )
    make_run_dir(run_dir)
    run.save()
    try:
        model = resolve_model(scenario)
        _run_blocks(run, model, say)
        compare_repeats(run)
        if scenario.accuracy.enabled:
            run.accuracy_comparison = compare_accuracy(run)
        run.verdict = verdict_of(run)
        if scenario.profile.enabled:
            run_profiles(run, model, say)
            violations = [c["message"] for c in run.kernel_checks if not c["ok"]]
            if violations:
                raise RunFailed("; ".join(violations), "invalid")
        run.status = "complete"
    except KeyboardInterrupt:
        run.status, run.error = "interrupted", "interrupted by the user (Ctrl-C / SIGTERM)"
        failure = RunFailed(run.error, run.status)
        failure.run = run
        raise failure from None
    except RunFailed as exc:
        run.status, run.error = exc.status, str(exc)
        exc.run = run
        raise
    except Exception as exc:
        run.status, run.error = "failed", f"{type(exc).__name__}: {exc}"
        failure = RunFailed(str(exc))
        failure.run = run
        raise failure from exc
    finally:
        run.save()
        with contextlib.suppress(OSError):  # the results are safe; the report can be redone
            run.write_report()
        shutil.rmtree(run_dir / "vllm-cache", ignore_errors=True)  # compiled graphs, not results
    return run


def _run_colocated(run: CompareRun, model: str, say: SayFn) -> None:
    """Both arms' servers up at once (when both fit), so the schedule alternates repeat by
    repeat with no restart: A B B A A B ... Each server starts when the schedule first needs
    it, so a candidate that cannot start leaves the baseline's first repeat measured."""
    scenario = run.scenario
    urls = {a: scenario.arms[a].url for a in ARMS if scenario.arms[a].url}
    servers: dict[str, VllmServer] = {}
    with contextlib.ExitStack() as stack:
        for arm_name in schedule(scenario.repeats):
            if arm_name not in urls:
                log = run.run_dir / f"{arm_name}-1.log"
                spec = server_spec(scenario, scenario.arms[arm_name], model, log)
                server = stack.enter_context(serve(run, arm_name, spec, say))
                servers[arm_name], urls[arm_name] = server, server.url
            first = not run.repeats[arm_name]
            own = {arm_name: servers[arm_name]} if arm_name in servers else {}
            _run_repeats(run, arm_name, str(urls[arm_name]), 1, say, warm=first, servers=own)
            check_alive(servers)
        if scenario.accuracy.enabled:  # after every timed repeat of both arms
            for arm_name in ARMS:
                _run_accuracy(run, arm_name, str(urls[arm_name]), model, say, servers)
            check_alive(servers)


def _run_blocks(run: CompareRun, model: str, say: SayFn) -> None:
    scenario = run.scenario
    if scenario.colocate:
        _run_colocated(run, model, say)
        return
    plan = blocks(schedule(scenario.repeats), scenario.restart_between_repeats)
    last_block = {arm: max(i for i, (a, _) in enumerate(plan, start=1) if a == arm) for arm in ARMS}
    for block_no, (arm_name, count) in enumerate(plan, start=1):
        arm = scenario.arms[arm_name]
        with_accuracy = scenario.accuracy.enabled and block_no == last_block[arm_name]
        if arm.url:
            _run_repeats(run, arm_name, arm.url, count, say, warm=True)
            if with_accuracy:
                _run_accuracy(run, arm_name, arm.url, model, say)
            continue
        spec = server_spec(scenario, arm, model, run.run_dir / f"{arm_name}-{block_no}.log")
        with serve(run, arm_name, spec, say) as server:
            _run_repeats(
                run, arm_name, server.url, count, say, warm=True, servers={arm_name: server}
            )
            # Accuracy after the timed repeats of the arm's last server start: it can never
            # disturb a timing.
            if with_accuracy:
                _run_accuracy(run, arm_name, server.url, model, say, {arm_name: server})
            check_alive({arm_name: server})


def _run_repeats(
    run: CompareRun,
    arm_name: str,
    url: str,
    count: int,
    say: SayFn,
    *,
    warm: bool,
    servers: dict[str, VllmServer] | None = None,
) -> None:
    """``count`` repeats of the workload; repeat k (counted per arm) uses seed + k. When
    requests fail and the arm's server (in ``servers``) has died, the error says that."""
    base = workload_config(run.scenario, url, arm_name)
    for i in range(count):
        k = len(run.repeats[arm_name])
        cfg = replace(
            base,
            num_warmups=base.num_warmups if (warm and i == 0) else 0,
            seed=base.seed + k,
        )
        say(f"[{arm_name}] repeat {k + 1}/{run.scenario.repeats}")
        try:
            result = run_bench(cfg, labelled(run.bench_progress, f"{arm_name} {k + 1}"))
        except BenchError as exc:
            check_alive(servers or {}, wait_s=5.0)
            raise RunFailed(f"{arm_name}: {exc}") from exc
        # which of the arm's server starts it ran on (an already-running server: one start)
        start = max(0, sum(not s["profile"] for s in run.servers[arm_name]) - 1)
        run.repeats[arm_name].append(Repeat(result, k, start))
        run.save()
        m = result.metrics
        say(
            f"[{arm_name}] repeat {k + 1}: median TPOT {m['median_tpot_ms']:.2f} ms, "
            f"median TTFT {m['median_ttft_ms']:.2f} ms, {m['output_throughput']:.1f} tok/s"
        )
        if not result.valid:
            check_alive(servers or {}, wait_s=5.0)
            problems = "; ".join(p.message for p in result.problems)
            raise RunFailed(f"{arm_name} repeat {k + 1} is invalid: {problems}", "invalid")


def _run_accuracy(
    run: CompareRun,
    arm_name: str,
    url: str,
    model: str,
    say: SayFn,
    servers: dict[str, VllmServer] | None = None,
) -> None:
    spec = run.scenario.accuracy
    say(f"[{arm_name}] accuracy: GPQA x {spec.k} through lm-eval")
    served = run.scenario.served_model_name or model
    try:
        result = acc.run_accuracy(
            spec,
            base_url=url,
            model=served,
            tokenizer=model,
            work_dir=run.run_dir / f"accuracy-{arm_name}",
            api_key=run.scenario.api_key(arm_name),
            progress=lambda done, k: say(f"[{arm_name}] accuracy: run {done}/{k} done"),
        )
    except acc.AccuracyError as exc:
        check_alive(servers or {}, wait_s=5.0)
        raise RunFailed(f"{arm_name} accuracy: {exc}") from exc
    run.accuracy[arm_name] = result
    run.save()
    say(
        f"[{arm_name}] accuracy {result.accuracy:.3f} over {len(result.questions)} questions "
        f"x {result.k} ({result.no_answer} replies without an answer)"
    )


def recompute(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stored compare result whose comparison and verdict this perfgate's
    statistics compute again from the stored repeats (the file itself is not changed); old
    files pass through ``migrate`` first."""
    run = CompareRun.from_json(doc)
    was = {
        "perfgate_version": __version__,
        "verdict": run.verdict if run.status == judge.COMPLETE else run.status,
        "exit_code": run.exit_code,
    }
    compare_repeats(run)
    if run.status == judge.COMPLETE:  # a run that did not complete keeps its status
        run.verdict = verdict_of(run)
    return {**run.to_json(), "recomputed": was}


def compare_repeats(run: CompareRun) -> None:
    """Every gated metric compared over the run's repeats."""
    sc = run.scenario
    run.comparison = compare(
        sc.thresholds,
        run.repeats["baseline"],
        run.repeats["candidate"],
        confidence=sc.confidence,
        resamples=sc.resamples,
    )


def verdict_of(run: CompareRun) -> str:
    """The run's verdict over its gated metrics and its accuracy comparison (if any)."""
    accuracy = run.accuracy_comparison
    return judge.overall(
        (r.verdict for r in run.comparison), accuracy.verdict if accuracy else None
    )


def compare_accuracy(run: CompareRun) -> AccuracyComparison:
    try:
        return acc.compare_arms(
            run.accuracy["baseline"],
            run.accuracy["candidate"],
            run.scenario.accuracy,
            confidence=run.scenario.confidence,
        )
    except acc.AccuracyError as exc:
        raise RunFailed(str(exc), "invalid") from None
