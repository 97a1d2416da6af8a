"""``perfgate compare``: owns the phases, the rounds of server starts and their order.

Plan: preflight (machine and model checks, before any server starts) -> rounds: in each, one
server start per arm (or its URL), in the round's random order (``run.schedule``), each start
sending warmups and then ``repeats_per_start`` timed repeats with ``perfgate bench``'s engine
-> compare -> the family-wise verdict.

A fixed design runs ``starts`` rounds. With a budget, perfgate looks after every round from
the second on (``look``): it stops once the timed metrics are decided (a regression that
survives Holm, or every primary metric decided) or when the budget is spent, each look using
its share of alpha (``perfgate.decide.stats.look_share``) so the error rate holds under that
optional stopping. By default arms run one at a time, so both never compete for the hardware;
with ``colocate`` both servers of a round stay up and its repeats alternate arm by arm. With
``parallel_gpus`` both arms' starts of a round run at once, each on its own GPU (and half of
the cores), the GPUs swapped every round; the comparison then has the GPU as a block effect.
Accuracy (lm-eval) runs once per arm, on the first round's start after its timed repeats.
With ``[profile]`` on, every start ends with a profiled window (``run.profile_phase``): its
figures (device time per decode step ...) are per-start values like any metric's, and its
kernel assertions can end the run as invalid right there.
Repeat ``k`` of both arms uses the same seed, hence the same prompts, and no server sees the
same prompt twice (no prefix-cache hits across repeats).

``results.json`` is rewritten after every repeat and at every exit (complete, invalid, failed,
interrupted), so nothing measured is lost when a later phase fails.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from perfgate import accuracy as acc
from perfgate.decide import family
from perfgate.decide.design import check_design, design_warnings
from perfgate.decide.judge import compare_repeats, judge_run
from perfgate.decide.stats import FIRST_LOOK, INTERIM_SHARE, look_share
from perfgate.documents.compare import INCONCLUSIVE
from perfgate.documents.eval import AccuracyError
from perfgate.documents.run import ARMS, Repeat
from perfgate.documents.spec import Scenario
from perfgate.measure.bench import BenchError, ProgressFn, run_bench
from perfgate.report.plots import compare_plots
from perfgate.run import placement
from perfgate.run.preflight import preflight, resolve_model
from perfgate.run.profile_phase import profile_window, profiler_args
from perfgate.run.schedule import gpus_of, new_seed, repeat_order, round_order
from perfgate.run.servers import check_alive, labelled, serve, server_spec, workload_config
from perfgate.run.state import LiveRun, RunFailed, SayFn, make_run_dir
from perfgate.serve.server import ServerSpec, VllmServer


def run_compare(
    scenario: Scenario,
    run_dir: Path,
    command: str,
    progress: SayFn | None = None,
    bench_progress: ProgressFn | None = None,
    plots: bool = True,
    strict: bool = False,
) -> LiveRun:
    """Run the whole comparison. Raises ``RunFailed`` (results written) when it cannot finish.

    ``progress`` gets one line per phase; ``bench_progress`` (optional) per-request progress
    of each repeat, as ``(label, done, total)``; ``plots``: PNGs beside report.md; ``strict``:
    refuse a design that cannot decide a gated metric at its calibrated noise."""
    say = progress or (lambda _msg: None)
    check_design(scenario, say, strict=strict)
    preflight(scenario)
    run = LiveRun(
        scenario=scenario, run_dir=run_dir, command=command, bench_progress=bench_progress
    )
    run.design = new_design(scenario)
    for warning in design_warnings(scenario):
        say(f"warning: {warning}")
    make_run_dir(run_dir)
    run.save()
    with recording(run, plots=plots):
        model = resolve_model(scenario)
        _run_rounds(run, model, say)
        try:
            judge_run(run, accuracy=scenario.accuracy.enabled)
        except AccuracyError as exc:  # the arms answered different questions
            raise RunFailed(str(exc), "invalid") from None
        run.status = "complete"
    return run


@contextlib.contextmanager
def recording(run: LiveRun, *, plots: bool = False) -> Iterator[None]:
    """Whatever happens inside, ``run.status`` says how it ended (an exception leaves as
    ``RunFailed`` carrying the run), results.json and report.md (and with ``plots`` the
    pictures) are written, and the run's compile caches are removed."""
    try:
        yield
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
        if plots and any(run.repeats.values()):
            with contextlib.suppress(Exception):  # a picture never costs a result
                run.plots = compare_plots(run, run.results_path.parent)
        run.save()
        with contextlib.suppress(OSError):  # the results are safe; the report can be redone
            run.write_report()
        shutil.rmtree(run.run_dir / "vllm-cache", ignore_errors=True)  # graphs, not results


