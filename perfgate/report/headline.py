"""The first lines of report.md: the answer with its deciding metric, number, interval and
tolerance; the other gated metrics in one line; and what was compared (each arm's vLLM, how it
was launched where the arms differ, the model, the GPU)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from perfgate.decide import family
from perfgate.documents.compare import (
    IMPROVED,
    INCONCLUSIVE,
    NO_CHANGE,
    PASS,
    REGRESSED,
    MetricComparison,
)
from perfgate.documents.run import ARMS, CompareRun
from perfgate.report.mdtext import md_code, md_text, pct

MARK = {PASS: "✅", REGRESSED: "❌", INCONCLUSIVE: "⚠️", "invalid": "⛔"}


def change(row: MetricComparison) -> str:
    """ "+1.2% (+0.9% to +1.5%)", or "n/a" for a change that could not be measured."""
    if row.estimate is None or not math.isfinite(row.estimate):
        return "n/a"
    return f"{pct(row.estimate)} ({pct(row.low)} to {pct(row.high)})"


def _deciding(run: CompareRun) -> MetricComparison | None:
    """The row that decided the run's verdict: the regression (a primary first), else the
    first undecided primary (or guard), else the first primary."""
    rows = run.comparison
    if not rows:
        return None
    ranked = sorted(rows, key=lambda r: not r.primary)
    if run.verdict == REGRESSED:
        return next((r for r in ranked if r.verdict == REGRESSED), ranked[0])
    if run.verdict == INCONCLUSIVE:
        return next((r for r in ranked if family.holds_back(r)), ranked[0])
    return ranked[0]


def _plan(row: MetricComparison) -> str:
    if row.verdict != INCONCLUSIVE:
        return ""
    if row.starts_to_decide:
        return f" (~{row.starts_to_decide} starts/arm would decide)"
    return " (more starts would not decide it at this noise)" if row.starts_to_decide_low else ""


def answer(run: CompareRun, word: str) -> str:
    """The verdict sentence: ``word`` (the verdict as the report names it), the deciding
    metric with its change, interval and tolerance."""
    row = _deciding(run)
    mark = MARK.get(str(run.verdict), "")
    if row is None:
        return f"{mark} **{word}**"
    said = row.verdict if row.verdict in (REGRESSED, IMPROVED, NO_CHANGE) else "undecided"
    said = "" if said == run.verdict else f", {said}"
    return (
        f"{mark} **{word}**: {md_text(row.label)} {change(row)}{said}, tolerance "
        f"{row.tolerance:.1%}{_plan(row)}"
    )


def others(run: CompareRun, *, everything: bool = False) -> str | None:
    """The other gated metrics in one line (``everything``: all of them): each one's change
    and verdict."""
    first = None if everything else _deciding(run)
    rest = [r for r in run.comparison if r is not first]
    if not rest:
        return None
    return "Also: " + "; ".join(
        f"{md_text(r.label)} {change(r)} {md_text(r.verdict)}{_plan(r)}" for r in rest
    )


def builds(run: CompareRun) -> str:
    """What was compared: each arm's vLLM version and launch difference, the model, the GPU."""
    versions = {a: _first(r.result.server.version for r in run.repeats[a]) for a in ARMS}
    launch = {a: _launch_words(run, a) for a in ARMS}
    differ = {a: sorted(launch[a] - launch[_other(a)]) for a in ARMS}
    parts = []
    for arm in ARMS:
        text = f"{arm} vLLM {md_text(versions[arm] or 'n/a')}"
        if run.scenario.arms[arm].url:
            text += f" (running server {md_code(run.scenario.arms[arm].url, in_table=False)})"
        elif differ[arm]:
            text += " with " + md_code(" ".join(differ[arm]), in_table=False)
        parts.append(text)
    model = _first(r.result.server.model for a in ARMS for r in run.repeats[a])
    gpus = run.environment.get("gpus") or []
    gpu = ", ".join(str(g.get("name")) for g in gpus) if gpus else "CPU"
    served = md_code(model or run.scenario.model, in_table=False)
    return f"Compared: {'; '.join(parts)}; model {served} on {md_text(gpu)}."


def _other(arm: str) -> str:
    return ARMS[1] if arm == ARMS[0] else ARMS[0]


def _first(values: Iterable[str | None]) -> str | None:
    return next((v for v in values if v), None)


def _launch_words(run: CompareRun, arm: str) -> set[str]:
    """The arm's launch as words (its env pairs and command-line words), to show where the
    arms differ; perfgate's own per-arm settings (cache, port, log) left out."""
    servers = run.servers[arm]
    if not servers:
        return set()
    own = ("VLLM_CACHE_ROOT=", "CUDA_VISIBLE_DEVICES=", "TORCHINDUCTOR_CACHE_DIR=")
    env = {
        f"{k}={v}" for k, v in (servers[0].get("env") or {}).items() if not f"{k}=".startswith(own)
    }
    argv = [str(w) for w in servers[0].get("argv") or []]
    per_start = ("--port", "--profiler-config")  # perfgate's own, different on every start
    words = {
        w
        for i, w in enumerate(argv)
        if w not in per_start and (i == 0 or argv[i - 1] not in per_start)
    }
    return env | words
