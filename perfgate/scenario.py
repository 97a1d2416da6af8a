"""Scenarios: what to compare, how to launch each arm, and what counts as a regression.

A scenario is a TOML file (``scenarios/*.toml``; ``--model NAME`` picks the built-in one of
that name). Every field is validated here, and every error names the file, the field and the
fix. Unknown keys are errors too, so a typo never silently falls back to a default.

    name = "demo-cpu"
    model = "builtin:tiny-llama"          # a path, a hub id, or the locally built test model
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
    client_processes = "auto"             # processes reading the streams: one per 16 at once

    [compare]
    starts = 3                            # server starts per arm, in rounds of one per arm
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

import math
import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

from perfgate import limits, redact, registry
from perfgate.documents.bench import Workload
from perfgate.documents.compare import StartNoise
from perfgate.documents.eval import AccuracySpec
from perfgate.documents.kernels import KernelRule, ProfileError
from perfgate.documents.spec import (
    ArmSpec,
    Budget,
    ChangeRule,
    ProfileSpec,
    Scenario,
    ScenarioError,
    Threshold,
)

# The built-in scenarios: the repository's scenarios/ (perfgate/scenarios links to it), copied
# into the package when it is built, so an installed perfgate finds them too.
BUILTIN_DIR = Path(__file__).parent / "scenarios"
BUILTIN_TINY = "builtin:tiny-llama"

DEFAULT_THRESHOLDS = {
    "median_tpot_ms": 0.02,
    "p99_tpot_ms": 0.05,
    "median_itl_ms": 0.02,
    "output_throughput": 0.02,
    "median_ttft_ms": 0.05,
}


# A scenario's name becomes a directory name and Markdown: a safe set only.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Server arguments perfgate sets itself for every start.
OWN_ARGS = {
    "--port": "perfgate gives each server start a free port of its own",
    "--host": "perfgate serves on 127.0.0.1 and reaches the server there",
}


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|min|h)")


def parse_budget(text: str) -> Budget:
    """``"8"`` (most starts per arm), ``"45m"`` / ``"2h"`` / ``"900s"`` (wall time), or
    both, comma-separated (``"8, 2h"``). ValueError names what is wrong."""
    starts: int | None = None
    seconds: float | None = None
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts or len(parts) > 2:
        raise ValueError(
            f"budget {text!r}: give most starts per arm (8), a wall time (45m, 2h, 900s) or "
            'both ("8, 2h")'
        )
    for part in parts:
        if part.isdigit():
            if starts is not None:
                raise ValueError(f"budget {text!r} gives the number of starts twice")
            starts = int(part)
            if not 2 <= starts <= limits.MAX_STARTS:
                raise ValueError(
                    f"budget {text!r}: most starts per arm must be 2..{limits.MAX_STARTS} "
                    "(a verdict needs two starts per arm)"
                )
        elif m := _DURATION.fullmatch(part):
            if seconds is not None:
                raise ValueError(f"budget {text!r} gives the wall time twice")
            seconds = float(m.group(1)) * {"s": 1, "m": 60, "min": 60, "h": 3600}[m.group(2)]
            if not 1 <= seconds <= 7 * 86400:
                raise ValueError(f"budget {text!r}: the wall time must be 1 s to 7 days")
        else:
            raise ValueError(
                f"budget {text!r}: {part!r} is neither a number of starts (8) nor a wall "
                "time (45m, 2h, 900s)"
            )
    return Budget(starts, seconds)


class _Fields:
    """Typed reads from one TOML table, each error naming ``file: table.key``."""

    def __init__(self, source: str, prefix: str, table: Any) -> None:
        self.source, self.prefix = source, prefix
        if not isinstance(table, dict):
            raise ScenarioError(f"{source}: {prefix or 'the file'} must be a table")
        self.table = table

    def where(self, key: str) -> str:
        return f"{self.source}: {self.prefix}{'.' if self.prefix else ''}{key}"

    def check_keys(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.table) - allowed)
        if unknown:
            raise ScenarioError(
                f"{self.where(unknown[0])} is not a known field; known here: "
                f"{', '.join(sorted(allowed))}"
            )

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.table.get(key, default)
        if value is None:
            if required:
                raise ScenarioError(f"{self.where(key)} is required (a string)")
            return None
        if not isinstance(value, str) or (required and not value):
            raise ScenarioError(f"{self.where(key)} must be a string, got {value!r} (quote it)")
        return value

    def integer(
        self, key: str, default: int | None, *, minimum: int = 0, maximum: int = limits.MAX_SEED
    ) -> int | None:
        value = self.table.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise ScenarioError(
                f"{self.where(key)} must be an integer >= {minimum} (at most {maximum}), "
                f"got {value!r}"
            )
        return value

    def number(self, key: str, default: float, *, low: float, high: float) -> float:
        value = self.table.get(key, default)
        if value == "inf":
            value = math.inf
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise ScenarioError(
                f"{self.where(key)} must be a number in [{low:g}, {high:g}], got {value!r}"
            )
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise ScenarioError(f"{self.where(key)} must be true or false, got {value!r}")
        return value

    def str_list(self, key: str) -> tuple[str, ...]:
        value = self.table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ScenarioError(
                f"{self.where(key)} must be a list of strings, got {value!r} "
                '(e.g. ["--max-num-seqs", "8"])'
            )
        for arg in value:
            if (problem := limits.arg_problem(arg)) is not None:
                raise ScenarioError(f"{self.where(key)}: {problem}")
        return tuple(value)

    def env(self, key: str) -> dict[str, str]:
        value = self.table.get(key, {})
        if not isinstance(value, dict):
            raise ScenarioError(f"{self.where(key)} must be a table of strings")
        for k, v in value.items():
            if not isinstance(v, str):
                raise ScenarioError(f"{self.where(key)}.{k} must be a string, got {v!r} (quote it)")
            if (problem := limits.env_problem(k, v)) is not None:
                raise ScenarioError(f"{self.where(key)}: {problem}")
        return dict(value)

    def sub(self, key: str) -> _Fields:
        return _Fields(
            self.source, f"{self.prefix}.{key}" if self.prefix else key, self.table.get(key, {})
        )


def _arm(f: _Fields, name: str) -> ArmSpec:
    f.check_keys({"url", "vllm", "python", "env", "args", "gpus", "trace_dir", "pin_cpus", "model"})
    arm = ArmSpec(
        name=name,
        url=f.text("url"),
        vllm=f.text("vllm"),
        python=f.text("python"),
        env=f.env("env"),
        args=f.str_list("args"),
        gpus=f.text("gpus"),
        trace_dir=f.text("trace_dir"),
        pin_cpus=_pin_cpus(f) if "pin_cpus" in f.table else None,
        model=f.text("model"),
    )
    validate_arm(arm, f.source)
    return arm


def validate_arm(arm: ArmSpec, source: str) -> None:
    arm.register_secrets()
    where = f"{source}: arms.{arm.name}"
    for key, value in arm.env.items():
        if (problem := limits.env_problem(key, value)) is not None:
            raise ScenarioError(f"{where}.env: {problem}")
    for arg in arm.args:
        if (problem := limits.arg_problem(arg)) is not None:
            raise ScenarioError(f"{where}.args: {problem}")
    launchers = [k for k in ("url", "vllm", "python") if getattr(arm, k)]
    if len(launchers) > 1:
        raise ScenarioError(
            f"{where} sets {' and '.join(launchers)}; give one: url (a running server), "
            "vllm (an executable) or python (an interpreter with vLLM installed)"
        )
    if arm.url and arm.model:
        raise ScenarioError(
            f"{where} sets url and model: a running server serves the model it was started "
            "with; give model only to an arm perfgate starts"
        )
    if arm.url and not arm.url.startswith(("http://", "https://")):
        raise ScenarioError(f"{where}.url must start with http:// or https://, got {arm.url!r}")
    for key in ("vllm", "python"):
        path = getattr(arm, key)
        if path and not Path(path).exists():
            raise ScenarioError(f"{where}.{key}: {path} does not exist (give the full path)")


def parse(doc: dict[str, Any], source: str) -> Scenario:
    top = _Fields(source, "", doc)
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
    _replaced_keys(top.sub("compare"), server)
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
    wl = top.sub("workload")
    wl.check_keys(
        {
            "endpoint",
            "num_prompts",
            "input_len",
            "output_len",
            "max_concurrency",
            "num_warmups",
            "request_rate",
            "seed",
            "temperature",
            "stall_timeout_s",
            "burstiness",
            "client_processes",
        }
    )
    endpoint = wl.text("endpoint", "completions")
    if endpoint not in ("completions", "chat"):
        raise ScenarioError(
            f'{wl.where("endpoint")} must be "completions" or "chat", got {endpoint!r}'
        )
    d = Workload()  # the defaults
    if wl.table.get("max_concurrency") == "none":
        max_concurrency = None
    else:
        max_concurrency = wl.integer(
            "max_concurrency", d.max_concurrency, minimum=1, maximum=limits.MAX_CONCURRENCY
        )
    workload = Workload(
        endpoint="chat" if endpoint == "chat" else "completions",
        num_prompts=_int(wl, "num_prompts", d.num_prompts, 1, limits.MAX_PROMPTS),
        input_len=_int(wl, "input_len", d.input_len, 1, limits.MAX_TOKENS),
        output_len=_int(wl, "output_len", d.output_len, 1, limits.MAX_TOKENS),
        max_concurrency=max_concurrency,
        num_warmups=_int(wl, "num_warmups", d.num_warmups, 0, limits.MAX_PROMPTS),
        request_rate=wl.number("request_rate", d.request_rate, low=1e-9, high=math.inf),
        burstiness=wl.number("burstiness", d.burstiness, low=1e-3, high=1e3),
        seed=_int(wl, "seed", d.seed, 0, limits.MAX_SEED),
        temperature=wl.number("temperature", d.temperature, low=0.0, high=10.0),
        stall_timeout_s=wl.number("stall_timeout_s", d.stall_timeout_s, low=0.1, high=86400.0),
        client_processes=0
        if wl.table.get("client_processes", "auto") == "auto"
        else _int(wl, "client_processes", d.client_processes, 1, limits.MAX_CLIENT_PROCESSES),
    )
    if (
        problem := limits.send_span_problem(
            workload.num_prompts, workload.request_rate, "workload.request_rate"
        )
    ) is not None:
        raise ScenarioError(f"{source}: {problem}")
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
    th = top.sub("thresholds")
    th.check_keys(set(registry.gateable()))
    if "thresholds" in doc and not th.table:
        defaults = ", ".join(f"{k} = {v}" for k, v in DEFAULT_THRESHOLDS.items())
        raise ScenarioError(
            f"{source}: thresholds is empty, so nothing would be gated; name at least one "
            "metric (e.g. median_tpot_ms = 0.02), or leave the [thresholds] table out for "
            f"perfgate's defaults ({defaults})"
        )
    raw_thresholds = th.table or DEFAULT_THRESHOLDS
    thresholds = tuple(
        Threshold(
            m, _Fields(source, "thresholds", raw_thresholds).number(m, 0.0, low=0.0, high=10.0)
        )
        for m in raw_thresholds
    )
    arms_table = top.sub("arms")
    arms_table.check_keys({"baseline", "candidate"})
    for name in ("baseline", "candidate"):
        if name not in arms_table.table:
            raise ScenarioError(
                f"{arms_table.where(name)} is missing; every scenario has a [arms.baseline] "
                "and an [arms.candidate] table (an empty one runs this Python's vLLM)"
            )
    arms = {name: _arm(arms_table.sub(name), name) for name in ("baseline", "candidate")}
    accuracy = _accuracy(top.sub("accuracy")) if "accuracy" in doc else AccuracySpec(enabled=False)
    model = top.text("model", required=True)
    if model is None:  # unreachable: required=True raises
        raise ScenarioError(f"{top.where('model')} is required")
    server_args = server.str_list("args")
    server_env = server.env("env")
    redact.register_args(server_args)
    redact.register_env(server_env)
    for arm in arms.values():
        check_server_args(source, (*server_args, *arm.args), workload, arm.name)
    return Scenario(
        name=_name(top, source),
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
        pin_cpus=_pin_cpus(server),
        workload=workload,
        starts=_int(cmp, "starts", 3, 1, limits.MAX_STARTS),
        repeats_per_start=_int(cmp, "repeats_per_start", 1, 1, limits.MAX_REPEATS),
        budget=_budget(cmp),
        seed=cmp.integer("seed", None),
        primary=_primary(cmp, thresholds),
        start_noise=_start_noise(cmp, thresholds),
        confidence=cmp.number("confidence", 0.95, low=0.5, high=0.999),
        parallel_gpus=_parallel_gpus(cmp, server, arms),
        thresholds=thresholds,
        arms=arms,
        accuracy=accuracy,
        profile=_profile(top.sub("profile")) if "profile" in doc else ProfileSpec(),
        gate=_gate(top.sub("gate")),
    )


def _parallel_gpus(
    cmp: _Fields, server: _Fields, arms: dict[str, ArmSpec]
) -> tuple[str, str] | None:
    """``[compare] parallel_gpus = ["0", "1"]``: two distinct GPUs (CUDA_VISIBLE_DEVICES
    values), both arms started by perfgate, not colocated; it replaces the arms' ``gpus``."""
    if "parallel_gpus" not in cmp.table:
        return None
    raw = cmp.table["parallel_gpus"]
    where = cmp.where("parallel_gpus")
    if (
        not isinstance(raw, list)
        or len(raw) != 2
        or not all(isinstance(g, str) and g.strip() for g in raw)
        or raw[0] == raw[1]
    ):
        raise ScenarioError(
            f'{where} must be two different GPUs as strings, e.g. ["0", "1"] (or ["0,1", '
            f'"2,3"] for two GPUs per server), got {raw!r}'
        )
    if server.table.get("colocate"):
        raise ScenarioError(
            f"{where} runs the arms at once on their own GPUs; remove colocate = true from "
            "[server] (colocated servers share one machine's GPUs)"
        )
    for arm in arms.values():
        if arm.url:
            raise ScenarioError(
                f"{where} needs perfgate to start both arms; arms.{arm.name} is a running "
                "server (url)"
            )
    return (raw[0], raw[1])


