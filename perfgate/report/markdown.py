"""report.md: a compare result as a Markdown section to paste into a pull request.

A pure function of the run as ``results.json`` records it (``documents.run.CompareRun``, read
back from its JSON), so ``perfgate report`` renders a stored run exactly as the run itself did.
Everything a user or a server supplied (names, descriptions, commands, errors, kernel names,
versions) goes in escaped as text or fenced as code, so it can neither break the layout nor
smuggle markup or HTML into a pull request.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from perfgate import registry
from perfgate.decide import family
from perfgate.decide.comparison import group_by_start
from perfgate.documents.compare import INCONCLUSIVE, MetricComparison
from perfgate.documents.run import ARMS, CompareRun, Recomputed, Repeat
from perfgate.documents.spec import Budget
from perfgate.report import headline
from perfgate.report.accuracy_md import render_accuracy_section
from perfgate.report.kernels_md import render_profile_section
from perfgate.report.mdtext import fmt, md_block, md_code, md_text, short_g, size

VERDICT_LINE = {
    "pass": "✅ **pass**: no gated metric regressed",
    "regressed": "❌ **regressed**: at least one gated metric is worse beyond its tolerance",
    "inconclusive": "⚠️ **inconclusive**: the noise is too large to decide",
    "invalid": "⛔ **invalid**: a gated metric could not be measured",
}
STATUS_LINE = {
    "invalid": "⛔ **invalid run**",
    "failed": "⛔ **run failed**",
    "interrupted": "⛔ **interrupted**",
    "running": "⏳ **incomplete**",
}


def _median_over_repeats(repeats: list[Repeat], key: str) -> float | None:
    values = [float(v) for r in repeats if (v := r.metrics.get(key)) is not None]
    return statistics.median(values) if values else None


def _verdict_cell(row: MetricComparison) -> str:
    verdict = md_text(row.verdict)
    if row.primary is False:
        verdict += " (secondary)"
    if row.verdict != INCONCLUSIVE:
        return verdict
    reason = str(row.reason or "")
    if reason.startswith("start-to-start variation unsampled"):
        return verdict + ": start-to-start variation unsampled"
    if reason.startswith("confounded"):
        return verdict + ": confounded (each arm on its own GPU)"
    if reason.startswith("beyond the tolerance"):
        return verdict + ": beyond the tolerance, not significant after multiplicity (Holm)"
    n, low, high = row.starts_to_decide, row.starts_to_decide_low, row.starts_to_decide_high
    if n or high or low:
        span = f"{low or '?'}-{high or '>10000'}"
        return f"{verdict} (~{n or '>10000'} starts/arm to decide, range {span})"
    if row.repeats_to_decide:  # a result file of an earlier perfgate
        unit = row.unit or "repeat"
        return f"{verdict} (~{row.repeats_to_decide} {unit}s/arm to decide)"
    return verdict


def start_charts(rows: list[MetricComparison]) -> list[str]:
    """What decided the verdict, drawn where GitHub draws it (a PR comment cannot show the PNGs
    beside report.md): each gated metric's per-start values, baseline starts then candidate
    starts, as a Mermaid bar chart, in a collapsed section. Rows of a stored run that did not
    record their values draw nothing."""
    charts = []
    for r in rows:
        b, c = r.values_baseline or (), r.values_candidate or ()
        values = [v for v in (*b, *c) if isinstance(v, int | float) and math.isfinite(v)]
        if len(values) != len(b) + len(c) or not b or not c:
            continue
        low, high = min(values), max(values)
        pad = (high - low) * 0.1 or abs(high) * 0.01 or 1.0
        labels = [f"B{i}" for i in range(1, len(b) + 1)] + [f"C{i}" for i in range(1, len(c) + 1)]
        title = f"{r.label} per server start: B baseline, C candidate ({r.verdict})"
        charts += [
            "```mermaid",
            "xychart-beta",
            f'    title "{title.replace(chr(34), chr(39))}"',
            f"    x-axis [{', '.join(labels)}]",
            f"    y-axis {short_g(low - pad)} --> {short_g(high + pad)}",
            f"    bar [{', '.join(short_g(v) for v in values)}]",
            "```",
            "",
        ]
    if not charts:
        return []
    return [
        "<details><summary>Per-start values of each gated metric (what the verdict is made "
        "of)</summary>",
        "",
        *charts,
        "</details>",
        "",
    ]


def _unverified_guards(run: CompareRun) -> list[str]:
    """The guards that made a complete run inconclusive while every primary metric and
    accuracy was decided (``family.unverified_guards`` over the stored rows)."""
    rows = run.comparison
    accuracy = run.accuracy_comparison.verdict if run.accuracy_comparison else None
    if run.verdict != INCONCLUSIVE or accuracy == INCONCLUSIVE:
        return []
    if any(r.primary and family.holds_back(r) for r in rows):
        return []
    return [md_text(r.label or r.metric) for r in family.unverified_guards(rows)]


def _interim_split(design: dict[str, Any]) -> str:
    """How the run split alpha over its looks, as it recorded it: the interim looks' share (a
    run of an older perfgate: derived from its first interim look, at ``per-look share x
    looks left``), else said to be unrecorded."""
    share = design.get("interim_share")
    looks = design.get("looks") or []
    most = (design.get("budget") or {}).get("starts")
    if share is None and looks and most and looks[0]["starts"] < most:
        share = float(looks[0]["share"]) * (most - looks[0]["starts"])
    if share is None:
        return "the interim looks' share of alpha was not recorded"
    return f"interim looks share {float(share):.0%} of alpha, the final look keeps the rest"


def _interval_confidence(run: CompareRun) -> float:
    """The confidence of the timed metrics' intervals: the scenario's, or above it when the
    final look of a budget spent only part of alpha."""
    share = float(run.design.get("share") or 1.0)
    return 1 - (1 - run.scenario.confidence) * share


def _design_note(run: CompareRun) -> list[str]:
    """How the run was designed and judged: starts, order, looks, alpha, multiplicity."""
    rows = run.comparison
    if rows and rows[0].unit == "repeat":  # a file of a perfgate that compared repeats
        starts = {a: len(run.repeats[a]) for a in ARMS}
    else:
        starts = {a: len(group_by_start([r.start for r in run.repeats[a]])) for a in ARMS}
    design = run.design
    alpha = 1 - _interval_confidence(run)
    text = (
        f"Unit of replication: the server start ({starts['baseline']} baseline, "
        f"{starts['candidate']} candidate); each metric is one value per start (repeats on a "
        "start combined), compared with Welch's t on the log scale."
    )
    text += _after_last_look(rows, starts)
    if design.get("seed") is not None:
        text += f" Rounds in random balanced order, seed {md_text(design['seed'])}."
    looks = design.get("looks") or []
    if design.get("budget"):
        text += (
            f" Budget: {Budget(**design['budget'])}; {len(looks)} look(s), stopping when "
            f"decided; this analysis spends {float(design.get('share') or 1.0):.0%} of alpha "
            f"({_interim_split(design)}), so its intervals are at {1 - alpha:.1%} confidence."
        )
    tests = len(rows) + (1 if run.accuracy_comparison else 0)
    text += (
        f" Gate: regressed only when Holm's procedure over the {tests} gated test(s) rejects "
        f'"worse by at most the tolerance" at alpha {alpha:.3g} (family-wise false-fail '
        f"at most {alpha:.1%})."
    )
    lines = [
        "<details><summary>How the run was designed and judged</summary>",
        "",
        text,
        "",
        DETECTABLE[any(r.detectable_regression is not None for r in rows)],
        "",
        "</details>",
        "",
    ]
    if min(starts.values()) < 2 and any(not r.starts_sampled for r in rows):
        lines += [
            "⚠️ Start-to-start variation is not sampled: an arm ran on a single server start. "
            "Starts of one build differed by ~9% in median TPOT on an H200, so no speed "
            "verdict is given; give each arm two or more starts (`--starts`, `--budget`), or "
            "a calibrated `start_noise` from stored A/A runs.",
            "",
        ]
    return lines


def _after_last_look(rows: list[MetricComparison], starts: dict[str, int]) -> str:
    """A run stopped between looks (interrupted, failed) measured starts its table does not
    hold: say so, so the counts above and the table's agree."""
    row = next((r for r in rows if r.values_baseline and r.values_candidate), None)
    if row is None:
        return ""
    compared = {"baseline": len(row.values_baseline), "candidate": len(row.values_candidate)}
    later = {a: starts[a] - compared[a] for a in ARMS if starts[a] > compared[a]}
    if not later:
        return ""
    more = " and ".join(f"{n} {a}" for a, n in later.items())
    return (
        f" The table is the last look's, over {compared['baseline']} baseline and "
        f"{compared['candidate']} candidate starts; {more} start(s) measured after it are in "
        "results.json, not in the table."
    )