def _run_rounds(run: LiveRun, model: str, say: SayFn) -> None:
    """Rounds of one start per arm until the design's end: ``starts`` rounds, or, with a
    budget, until a look decides or the budget is spent."""
    scenario = run.scenario
    budget = scenario.budget
    most = budget.most_starts if budget is not None else scenario.starts
    began = clock()
    for round_no in range(most):
        order = round_order(run.design["seed"], round_no)
        say(f"round {round_no + 1}: {' then '.join(order)}")
        with_accuracy = scenario.accuracy.enabled and round_no == 0
        if scenario.colocate:
            _colocated_round(run, model, say, order, with_accuracy)
        elif scenario.parallel_gpus:
            _parallel_round(run, model, say, order, with_accuracy)
        else:
            for arm_name in order:
                _one_start(run, model, say, arm_name, with_accuracy)
        rounds = round_no + 1
        if budget is None or rounds < FIRST_LOOK:
            continue
        spent = clock() - began
        out_of_time = budget.seconds is not None and spent + spent / rounds > budget.seconds
        final = rounds >= most or out_of_time
        verdict = look(run, rounds, most, final=final)
        say(
            f"look after {rounds} starts per arm: {verdict}"
            + ("" if verdict == INCONCLUSIVE or final else ", stopping")
        )
        if final or verdict != INCONCLUSIVE:
            if out_of_time and rounds < most:
                say(f"budget: {budget.seconds:g} s would be exceeded by another round")
            break


clock = time.monotonic  # the budget's clock (a test replaces it)


def look(run: LiveRun, rounds: int, most: int, *, final: bool) -> str:
    """An interim (or the final) analysis after ``rounds`` of at most ``most`` starts per
    arm, at this look's share of alpha; its rows (Holm applied) kept in ``run.comparison``,
    the look recorded in ``run.design['looks']``. Returns the timed metrics' verdict."""
    share = look_share(rounds, FIRST_LOOK, most, final=final)
    run.design["share"] = share
    compare_repeats(run)
    pending = 1 if run.scenario.accuracy.enabled else 0
    run.comparison, _ = family.apply(run.comparison, None, alpha=run.alpha, pending=pending)
    verdict = family.overall(run.comparison, None)
    run.design["looks"].append(
        {"starts": rounds, "share": share, "alpha": run.alpha, "verdict": verdict}
    )
    run.save()
    return verdict


def _colocated_round(
    run: LiveRun, model: str, say: SayFn, order: tuple[str, str], with_accuracy: bool
) -> None:
    """Both arms' servers up at once (when both fit): the round's repeats alternate arm by
    arm, A B B A ... Each server starts when the round first needs it, so a candidate that
    cannot start leaves the baseline's first repeat measured."""
    scenario = run.scenario
    urls = {a: scenario.arms[a].url for a in ARMS if scenario.arms[a].url}
    servers: dict[str, VllmServer] = {}
    warm = {a: True for a in ARMS}
    with contextlib.ExitStack() as stack:
        for arm_name in repeat_order(order, scenario.repeats_per_start):
            if arm_name not in urls:
                spec = _spec(run, arm_name, model)
                server = stack.enter_context(serve(run, arm_name, spec, say))
                servers[arm_name], urls[arm_name] = server, server.url
            own = {arm_name: servers[arm_name]} if arm_name in servers else {}
            _run_repeats(
                run, arm_name, str(urls[arm_name]), 1, say, warm=warm[arm_name], servers=own
            )
            warm[arm_name] = False
            check_alive(servers)
        if with_accuracy:  # after the round's timed repeats of both arms
            for arm_name in order:
                _run_accuracy(run, arm_name, str(urls[arm_name]), model, say, servers)
            check_alive(servers)
        for arm_name in order:
            _window(run, arm_name, str(urls[arm_name]), say, servers)