def _replaced_keys(cmp: _Fields, server: _Fields) -> None:
    """Keys of earlier perfgate versions, each named with what replaced it."""
    if "repeats" in cmp.table:
        raise ScenarioError(
            f"{cmp.where('repeats')} was replaced: the unit is now the server start. Use "
            "starts = N (server starts per arm) and repeats_per_start = M (timed repeats on "
            'each), or budget = "N" to add starts until the comparison is decided'
        )
    if "resamples" in cmp.table:
        raise ScenarioError(
            f"{cmp.where('resamples')} is no longer used: intervals come from per-start "
            "values (Welch's t), not a bootstrap of requests; remove it"
        )
    if "restart_between_repeats" in server.table:
        raise ScenarioError(
            f"{server.where('restart_between_repeats')} was replaced: every server start now "
            "runs [compare] repeats_per_start repeats (1: a restart between repeats); remove it"
        )


def _budget(cmp: _Fields) -> Budget | None:
    raw = cmp.table.get("budget")
    if raw is None:
        return None
    try:
        return parse_budget(str(raw))
    except ValueError as exc:
        raise ScenarioError(f"{cmp.where('budget')}: {exc}") from None


def _primary(cmp: _Fields, thresholds: tuple[Threshold, ...]) -> tuple[str, ...] | None:
    if "primary" not in cmp.table:
        return None
    names = cmp.str_list("primary")
    gated = [t.metric for t in thresholds]
    for name in names:
        if name not in gated:
            raise ScenarioError(
                f"{cmp.where('primary')}: {name!r} is not a gated metric; primary metrics "
                f"come from [thresholds] ({', '.join(gated)})"
            )
    if not names:
        raise ScenarioError(
            f"{cmp.where('primary')} is empty; name at least one gated metric, or leave it "
            "out to make every gated metric primary"
        )
    return names