def render_compare_markdown(run: CompareRun, recomputed: Recomputed | None = None) -> str:
    """report.md of a compare run, as results.json records it (``documents.run.recorded``):
    the verdict first, the gated metrics and how the design decided them, pictures, accuracy,
    kernels, then the details. ``recomputed``: what the run itself reported, when this
    perfgate judged its stored repeats again."""
    rows = run.comparison
    lines = _head(run, recomputed)
    if rows:
        lines += _metric_table(rows)
        lines += _design_note(run)
    lines += start_charts(rows)
    if run.plots:
        lines += [
            "Pictures: " + ", ".join(f"[{md_text(Path(p).stem)}]({quote(p)})" for p in run.plots),
            "",
        ]
    lines += render_accuracy_section(run.accuracy, run.accuracy_comparison)
    lines += render_profile_section(
        run,
        top=run.scenario.profile.top,
        tpot=next((r for r in rows if r.metric == "median_tpot_ms"), None),
    )
    lines += _serving_table(run) + _warnings(run) + _environment(run)
    lines += ["Reproduce:", "", *md_block(str(run.command)), ""]
    return "\n".join(lines)


def _head(run: CompareRun, recomputed: Recomputed | None) -> list[str]:
    """The title, the verdict line (or how the run ended), a recomputation's note, the
    error, and the workload."""
    sc = run.scenario
    reps = {a: len(run.repeats[a]) for a in ARMS}
    lines = [f"## perfgate: {md_text(sc.name)}", ""]
    also = None
    if run.status == "complete":
        head = headline.answer(run, md_text(run.verdict))
        also = headline.others(run)
        if guards := _unverified_guards(run):
            head = (
                "⚠️ **inconclusive: guards unverified**: the primary metrics are decided, but "
                f"{', '.join(guards)} could still hide a regression beyond the tolerance"
            )
            also = headline.others(run, everything=True)
    else:
        head = STATUS_LINE.get(run.status, md_text(run.status))
    lines.append(f"{head} (exit {run.exit_code}).")
    if also:
        lines += ["", also + "."]
    lines += ["", headline.builds(run)]
    if sc.description:
        lines += ["", md_text(sc.description)]
    if recomputed is not None:
        lines += [
            "",
            f"Comparison recomputed from the stored repeats by perfgate "
            f"{recomputed.perfgate_version}'s statistics; the run itself reported "
            f"**{recomputed.verdict}** (exit {recomputed.exit_code}).",
        ]
    if run.error:
        error = str(run.error).strip()
        if len(error) > 3000:  # the head names the cause; the full text is in results.json
            error = error[:3000] + "\n... (full text in results.json)"
        lines += ["", *md_block(error)]
    w = sc.workload
    return [
        *lines,
        "",
        f"Workload: {w.num_prompts} prompts x {reps['baseline']} + {reps['candidate']} "
        f"repeats (baseline + candidate), {w.input_len} in / "
        f"{w.output_len} out, concurrency {w.max_concurrency}, endpoint "
        f"{md_code(w.endpoint, in_table=False)}. "
        f"Intervals: {_interval_confidence(run):.1%} confidence.",
        "",
    ]


