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
import copy
import json
import math
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from perfgate import __version__, environment, profiling, redact, tinymodel
from perfgate import accuracy as acc
from perfgate import verdict as judge
from perfgate.bench import BenchConfig, BenchError, ProgressFn, run_bench
from perfgate.compare import MetricComparison, compare
from perfgate.registry import Threshold
from perfgate.report.markdown import render_compare_markdown
from perfgate.results import COMPARE_SCHEMA, file_in_the_way, write_json, write_text_private
from perfgate.scenario import BUILTIN_TINY, ArmSpec, Scenario, ScenarioError
from perfgate.server import ServerError, ServerSpec, VllmServer, model_problem
from perfgate.stats import AccuracyComparison

ARMS = ("baseline", "candidate")


class RunFailed(Exception):
    """The run could not finish; results so far are written. ``status`` says how it ended;
    ``run`` (set by ``run_compare``) is the run, with where its files went."""

    def __init__(self, message: str, status: str = "failed") -> None:
        super().__init__(message)
        self.status = status
        self.run: CompareRun | None = None


def schedule(repeats: int) -> list[str]:
    """A B B A A B B A ...: each pair of repeats swaps which arm goes first."""
    order: list[str] = []
    for i in range(repeats):
        order += list(ARMS) if i % 2 == 0 else list(reversed(ARMS))
    return order


def blocks(order: list[str], restart_between_repeats: bool) -> list[tuple[str, int]]:
    """Runs of one arm that share a server start: [(arm, repeats), ...]."""
    out: list[tuple[str, int]] = []
    for arm in order:
        if out and out[-1][0] == arm and not restart_between_repeats:
            out[-1] = (arm, out[-1][1] + 1)
        else:
            out.append((arm, 1))
    return out


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
        except acc.AccuracyError as exc:
            raise ScenarioError(f"{scenario.source}: {exc}") from None
        try:
            import lm_eval  # noqa: F401
        except ImportError:
            raise ScenarioError(
                "the accuracy phase needs lm-eval: pip install 'perfgate[eval]' "
                "(or pass --skip-accuracy)"
            ) from None
    if needs_server and scenario.model != BUILTIN_TINY:
        problem = model_problem(scenario.model)
        if problem is not None:
            raise ScenarioError(f"{scenario.source}: model: {problem}")


def resolve_model(scenario: Scenario) -> str:
    if scenario.model == BUILTIN_TINY:
        return str(tinymodel.build(tiny_model_dir()))
    return scenario.model


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
        model=model,
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


SayFn = Callable[[str], None]  # one line per phase


@dataclass
class CompareRun:
    scenario: Scenario
    run_dir: Path
    command: str
    repeats: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {a: [] for a in ARMS})
    servers: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {a: [] for a in ARMS})
    status: str = "running"
    error: str | None = None
    comparison: list[MetricComparison] = field(default_factory=list)
    accuracy: dict[str, acc.ArmAccuracy] = field(default_factory=dict)
    accuracy_comparison: AccuracyComparison | None = None
    profiles: dict[str, profiling.KernelTable] = field(default_factory=dict)
    kernel_checks: list[dict[str, Any]] = field(default_factory=list)
    verdict: str | None = None
    started_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    environment: dict[str, Any] = field(default_factory=environment.capture)
    bench_progress: ProgressFn | None = None
    # Where results go once the run directory cannot be written (disk full, removed): a
    # private temporary directory, so nothing measured is lost. ``save_error`` says why.
    fallback_dir: Path | None = None
    save_error: str | None = None

    @property
    def results_path(self) -> Path:
        return (self.fallback_dir or self.run_dir) / "results.json"

    @property
    def report_path(self) -> Path:
        return self.results_path.parent / "report.md"

    def write_report(self) -> None:
        """report.md beside results.json, rendered from what results.json holds."""
        write_text_private(self.report_path, render_compare_markdown(self.to_json()))

    @property
    def exit_code(self) -> int:
        return judge.exit_code(self.status, self.verdict)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": COMPARE_SCHEMA,
            "started_at": self.started_at,
            "status": self.status,
            "error": self.error,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "command": self.command,
            "scenario": self.scenario.to_json(),
            "environment": self.environment,
            "arms": {
                a: {
                    "spec": self.scenario.arms[a].to_json(),
                    "servers": self.servers[a],
                    "repeats": self.repeats[a],
                }
                for a in ARMS
            },
            "comparison": [c.to_json() for c in self.comparison],
            "profile": {
                "enabled": self.scenario.profile.enabled,
                "arms": {a: t.to_json() for a, t in self.profiles.items()},
                "checks": self.kernel_checks,
            },
            "accuracy": {
                "spec": self.scenario.accuracy.to_json(),
                "arms": {a: r.to_json() for a, r in self.accuracy.items()},
                "comparison": None
                if self.accuracy_comparison is None
                else asdict(self.accuracy_comparison),
            },
        }

    def save(self) -> None:
        """Write results.json; if the run directory cannot take it, write it to a private
        temporary directory instead (and keep writing there), never losing the data."""
        doc = self.to_json()
        try:
            write_json(self.results_path, doc)
        except OSError as exc:
            if self.fallback_dir is not None:
                raise
            self.save_error = f"cannot write {self.results_path} ({exc.strerror or exc})"
            self.fallback_dir = Path(tempfile.mkdtemp(prefix=f"perfgate-{self.scenario.name}-"))
            write_json(self.results_path, doc)


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
        run.comparison = compare(
            scenario.thresholds,
            run.repeats["baseline"],
            run.repeats["candidate"],
            confidence=scenario.confidence,
            resamples=scenario.resamples,
        )
        if scenario.accuracy.enabled:
            run.accuracy_comparison = compare_accuracy(run)
        run.verdict = judge.overall(
            (r.verdict for r in run.comparison),
            run.accuracy_comparison.verdict if run.accuracy_comparison else None,
        )
        if scenario.profile.enabled:
            _run_profiles(run, model, say)
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