def _start_noise(cmp: _Fields, thresholds: tuple[Threshold, ...]) -> StartNoise | None:
    if "start_noise" not in cmp.table:
        for key in ("start_noise_df", "start_noise_source"):
            if key in cmp.table:
                raise ScenarioError(f"{cmp.where(key)} is set without start_noise; give both")
        return None
    table = cmp.sub("start_noise")
    gated = {t.metric for t in thresholds}
    table.check_keys(gated)
    cv = {m: table.number(m, 0.0, low=1e-6, high=2.0) for m in table.table}
    df = cmp.number("start_noise_df", 10.0, low=1.0, high=1e6)
    return StartNoise(cv=cv, df=df, source=cmp.text("start_noise_source"))


def _int(f: _Fields, key: str, default: int, minimum: int, maximum: int) -> int:
    value = f.integer(key, default, minimum=minimum, maximum=maximum)
    return default if value is None else value


def _name(top: _Fields, source: str) -> str:
    """The scenario's name (a run directory's name and a report's heading): letters, digits,
    '.', '_' and '-'. Without one, the file's name with anything else replaced by '-'."""
    given = top.text("name")
    if given is None:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(source).stem).strip("-._")[:64]
        return stem or "scenario"
    if not NAME.fullmatch(given):
        raise ScenarioError(
            f"{top.where('name')} must be 1-64 letters, digits, '.', '_' or '-' (starting "
            f"with a letter or digit), got {given[:80]!r}; it names the run directory"
        )
    return given