# what the "detectable" column means: in older files a change against none, now a regression
NOISE = (
    "noise: how much a server start's value spreads between starts, about a coefficient of "
    "variation."
)
PLAN = (
    "the plan (starts/arm to decide, at 90% power) is given at the noise seen and over that "
    "noise's 80% interval."
)
DETECTABLE = {
    False: "detectable: the smallest change this run would have caught (80% power); "
    + NOISE
    + " A tolerance below the detectable change cannot be decided at this noise with this "
    "many starts; " + PLAN,
    True: "detectable: the smallest regression this run would have failed (80% power: the "
    "tolerance plus the reach of its test at Holm's strictest level, so never below the "
    "tolerance; far above it, the run cannot resolve the tolerance); "
    + NOISE
    + " Where a metric is undecided, "
    + PLAN,
}


def _detectable(row: MetricComparison) -> float | None:
    if row.detectable_regression is not None:
        return row.detectable_regression
    return row.min_detectable


def _metric_table(rows: list[MetricComparison]) -> list[str]:
    lines = [
        "| metric | baseline | candidate | change (CI) | detectable | noise (CV) "
        "| tolerance | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        better = "higher" if r.higher_is_better else "lower"
        lines.append(
            f"| {md_text(r.label)} | {fmt(r.baseline)} | {fmt(r.candidate)} | "
            f"{headline.change(r)} "
            f"| {size(_detectable(r))} | {size(r.cv_between_units)} "
            f"| {r.tolerance * 100:g}% ({better} is better) | {_verdict_cell(r)} |"
        )
    return [*lines, ""]


def _serving_table(run: CompareRun) -> list[str]:
    if not any(run.repeats[a] for a in ARMS):
        return []
    lines = [
        "<details><summary>Serving benchmark, side by side (median over repeats)</summary>",
        "",
        "| | baseline | candidate |",
        "|---|---:|---:|",
    ]
    for key in registry.SERVING_TABLE:
        m = registry.get(key)
        b = _median_over_repeats(run.repeats["baseline"], key)
        c = _median_over_repeats(run.repeats["candidate"], key)
        lines.append(f"| {m.label} | {fmt(b, m.fmt)} | {fmt(c, m.fmt)} |")
    return [*lines, "", "</details>", ""]


def _warnings(run: CompareRun) -> list[str]:
    """Each kind of warning once per arm, with how many repeats gave it (its first message)."""
    kinds: dict[tuple[str, str], list[str]] = {}
    for arm in ARMS:
        for rep in run.repeats[arm]:
            for w in rep.result.warnings:
                kinds.setdefault((arm, w.code or w.message), []).append(w.message)
    if not kinds:
        return []
    total = {a: len(run.repeats[a]) for a in ARMS}
    warnings = sorted(
        f"{arm}: {messages[0]}"
        + (f" ({len(messages)} of {total[arm]} repeats)" if len(messages) > 1 else "")
        for (arm, _), messages in kinds.items()
    )
    return [
        f"<details><summary>Warnings ({len(warnings)})</summary>",
        "",
        *(f"- {md_text(w)}" for w in warnings),
        "",
        "</details>",
        "",
    ]


def _environment(run: CompareRun) -> list[str]:
    lines = ["<details><summary>Environment</summary>", ""]
    lines += ["| | baseline | candidate |", "|---|---|---|"]
    env_rows = [
        ("vLLM version", lambda a: _first(r.result.server.version for r in run.repeats[a])),
        ("model", lambda a: _first(r.result.server.model for r in run.repeats[a])),
        ("launch", lambda a: _launch(run, a)),
    ]
    for label, fn in env_rows:
        lines.append(f"| {label} | {fn('baseline')} | {fn('candidate')} |")
    starts = render_starts(run.servers)
    if starts:
        lines += ["", "Server starts (the GPU sampled by nvidia-smi during the timed repeats):"]
        lines += ["", *starts[:-1]]
    env = run.environment
    gpus = env.get("gpus")
    gpu_text = (
        ", ".join(f"{g.get('name')} (driver {g.get('driver_version')})" for g in gpus)
        if gpus
        else "none (CPU)"
    )
    return [
        *lines,
        "",
        f"Host {md_code(env.get('hostname'), in_table=False)}, {md_text(env.get('platform'))}, "
        f"Python {md_text(env.get('python'))}, GPUs: {md_text(gpu_text)}, perfgate "
        f"{md_text(env.get('perfgate_version'))}.",
        "",
        "</details>",
        "",
    ]


def render_starts(servers: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Where each server start ran and the state of the host and GPU during its repeats."""
    lines = [
        "| arm | start | startup (s) | compile cache | pinned (engine / API / client) "
        "| GPU SM MHz (min-max) | clock events | max temp (C) | power (W) |",
        "|---|---:|---:|---|---|---|---|---:|---:|",
    ]
    seen = False
    for arm in ("baseline", "candidate"):
        for i, srv in enumerate(servers.get(arm) or []):
            facts = srv.get("facts")
            if not facts:
                continue
            seen = True
            pin = facts.get("pinning")
            pinned = (
                md_text(f"{pin['engine']} / {pin['api_server']} / {pin['client']}") if pin else "no"
            )
            gpus = [g for d in srv.get("during_repeats") or [] for g in d.get("gpu") or []]
            sm = [v for g in gpus for v in (g.get("sm_mhz") or [])]
            reasons = sorted({g.get("clock_event_reasons") for g in gpus} - {None})
            temps = [g["max_temperature_c"] for g in gpus if g.get("max_temperature_c")]
            power = [g["median_power_w"] for g in gpus if g.get("median_power_w")]
            cold = facts.get("compile_cache_cold")
            lines.append(
                f"| {arm} | {i + 1} | {fmt(srv.get('startup_s'), '{:.0f}')} | "
                f"{'shared' if cold is None else ('cold' if cold else 'warm')} | {pinned} | "
                f"{f'{min(sm):.0f}-{max(sm):.0f}' if sm else 'n/a'} | "
                f"{md_text(', '.join(reasons)) or 'n/a'} | "
                f"{fmt(max(temps) if temps else None, '{:.0f}')} | "
                f"{fmt(statistics.median(power) if power else None, '{:.0f}')} |"
            )
    return [*lines, ""] if seen else []


def _first(values: Iterable[str | None]) -> str:
    return next((md_code(v) for v in values if v), "n/a")


def _launch(run: CompareRun, arm: str) -> str:
    spec = run.scenario.arms[arm]
    if spec.url:
        return f"running server {md_code(spec.url)}"
    servers = run.servers[arm]
    if servers:
        argv = " ".join(servers[0]["argv"])
        env = " ".join(f"{k}={v}" for k, v in (servers[0].get("env") or {}).items())
        return md_code((env + " " + argv).strip())
    return "not started"