def make_run_dir(run_dir: Path) -> None:
    """Create the run directory readable by its owner only (it holds server logs and the
    servers' environment), and prove it can be written before anything is measured."""
    if (blocker := file_in_the_way(run_dir)) is not None:
        raise ScenarioError(
            f"--out-dir {run_dir}: cannot write there ({blocker} is a file, not a directory)"
        )
    try:
        if not run_dir.is_dir():
            run_dir.mkdir(parents=True, mode=0o700)
            run_dir.chmod(0o700)  # mkdir's mode passes through the umask
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".perfgate-probe-"):
            pass
    except OSError as exc:
        raise ScenarioError(
            f"--out-dir {run_dir}: cannot write there ({exc.strerror or exc}"
            + (f": {exc.filename}" if exc.filename else "")
            + "); give a directory you can write to"
        ) from None


@contextlib.contextmanager
def _serve(
    run: CompareRun, arm_name: str, spec: ServerSpec, say: SayFn, *, profile: bool = False
) -> Iterator[VllmServer]:
    """A healthy server for ``arm_name``, recorded in the run; start failures -> RunFailed."""
    say(f"[{arm_name}] starting vLLM (log: {spec.log_path})")
    try:
        with VllmServer(spec) as server:
            _record_start(run, arm_name, server, spec.log_path, profile=profile)
            say(f"[{arm_name}] healthy at {server.url} after {server.startup_s:.0f} s")
            yield server
    except ServerError as exc:
        raise RunFailed(str(exc), "failed") from exc


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
                server = stack.enter_context(_serve(run, arm_name, spec, say))
                servers[arm_name], urls[arm_name] = server, server.url
            first = not run.repeats[arm_name]
            own = {arm_name: servers[arm_name]} if arm_name in servers else {}
            _run_repeats(run, arm_name, str(urls[arm_name]), 1, say, warm=first, servers=own)
            _check_alive(servers)
        if scenario.accuracy.enabled:  # after every timed repeat of both arms
            for arm_name in ARMS:
                _run_accuracy(run, arm_name, str(urls[arm_name]), model, say, servers)
            _check_alive(servers)


def _check_alive(servers: dict[str, VllmServer], wait_s: float = 0.0) -> None:
    """RunFailed saying how a server died (exit code or signal, its log's cause line, the
    log's path), if one has; ``wait_s`` gives one that is going down time to finish."""
    for server in servers.values():
        if (death := server.death(wait_s)) is not None:
            raise RunFailed(f"{death}; everything measured before it is kept", "failed")


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
        with _serve(run, arm_name, spec, say) as server:
            _run_repeats(
                run, arm_name, server.url, count, say, warm=True, servers={arm_name: server}
            )
            # Accuracy after the timed repeats of the arm's last server start: it can never
            # disturb a timing.
            if with_accuracy:
                _run_accuracy(run, arm_name, server.url, model, say, {arm_name: server})
            _check_alive({arm_name: server})