def max_model_len(args: tuple[str, ...]) -> int | None:
    """The ``--max-model-len`` a vLLM command line sets (its last one, as argparse takes it;
    ``1024``, ``4k`` or ``1M``), or None when it sets none or perfgate cannot read it."""
    value = None
    for i, arg in enumerate(args):
        flag, eq, inline = arg.partition("=")
        if flag.replace("_", "-") != "--max-model-len":
            continue
        value = inline if eq else (args[i + 1] if i + 1 < len(args) else None)
    if value is None:
        return None
    m = re.fullmatch(r"(\d+)([kKmM]?)", value.strip())
    if m is None:
        return None
    scale = {"": 1, "k": 1000, "K": 1024, "m": 1_000_000, "M": 1024 * 1024}[m.group(2)]
    return int(m.group(1)) * scale


def check_server_args(source: str, args: tuple[str, ...], workload: Workload, arm: str) -> None:
    """Server arguments that cannot work with this workload, found before any server starts."""
    for arg in args:
        flag = arg.partition("=")[0].replace("_", "-")
        if flag in OWN_ARGS:
            raise ScenarioError(
                f"{source}: arms.{arm}: {flag} in the server arguments: {OWN_ARGS[flag]}; "
                "remove it (to use a server you started yourself, give the arm a url)"
            )
    limit = max_model_len(args)
    total = workload.input_len + workload.output_len
    if limit is not None and total > limit:
        raise ScenarioError(
            f"{source}: workload.input_len + workload.output_len = {workload.input_len} + "
            f"{workload.output_len} = {total} tokens exceeds --max-model-len {limit} in the "
            f"{arm}'s server arguments; shorten the workload or raise --max-model-len"
        )