def _parallel_round(
    run: LiveRun, model: str, say: SayFn, order: tuple[str, str], with_accuracy: bool
) -> None:
    """Both arms at once on their own GPUs (``schedule.gpus_of``: the round's first arm on the
    first GPU): the servers start together, the timed repeats run together (one client
    thread per arm, each on its own cores), then accuracy and the profiled windows, arm by
    arm. A start that fails stops the other."""
    scenario = run.scenario
    assert scenario.parallel_gpus is not None
    gpus = gpus_of(order, scenario.parallel_gpus)
    count = scenario.repeats_per_start
    first = sum(len(v) for v in run.servers.values()) + 1
    managers = {
        arm: serve(
            run,
            arm,
            _spec(run, arm, model, gpus=gpus[arm], number=first + i),
            say,
            slot=(scenario.parallel_gpus.index(gpus[arm]), 2),
        )
        for i, arm in enumerate(order)
    }
    # leaving: the pool waits for starts in flight, then the stack stops every server that
    # came up (each registers its stop the moment it is healthy), on every exit path
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(2) as pool:

        def start(arm: str) -> VllmServer:
            server = managers[arm].__enter__()
            stack.push(managers[arm].__exit__)
            return server

        started = {arm: pool.submit(start, arm) for arm in order}
        servers: dict[str, VllmServer] = {}
        failures = []
        for arm in order:
            try:
                servers[arm] = started[arm].result()
            except Exception as exc:
                failures.append(exc)
        if failures:
            raise failures[0]
        timed = [
            pool.submit(
                _run_repeats, run, arm, servers[arm].url, count, say, warm=True,
                servers={arm: servers[arm]},
            )
            for arm in order
        ]  # fmt: skip
        for job in timed:
            job.result()
        check_alive(servers)
        for arm in order:
            if with_accuracy:
                _run_accuracy(run, arm, servers[arm].url, model, say, {arm: servers[arm]})
            _window(run, arm, servers[arm].url, say, {arm: servers[arm]})
        check_alive(servers)


def _one_start(run: LiveRun, model: str, say: SayFn, arm_name: str, with_accuracy: bool) -> None:
    """One start of one arm (or its URL): warmups, the timed repeats, then (the first
    round) accuracy, which can then never disturb a timing of this start."""
    scenario = run.scenario
    arm = scenario.arms[arm_name]
    count = scenario.repeats_per_start
    if arm.url:
        _run_repeats(run, arm_name, arm.url, count, say, warm=True)
        if with_accuracy:
            _run_accuracy(run, arm_name, arm.url, model, say)
        _window(run, arm_name, arm.url, say)
        return
    with serve(run, arm_name, _spec(run, arm_name, model), say) as server:
        _run_repeats(run, arm_name, server.url, count, say, warm=True, servers={arm_name: server})
        if with_accuracy:
            _run_accuracy(run, arm_name, server.url, model, say, {arm_name: server})
        _window(run, arm_name, server.url, say, {arm_name: server})
        check_alive({arm_name: server})


def _log(run: LiveRun, arm_name: str, number: int | None = None) -> Path:
    """``<arm>-<n>.log``, n counting every server start of the run (both arms)."""
    n = number or sum(len(v) for v in run.servers.values()) + 1
    return run.run_dir / f"{arm_name}-{n}.log"


