"""A scenario's ``start_noise`` from stored runs: the between-start spread of each gated metric,
pooled over every arm of every run given.

The decision rule replicates server starts, so the noise a design must beat is how much one
start's value spreads around its arm's mean: the SD of the log per-start values (about a
coefficient of variation). Each arm of each run is one group (an A/B's arms differ in level, not
necessarily in spread, so both count); the groups' sums of squares are pooled, with one degree
of freedom per start beyond the first in each group. Per-start values are the decision rule's
own (``comparison.start_values``): the same statistic, window or geometric mean.

The largest single group's spread is kept beside the pooled one: runs on different machines or
days can disagree (three H100s gave 0.06-0.9% for GPU time per decode step on one model), and a
user choosing a tolerance should see both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from perfgate import registry
from perfgate.decide.comparison import start_values
from perfgate.documents.run import ARMS, CompareRun
from perfgate.documents.spec import Threshold


@dataclass(frozen=True)
class GroupSpread:
    """One arm of one run: its starts with a value, and their log-scale SD."""

    where: str  # "FILE baseline"
    starts: int
    sd: float  # NaN with fewer than two starts


@dataclass(frozen=True)
class Calibration:
    metric: str
    label: str
    cv: float  # pooled SD of log per-start values; NaN with no degree of freedom
    df: int
    starts: int  # starts with a value, over every group
    missing: int  # starts without a finite value (left out)
    groups: tuple[GroupSpread, ...]

    @property
    def widest(self) -> GroupSpread | None:
        spread = [g for g in self.groups if not math.isnan(g.sd)]
        return max(spread, key=lambda g: g.sd) if spread else None


def _logs(values: Sequence[float]) -> list[float]:
    return [math.log(v) for v in values if math.isfinite(v) and v > 0]


def calibrate(runs: Sequence[tuple[str, CompareRun]], metrics: Sequence[str]) -> list[Calibration]:
    """Each metric's between-start spread, pooled over every arm of every ``(name, run)``."""
    out = []
    for metric in metrics:
        ss, df, starts, missing = 0.0, 0, 0, 0
        groups = []
        for name, run in runs:
            for arm in ARMS:
                windows = [w.metrics for w in run.windows[arm]]
                values = start_values(Threshold(metric, 0.0), run.repeats[arm], windows)
                logs = _logs(values)
                missing += len(values) - len(logs)
                starts += len(logs)
                sd = math.nan
                if len(logs) > 1:
                    mean = math.fsum(logs) / len(logs)
                    group_ss = math.fsum((x - mean) ** 2 for x in logs)
                    ss, df = ss + group_ss, df + len(logs) - 1
                    sd = math.sqrt(group_ss / (len(logs) - 1))
                if values:
                    groups.append(GroupSpread(f"{name} {arm}", len(logs), sd))
        out.append(
            Calibration(
                metric=metric,
                label=registry.get(metric).label,
                cv=math.sqrt(ss / df) if df else math.nan,
                df=df,
                starts=starts,
                missing=missing,
                groups=tuple(groups),
            )
        )
    return out


def provenance(runs: Sequence[tuple[str, CompareRun]]) -> str:
    """Where the calibration came from, for ``start_noise_source``: the runs, their GPUs (or
    CPU), vLLM versions and dates."""
    gpus: set[str] = set()
    versions: set[str] = set()
    dates: set[str] = set()
    for _, run in runs:
        for arm in ARMS:
            for rep in run.repeats[arm]:
                env = rep.result.environment or {}
                names = [g.get("name") for g in env.get("gpus") or [] if isinstance(g, dict)]
                gpus.update(str(n) for n in names if n)
                if not names and env.get("cpu_model"):
                    gpus.add(f"CPU {env['cpu_model']}")
                version = rep.result.server.version
                if version:
                    versions.add(f"vLLM {version}")
        dates.add(run.started_at[:10])
    parts = [
        f"{len(runs)} run(s): {', '.join(name for name, _ in runs)}",
        ", ".join(sorted(gpus)) or "machine not recorded",
        ", ".join(sorted(versions)) or "vLLM version not recorded",
        ", ".join(sorted(d for d in dates if d)),
    ]
    return "; ".join(p for p in parts if p)