def _rules(f: _Fields, key: str) -> tuple[KernelRule, ...]:
    raw = f.table.get(key, [])
    if not isinstance(raw, list):
        raise ScenarioError(f"{f.where(key)} must be a list of patterns")
    rules = []
    for item in raw:
        if isinstance(item, str):
            pattern, min_calls = item, 1
        elif isinstance(item, dict) and isinstance(item.get("pattern"), str):
            pattern, min_calls = item["pattern"], item.get("min_calls", 1)
            if isinstance(min_calls, bool) or not isinstance(min_calls, int) or min_calls < 1:
                raise ScenarioError(f"{f.where(key)}: min_calls must be an integer >= 1")
        else:
            raise ScenarioError(
                f"{f.where(key)} entries are regular expressions or "
                f'{{ pattern = "...", min_calls = N }}, got {item!r}'
            )
        try:
            rules.append(KernelRule(pattern, min_calls))
        except ProfileError as exc:
            raise ScenarioError(f"{f.where(key)}: {exc}") from None
    return tuple(rules)


def _gate(f: _Fields) -> ChangeRule:
    """``[gate]``: min_nights (a change must persist this long; the shortest segment) and
    penalty (times sigma^2 * log n; benchmarks/nightly_changepoints.py calibrates it)."""
    f.check_keys({"min_nights", "penalty", "min_segment"})
    d = ChangeRule()
    return ChangeRule(
        min_nights=f.integer("min_nights", d.min_nights, minimum=1, maximum=365) or d.min_nights,
        penalty=f.number("penalty", d.penalty, low=0.1, high=1000.0),
        min_segment=f.integer("min_segment", d.min_segment, minimum=1, maximum=365)
        or d.min_segment,
    )