def _spec(
    run: LiveRun,
    arm_name: str,
    model: str,
    *,
    gpus: str | None = None,
    number: int | None = None,
) -> ServerSpec:
    """The launch of the arm's next start (on ``gpus`` in place of the arm's own): with
    ``[profile]``, vLLM's profiler configured (idle until a window) to write into
    ``<arm>-<n>-trace/`` beside the start's log."""
    log = _log(run, arm_name, number)
    arm = run.scenario.arms[arm_name]
    if gpus is not None:
        arm = replace(arm, gpus=gpus)
    spec = server_spec(run.scenario, arm, model, log)
    if not run.scenario.profile.enabled:
        return spec
    return replace(spec, serve_args=(*spec.serve_args, *profiler_args(_trace_dir(log))))


def _trace_dir(log: Path) -> Path:
    return log.with_name(f"{log.stem}-trace")


def _start_index(run: LiveRun, arm_name: str) -> int:
    """Which of the arm's server starts is up (a running server: one start, 0)."""
    # (files from before per-start windows also list separate profiled starts: not counted)
    return max(0, sum(not s.get("profile") for s in run.servers[arm_name]) - 1)


def _window(
    run: LiveRun,
    arm_name: str,
    url: str,
    say: SayFn,
    servers: dict[str, VllmServer] | None = None,
) -> None:
    """The start's profiled window, when ``[profile]`` is on (a running server's: once)."""
    if not run.scenario.profile.enabled:
        return
    start = _start_index(run, arm_name)
    if any(w.start == start for w in run.windows[arm_name]):
        return
    arm = run.scenario.arms[arm_name]
    if arm.url:
        trace_dir = Path(str(arm.trace_dir))
    else:
        trace_dir = _trace_dir(Path(run.servers[arm_name][-1]["log"]))
    try:
        profile_window(run, arm_name, url, start, trace_dir, say)
    except RunFailed:
        check_alive(servers or {}, wait_s=5.0)
        raise


def _run_repeats(
    run: LiveRun,
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
        say(f"[{arm_name}] repeat {k + 1}, start {len(run.servers[arm_name]) or 1}")
        record = run.servers[arm_name][-1] if servers else None
        facts = (record or {}).get("facts") or {}
        client = (facts.get("pinning") or {}).get("client")
        try:
            with (
                placement.client_pinned(placement.parse_cpulist(client) if client else None),
                placement.GpuSampler() as gpu,
            ):
                result = run_bench(cfg, labelled(run.bench_progress, f"{arm_name} {k + 1}"))
                client_facts = placement.thread_facts()
        except BenchError as exc:
            check_alive(servers or {}, wait_s=5.0)
            raise RunFailed(f"{arm_name}: {exc}") from exc
        if record is not None:  # the state of the host and GPU while this repeat ran
            record.setdefault("during_repeats", []).append(
                {
                    "repeat": k,
                    "gpu": gpu.summary(),
                    "host": placement.host_facts(),
                    "client": client_facts,
                }
            )
        run.repeats[arm_name].append(Repeat(result, k, _start_index(run, arm_name)))
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
    run: LiveRun,
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
    except AccuracyError as exc:
        check_alive(servers or {}, wait_s=5.0)
        raise RunFailed(f"{arm_name} accuracy: {exc}") from exc
    run.accuracy[arm_name] = result
    run.save()
    say(
        f"[{arm_name}] accuracy {result.accuracy:.3f} over {len(result.questions)} questions "
        f"x {result.k} ({result.no_answer} replies without an answer)"
    )


def new_design(scenario: Scenario) -> dict[str, Any]:
    """What the run records of its design: the seed of its order (drawn when the scenario
    fixes none), the budget, and (filled in as it goes) its looks and alpha share."""
    return {
        "seed": scenario.seed if scenario.seed is not None else new_seed(),
        "starts": None if scenario.budget else scenario.starts,
        "repeats_per_start": scenario.repeats_per_start,
        "budget": asdict(scenario.budget) if scenario.budget else None,
        # the alpha the interim looks share, as this run spends it (a later perfgate may
        # split alpha otherwise; the report states this run's split)
        "interim_share": INTERIM_SHARE if scenario.budget else None,
        "looks": [],
        "share": 1.0,
    }