def _record_start(
    run: CompareRun, arm_name: str, server: VllmServer, log: Path, *, profile: bool = False
) -> None:
    """What the report's launch line and a reader of results.json need of a server start."""
    run.servers[arm_name].append(
        {
            "log": str(log),
            "argv": redact.args(server.argv),
            "startup_s": server.startup_s,
            "env": redact.env(server.spec.env),
            "profile": profile,
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
            result = run_bench(cfg, _labelled(run.bench_progress, f"{arm_name} {k + 1}"))
        except BenchError as exc:
            _check_alive(servers or {}, wait_s=5.0)
            raise RunFailed(f"{arm_name}: {exc}") from exc
        doc = result.to_json()
        doc["repeat"] = k
        # which of the arm's server starts it ran on (an already-running server: one start)
        doc["start"] = max(0, sum(not s["profile"] for s in run.servers[arm_name]) - 1)
        run.repeats[arm_name].append(doc)
        run.save()
        m = result.metrics
        say(
            f"[{arm_name}] repeat {k + 1}: median TPOT {m['median_tpot_ms']:.2f} ms, "
            f"median TTFT {m['median_ttft_ms']:.2f} ms, {m['output_throughput']:.1f} tok/s"
        )
        if not result.valid:
            _check_alive(servers or {}, wait_s=5.0)
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
        _check_alive(servers or {}, wait_s=5.0)
        raise RunFailed(f"{arm_name} accuracy: {exc}") from exc
    run.accuracy[arm_name] = result
    run.save()
    say(
        f"[{arm_name}] accuracy {result.accuracy:.3f} over {len(result.questions)} questions "
        f"x {result.k} ({result.no_answer} replies without an answer)"
    )


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


def _run_profiles(run: CompareRun, model: str, say: SayFn) -> None:
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
                with _serve(run, arm_name, spec, say, profile=True) as server:
                    _profile_once(run, arm_name, server.url, trace_dir)
        except (profiling.ProfileError, BenchError) as exc:
            raise RunFailed(f"{arm_name} profile: {exc}", "failed") from exc
        t = run.profiles[arm_name]
        top = t.rows[0] if t.rows else None
        say(
            f"[{arm_name}] profile: {len(t.rows)} distinct {t.source} names"
            + (f", top {profiling.short_name(top.name, 60)} ({top.share:.0%})" if top else "")
        )


def recompute(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stored compare result whose comparison and verdict this perfgate's
    statistics compute again from the stored repeats (the file itself is not changed).
    Repeats stored before ``start`` was recorded get it from the schedule that ran them."""
    doc = copy.deepcopy(doc)
    sc, arms = doc["scenario"], doc["arms"]
    starts: dict[str, list[int]] = {a: [] for a in ARMS}
    for arm, count in blocks(schedule(sc["repeats"]), sc["restart_between_repeats"]):
        starts[arm] += [len(set(starts[arm]))] * count
    for arm in ARMS:
        single = sc.get("colocate") or arms[arm]["spec"].get("url")
        for k, rep in enumerate(arms[arm]["repeats"]):
            rep.setdefault("start", 0 if single else starts[arm][k])
    thresholds = [Threshold(t["metric"], t["tolerance"]) for t in sc["thresholds"]]
    rows = compare(
        thresholds,
        arms["baseline"]["repeats"],
        arms["candidate"]["repeats"],
        confidence=sc["confidence"],
        resamples=sc["resamples"],
    )
    doc["recomputed"] = {
        "perfgate_version": __version__,
        "verdict": doc.get("verdict") if doc["status"] == "complete" else doc["status"],
        "exit_code": doc.get("exit_code"),
    }
    doc["comparison"] = [r.to_json() for r in rows]
    if doc["status"] == "complete":
        accuracy = (doc.get("accuracy") or {}).get("comparison")
        doc["verdict"] = judge.overall(
            (r.verdict for r in rows), accuracy["verdict"] if accuracy else None
        )
        doc["exit_code"] = judge.exit_code(doc["status"], doc["verdict"])
    return doc


def compare_accuracy(run: CompareRun) -> AccuracyComparison:
    try:
        return acc.compare_arms(
            run.accuracy["baseline"],
            run.accuracy["candidate"],
            max_drop=run.scenario.accuracy.max_drop,
            confidence=run.scenario.confidence,
        )
    except acc.AccuracyError as exc:
        raise RunFailed(str(exc), "invalid") from None


def _labelled(bar: ProgressFn | None, label: str) -> ProgressFn | None:
    if bar is None:
        return None
    return lambda phase, done, total: bar(f"{label} {phase}", done, total)
