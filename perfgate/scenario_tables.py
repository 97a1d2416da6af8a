"""The tables of a scenario's TOML, each read into its part of the spec
(``perfgate.documents.spec``), every error naming ``file: table.key`` and the fix.
``perfgate.scenario.parse`` puts the parts together."""

from __future__ import annotations

import math
import re
from pathlib import Path

from perfgate import limits, registry
from perfgate.documents.bench import Workload
from perfgate.documents.compare import StartNoise
from perfgate.documents.eval import AccuracySpec
from perfgate.documents.kernels import KernelRule, ProfileError
from perfgate.documents.spec import (
    ArmSpec,
    Budget,
    ChangeRule,
    ProfileSpec,
    ScenarioError,
    Threshold,
)
from perfgate.scenario_fields import Fields, integer, parse_budget

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


def arm(f: Fields, name: str) -> ArmSpec:
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
        pin_cpus=pin_cpus(f) if "pin_cpus" in f.table else None,
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


def parallel_gpus(cmp: Fields, server: Fields, arms: dict[str, ArmSpec]) -> tuple[str, str] | None:
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


def replaced_keys(cmp: Fields, server: Fields) -> None:
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


def budget(cmp: Fields) -> Budget | None:
    raw = cmp.table.get("budget")
    if raw is None:
        return None
    try:
        return parse_budget(str(raw))
    except ValueError as exc:
        raise ScenarioError(f"{cmp.where('budget')}: {exc}") from None


def primary(cmp: Fields, thresholds: tuple[Threshold, ...]) -> tuple[str, ...] | None:
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


def start_noise(cmp: Fields, thresholds: tuple[Threshold, ...]) -> StartNoise | None:
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


def scenario_name(top: Fields, source: str) -> str:
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


def kernel_rules(f: Fields, key: str) -> tuple[KernelRule, ...]:
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


def change_rule(f: Fields) -> ChangeRule:
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


def pin_cpus(f: Fields) -> str:
    value = f.table.get("pin_cpus", "auto")
    if isinstance(value, bool):
        return "true" if value else "false"
    if value != "auto":
        raise ScenarioError(f'{f.where("pin_cpus")} must be true, false or "auto", got {value!r}')
    return "auto"


def profile(f: Fields) -> ProfileSpec:
    f.check_keys({"enabled", "num_prompts", "output_len", "top", "baseline", "candidate"})
    expect, forbid = {}, {}
    for arm in ("baseline", "candidate"):
        sub = f.sub(arm)
        sub.check_keys({"expect_kernels", "forbid_kernels"})
        expect[arm], forbid[arm] = (
            kernel_rules(sub, "expect_kernels"),
            kernel_rules(sub, "forbid_kernels"),
        )
    return ProfileSpec(
        enabled=f.flag("enabled", True),
        num_prompts=f.integer("num_prompts", None, minimum=1, maximum=limits.MAX_PROMPTS),
        output_len=f.integer("output_len", 64, minimum=2, maximum=limits.MAX_TOKENS) or 64,
        top=f.integer("top", 15, minimum=1, maximum=10_000) or 15,
        expect=expect,
        forbid=forbid,
    )


def accuracy(f: Fields) -> AccuracySpec:
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


def workload(wl: Fields, source: str) -> Workload:
    """``[workload]``: the load to send, over ``Workload``'s defaults."""
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
            "ttft_timeout_s",
            "request_timeout_s",
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
        num_prompts=integer(wl, "num_prompts", d.num_prompts, 1, limits.MAX_PROMPTS),
        input_len=integer(wl, "input_len", d.input_len, 1, limits.MAX_TOKENS),
        output_len=integer(wl, "output_len", d.output_len, 1, limits.MAX_TOKENS),
        max_concurrency=max_concurrency,
        num_warmups=integer(wl, "num_warmups", d.num_warmups, 0, limits.MAX_PROMPTS),
        request_rate=wl.number("request_rate", d.request_rate, low=1e-9, high=math.inf),
        burstiness=wl.number("burstiness", d.burstiness, low=1e-3, high=1e3),
        seed=integer(wl, "seed", d.seed, 0, limits.MAX_SEED),
        temperature=wl.number("temperature", d.temperature, low=0.0, high=10.0),
        stall_timeout_s=wl.number("stall_timeout_s", d.stall_timeout_s, low=0.1, high=86400.0),
        ttft_timeout_s=None
        if "ttft_timeout_s" not in wl.table
        else wl.number("ttft_timeout_s", 0.0, low=0.001, high=86400.0),
        request_timeout_s=None
        if "request_timeout_s" not in wl.table
        else wl.number("request_timeout_s", 0.0, low=0.001, high=86400.0),
        client_processes=0
        if wl.table.get("client_processes", "auto") == "auto"
        else integer(wl, "client_processes", d.client_processes, 1, limits.MAX_CLIENT_PROCESSES),
    )
    if (
        problem := limits.send_span_problem(
            workload.num_prompts, workload.request_rate, "workload.request_rate"
        )
    ) is not None:
        raise ScenarioError(f"{source}: {problem}")
    return workload


def thresholds(th: Fields, given: bool, source: str) -> tuple[Threshold, ...]:
    """``[thresholds]``: metric = tolerance; perfgate's defaults when the table is left out
    (``given`` False), an error when it is there but empty."""
    th.check_keys(set(registry.gateable()))
    if given and not th.table:
        defaults = ", ".join(f"{k} = {v}" for k, v in DEFAULT_THRESHOLDS.items())
        raise ScenarioError(
            f"{source}: thresholds is empty, so nothing would be gated; name at least one "
            "metric (e.g. median_tpot_ms = 0.02), or leave the [thresholds] table out for "
            f"perfgate's defaults ({defaults})"
        )
    raw = Fields(source, "thresholds", th.table or DEFAULT_THRESHOLDS)
    return tuple(Threshold(m, raw.number(m, 0.0, low=0.0, high=10.0)) for m in raw.table)


def arms(arms_table: Fields) -> dict[str, ArmSpec]:
    """``[arms.baseline]`` and ``[arms.candidate]``, both required."""
    arms_table.check_keys({"baseline", "candidate"})
    for name in ("baseline", "candidate"):
        if name not in arms_table.table:
            raise ScenarioError(
                f"{arms_table.where(name)} is missing; every scenario has a [arms.baseline] "
                "and an [arms.candidate] table (an empty one runs this Python's vLLM)"
            )
    return {name: arm(arms_table.sub(name), name) for name in ("baseline", "candidate")}
