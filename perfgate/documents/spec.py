"""The scenario as data: what to serve (model, arms, server settings), the workload, the design
(starts or budget, primary metrics, calibrated noise), the gates, the accuracy and profile
sections, and the nightly change-point rule. ``perfgate.scenario`` parses TOML and flags into
it; every stage reads it; results.json stores it (secrets masked)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from perfgate import limits, redact
from perfgate.documents.bench import Workload
from perfgate.documents.compare import StartNoise
from perfgate.documents.eval import AccuracySpec
from perfgate.documents.io import from_fields, need
from perfgate.documents.kernels import KernelRule


@dataclass(frozen=True)
class Threshold:
    """A gate on a registered metric: ``tolerance`` is the relative change in the bad
    direction the gate accepts (0.02 = 2%)."""

    metric: str
    tolerance: float


@dataclass(frozen=True)
class ChangeRule:
    """``[gate]``: the change-point rule's parameters (see the module docstring)."""

    min_nights: int = 3  # how long a change must persist (nights from it to tonight)
    penalty: float = 6.0  # times sigma^2 * log(n nights)
    min_segment: int = 2  # the shortest segment PELT may cut
    sigma: float | None = None  # night-to-night SD of the log ratio; None: from the history


@dataclass(frozen=True)
class Budget:
    """How long a sequential comparison may run: most server starts per arm and/or wall
    seconds (either may be None; at least one is set)."""

    starts: int | None = None
    seconds: float | None = None

    @property
    def most_starts(self) -> int:
        """Most starts per arm: the given number, else a cap (the spending of alpha over
        looks needs a last look)."""
        return self.starts if self.starts is not None else limits.BUDGET_STARTS

    def __str__(self) -> str:
        """As the report states it: "at most 8 starts per arm / 120 min"."""
        parts = [] if self.starts is None else [f"at most {self.starts} starts per arm"]
        if self.seconds is not None:
            parts.append(f"{self.seconds / 60:g} min")
        return " / ".join(parts)


class ScenarioError(Exception):
    """A scenario or override is wrong; the message names the file, the field and the fix."""


@dataclass(frozen=True)
class ArmSpec:
    name: str
    url: str | None = None
    vllm: str | None = None
    python: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    gpus: str | None = None
    # a url arm with [profile]: the folder its server writes traces to (torch_profiler_dir)
    trace_dir: str | None = None
    pin_cpus: str | None = None  # overrides [server] pin_cpus for this arm's servers
    # weights of its own (a model directory or hub name) in place of the scenario's model:
    # a re-quantized or patched checkpoint is the change under test
    model: str | None = None

    def to_json(self) -> dict[str, Any]:
        """As written to results.json: secrets masked."""
        return {
            "trace_dir": self.trace_dir,
            "pin_cpus": self.pin_cpus,
            "name": self.name,
            "url": redact.url(self.url) if self.url else None,
            "vllm": self.vllm,
            "python": self.python,
            "env": redact.env(self.env),
            "args": redact.args(self.args),
            "gpus": self.gpus,
            "model": self.model,
        }

    def register_secrets(self) -> None:
        redact.register_env(self.env)
        redact.register_args(self.args)
        if self.url:
            redact.register_url(self.url)


