"""Stored baselines (``baselines/*.json``, schema ``perfgate.baseline/1``): what a build measured
on one machine, kept to judge later builds against.

A baseline holds, for one scenario on one **fingerprint**, the per-start values of every gated
metric (one value per server start, as the decision rule uses them), the between-start noise
they show, and where they came from. The fingerprint has two parts:

- ``machine`` (must match, or the baseline is refused, naming the field that differs, as
  pyperf refuses to compare unlike runs): GPU model and count, driver, CUDA, the CPU model, and
  the scenario hash (model, server arguments and environment, workload, repeats per start,
  colocation, CPU pinning, profiled window: what defines the measurement, not the build under
  test).
- ``software`` (recorded, never matched): the vLLM version the baseline was measured with,
  Python, perfgate. A nightly gate measures a newer vLLM against it on purpose.

A baseline recorded from a run that measured accuracy also keeps that arm's GPQA answers per
question (``accuracy``: the spec and the per-question correctness), so a later night's accuracy
is judged question by question against it (``perfgate gate --accuracy``).

``perfgate baseline record RESULT --out baselines/NAME.json`` creates one from a compare (or
gate) run's arm, or adds that run's starts to an existing one of the same fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from perfgate import registry
from perfgate.decide.comparison import start_values
from perfgate.documents.io import ResultError, unpacked, write_json
from perfgate.documents.nightly import Baseline, BaselineMetric, Night, ReferenceAccuracy
from perfgate.documents.run import CompareRun
from perfgate.documents.spec import Threshold

MACHINE_FIELDS = ("gpu", "driver", "cuda", "cpu", "scenario_hash")
MAX_STARTS = 200  # per metric, the most recent kept


def scenario_hash(scenario: dict[str, Any]) -> str:
    """What defines the measurement, as stored in results.json's ``scenario`` (secrets
    already masked): two runs with the same hash measured the same thing."""
    keys = ("model", "served_model_name", "server_args", "server_env", "workload", "pin_cpus")
    part = {k: scenario.get(k) for k in keys}
    part["repeats_per_start"] = scenario.get("repeats_per_start")
    part["colocate"] = scenario.get("colocate")  # both servers up at once measure otherwise
    prof = scenario.get("profile") or {}
    part["window"] = (
        [prof.get("num_prompts"), prof.get("output_len")] if prof.get("enabled") else None
    )
    blob = json.dumps(part, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def machine(environment: dict[str, Any], scenario: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint fields that must match (see the module docstring)."""
    gpus = [g for g in environment.get("gpus") or [] if "name" in g]
    names = sorted({g["name"] for g in gpus})
    return {
        "gpu": f"{' + '.join(names)} x{len(gpus)}" if gpus else "none",
        "driver": gpus[0].get("driver_version") if gpus else None,
        "cuda": environment.get("cuda_version"),
        "cpu": environment.get("cpu_model"),
        "scenario_hash": scenario_hash(scenario),
    }


def mismatch(stored: dict[str, Any], now: dict[str, Any]) -> str | None:
    """The first machine field that differs, as a sentence; None when they match."""
    for key in MACHINE_FIELDS:
        if stored.get(key) != now.get(key):
            return f"{key}: the baseline has {stored.get(key)!r}, this run {now.get(key)!r}"
    return None


def load(path: Path) -> Baseline:
    try:
        raw = unpacked(path.read_bytes())
        doc = json.loads(raw)
    except FileNotFoundError:
        raise ResultError(
            f"{path}: no such baseline; record one with perfgate baseline record RESULT "
            f"--out {path}"
        ) from None
    except (OSError, ValueError, RecursionError) as exc:
        raise ResultError(f"{path}: cannot read it as a baseline ({exc})") from None
    return Baseline.from_json(doc, str(path))


def _software(doc: dict[str, Any], arm: str) -> dict[str, Any]:
    version = next(
        (
            r.get("server", {}).get("version")
            for r in doc["arms"][arm]["repeats"]
            if r.get("server", {}).get("version")
        ),
        None,
    )
    env = doc.get("environment") or {}
    return {
        "vllm": version,
        "python": env.get("python"),
        "perfgate": env.get("perfgate_version"),
    }


def from_run(doc: dict[str, Any], arm: str, source: str) -> Baseline:
    """A baseline of one arm of a stored compare document (through ``CompareRun``)."""
    if doc.get("status") != "complete":
        raise ResultError(
            f"{source}: the run did not complete (status {doc.get('status')!r}); a baseline "
            "is recorded only from a complete run"
        )
    run = CompareRun.from_json(doc)
    windows = [w.metrics for w in run.windows[arm]]
    metrics = {}
    for t in run.scenario.thresholds:
        values = start_values(t, run.repeats[arm], windows)
        if any(not (v > 0) for v in values) or not values:
            raise ResultError(
                f"{source}: {t.metric} was not measured on every start of the {arm} "
                "(missing is not zero): not a baseline"
            )
        metrics[t.metric] = BaselineMetric(
            values, t.tolerance, registry.get(t.metric).higher_is_better
        )
    answers = run.accuracy.get(arm)
    return Baseline(
        scenario=run.scenario.name,
        machine=machine(doc.get("environment") or {}, doc["scenario"]),
        software=_software(doc, arm),
        metrics=metrics,
        accuracy=None
        if answers is None
        else ReferenceAccuracy(run.scenario.accuracy, replace(answers, samples=[])),
        sources=[
            {
                "run": source,
                "arm": arm,
                "started_at": doc.get("started_at"),
                "starts": len({r.start for r in run.repeats[arm]}),
            }
        ],
    )


def merge(old: Baseline, new: Baseline, where: str) -> Baseline:
    """``new``'s starts added to ``old`` (the most recent MAX_STARTS kept per metric); refused
    when the machines differ, naming the field."""
    if (problem := mismatch(old.machine, new.machine)) is not None:
        raise ResultError(
            f"{where} was recorded on another machine or scenario ({problem}); a baseline is "
            "per machine and scenario: record this run into a new file"
        )
    metrics = dict(old.metrics)
    for k, m in new.metrics.items():
        before = old.metrics.get(k)
        values = [*(before.per_start if before else []), *m.per_start][-MAX_STARTS:]
        metrics[k] = BaselineMetric(values, m.tolerance, m.higher_is_better)
    return Baseline(
        scenario=old.scenario,
        machine=old.machine,
        software=new.software,
        metrics=metrics,
        sources=[*old.sources, *new.sources],
        night_noise=old.night_noise,
        accuracy=new.accuracy if new.accuracy is not None else old.accuracy,
    )


def night_noise(nights: Sequence[Night]) -> dict[str, float]:
    """Night-to-night SD of each metric's log ratio over a history of unchanged nights (a
    metric needs three nights with a ratio; nights without one are left out)."""
    logs: dict[str, list[float]] = {}
    for night in nights:
        for metric, x in night.metrics.items():
            if x.ratio and x.ratio > 0:
                logs.setdefault(metric, []).append(math.log(x.ratio))
    return {k: statistics.stdev(v) for k, v in logs.items() if len(v) > 2}


def save(path: Path, baseline: Baseline) -> None:
    write_json(path, baseline.to_json())


def per_start(baseline: Baseline, threshold: Threshold) -> list[float]:
    m = baseline.metrics.get(threshold.metric)
    return list(m.per_start) if m else []