def _pin_cpus(f: _Fields) -> str:
    value = f.table.get("pin_cpus", "auto")
    if isinstance(value, bool):
        return "true" if value else "false"
    if value != "auto":
        raise ScenarioError(f'{f.where("pin_cpus")} must be true, false or "auto", got {value!r}')
    return "auto"


def _profile(f: _Fields) -> ProfileSpec:
    f.check_keys({"enabled", "num_prompts", "output_len", "top", "baseline", "candidate"})
    expect, forbid = {}, {}
    for arm in ("baseline", "candidate"):
        sub = f.sub(arm)
        sub.check_keys({"expect_kernels", "forbid_kernels"})
        expect[arm], forbid[arm] = _rules(sub, "expect_kernels"), _rules(sub, "forbid_kernels")
    return ProfileSpec(
        enabled=f.flag("enabled", True),
        num_prompts=f.integer("num_prompts", None, minimum=1, maximum=limits.MAX_PROMPTS),
        output_len=f.integer("output_len", 64, minimum=2, maximum=limits.MAX_TOKENS) or 64,
        top=f.integer("top", 15, minimum=1, maximum=10_000) or 15,
        expect=expect,
        forbid=forbid,
    )


def _accuracy(f: _Fields) -> AccuracySpec:
    f.check_keys(
        {
            "enabled",
            "source",
            "path",
            "subset",
            "k",
            "limit",
            "endpoint",
            "temperature",
            "max_tokens",
            "reasoning_effort",
            "num_concurrent",
            "max_drop",
            "shuffle_seed",
        }
    )
    source = f.text("source", "bundled") or "bundled"
    if source not in ("bundled", "local", "hub"):
        raise ScenarioError(
            f'{f.where("source")} must be "bundled", "local" or "hub", got {source!r}'
        )
    endpoint = f.text("endpoint", "completions") or "completions"
    if endpoint not in ("completions", "chat"):
        raise ScenarioError(f'{f.where("endpoint")} must be "completions" or "chat"')
    effort = f.text("reasoning_effort")
    if effort is not None and effort not in ("low", "medium", "high"):
        raise ScenarioError(f"{f.where('reasoning_effort')} must be low, medium or high")
    return AccuracySpec(
        enabled=f.flag("enabled", True),
        source=source,
        path=f.text("path"),
        subset=f.text("subset", "diamond") or "diamond",
        k=f.integer("k", 2, minimum=1, maximum=limits.MAX_REPEATS) or 2,
        limit=f.integer("limit", None, minimum=1, maximum=limits.MAX_PROMPTS),
        endpoint=endpoint,
        temperature=f.number("temperature", 0.0, low=0.0, high=10.0),
        max_tokens=f.integer("max_tokens", 1024, minimum=1, maximum=limits.MAX_TOKENS) or 1024,
        reasoning_effort=effort,
        num_concurrent=f.integer("num_concurrent", 8, minimum=1, maximum=limits.MAX_CONCURRENCY)
        or 8,
        max_drop=f.number("max_drop", 0.01, low=0.0, high=1.0),
        shuffle_seed=f.integer("shuffle_seed", 0) or 0,
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
    profile: bool = False,
    weights: str | None = None,
) -> Scenario:
    """Apply command-line overrides (``--candidate-vllm`` etc.) on top of the file."""
    if weights is not None:
        if not weights.strip():
            raise ScenarioError("--weights is empty; give a checkpoint directory or a hub id")
        scenario = replace(scenario, model=weights)
    if profile:
        scenario = replace(scenario, profile=replace(scenario.profile, enabled=True))
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
        validate_arm(arm, "command line")
        check_server_args(
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