@dataclass(frozen=True)
class ProfileSpec:
    """The ``[profile]`` section: a profiled window at the end of every server start (after
    its timed repeats; ``perfgate.run.profile_phase``), its per-start figures, a kernel table,
    and what must or must not run in each arm."""

    enabled: bool = False
    num_prompts: int | None = None  # the window's requests, all at once; None: concurrency
    output_len: int = 64  # short: a decode step's kernels repeat; long traces are huge
    top: int = 15
    expect: dict[str, tuple[KernelRule, ...]] = field(default_factory=dict)
    forbid: dict[str, tuple[KernelRule, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    name: str
    source: str
    model: str
    arms: dict[str, ArmSpec]
    description: str = ""
    served_model_name: str | None = None
    requires_gpu: bool = False
    server_args: tuple[str, ...] = ()
    server_env: dict[str, str] = field(default_factory=dict)
    startup_timeout_s: float = 900.0
    colocate: bool = False  # both arms' servers up at once (when they fit)
    shared_compile_cache: bool = False  # False: each arm its own VLLM_CACHE_ROOT in the run dir
    # "auto" | "true" | "false": engine, API server and client on their own cores
    # (perfgate.run.placement; auto: GPU scenarios on machines with >= 8 usable cores)
    pin_cpus: str = "auto"
    workload: Workload = field(default_factory=Workload)
    starts: int = 4  # per arm (fixed design; a budget replaces it); even: balanced orders
    repeats_per_start: int = 1
    budget: Budget | None = None
    seed: int | None = None  # the rounds' order; None: drawn at run time and recorded
    primary: tuple[str, ...] | None = None  # None: every gated metric
    start_noise: StartNoise | None = None
    confidence: float = 0.95
    # two GPUs: both arms' starts of a round run at once, one per GPU, swapping every round
    parallel_gpus: tuple[str, str] | None = None
    thresholds: tuple[Threshold, ...] = ()
    accuracy: AccuracySpec = field(default_factory=lambda: AccuracySpec(enabled=False))
    profile: ProfileSpec = field(default_factory=ProfileSpec)
    gate: ChangeRule = field(default_factory=ChangeRule)  # perfgate gate's change-point rule

    def to_json(self) -> dict[str, Any]:
        """As written to results.json: secrets in environments, arguments and URLs masked."""
        d = asdict(self)
        d["workload"]["request_rate"] = (
            "inf" if math.isinf(self.workload.request_rate) else self.workload.request_rate
        )
        d["server_env"] = redact.env(self.server_env)
        d["server_args"] = redact.args(self.server_args)
        d["arms"] = {name: arm.to_json() for name, arm in self.arms.items()}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Scenario:
        """The scenario as a result file stored it: a record of what ran (its secrets stay
        masked), not something to launch again."""
        where = "scenario"
        wl = dict(need(d, "workload", where))
        if wl.get("request_rate") == "inf":
            wl["request_rate"] = math.inf
        prof = dict(d.get("profile") or {})
        rules = {
            kind: {
                arm: tuple(KernelRule(**r) for r in rs) for arm, rs in prof.get(kind, {}).items()
            }
            for kind in ("expect", "forbid")
        }
        return from_fields(
            cls,
            d,
            where,
            arms={
                name: from_fields(
                    ArmSpec,
                    arm,
                    f"scenario.arms.{name}",
                    name=name,
                    env=dict(arm.get("env") or {}),
                    args=tuple(arm.get("args") or ()),
                )
                for name, arm in need(d, "arms", where).items()
            },
            server_args=tuple(d.get("server_args") or ()),
            server_env=dict(d.get("server_env") or {}),
            workload=from_fields(Workload, wl, "scenario.workload"),
            thresholds=tuple(
                from_fields(Threshold, t, "scenario.thresholds")
                for t in need(d, "thresholds", where)
            ),
            accuracy=from_fields(
                AccuracySpec, d.get("accuracy") or {"enabled": False}, "scenario.accuracy"
            ),
            profile=from_fields(ProfileSpec, prof, "scenario.profile", **rules),
            budget=from_fields(Budget, d["budget"], "scenario.budget") if d.get("budget") else None,
            primary=tuple(d["primary"]) if d.get("primary") else None,
            start_noise=from_fields(StartNoise, d["start_noise"], "scenario.start_noise")
            if d.get("start_noise")
            else None,
            parallel_gpus=tuple(d["parallel_gpus"]) if d.get("parallel_gpus") else None,
            gate=from_fields(ChangeRule, d.get("gate") or {}, "scenario.gate"),
        )

    def api_key(self, arm: str) -> str | None:
        """The key the arm's server demands: its ``--api-key`` or ``VLLM_API_KEY`` when
        perfgate starts it, else (a url arm) ``OPENAI_API_KEY``, as OpenAI clients use."""
        spec = self.arms[arm]
        return redact.server_key(
            (*self.server_args, *spec.args), {**self.server_env, **spec.env}, started=not spec.url
        )
