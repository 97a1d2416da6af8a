"""The kernel sections of a report: the profiled windows (time per decode step per start), the
kernels that changed with their intervals, the kernel assertions, and the kernel tables."""

from __future__ import annotations

from typing import Any

from perfgate.documents.compare import KernelChange, KernelComparison, MetricComparison
from perfgate.documents.io import from_fields
from perfgate.documents.kernels import KernelTable, short_name
from perfgate.documents.run import CompareRun, ProfiledStart
from perfgate.profiling import diff_tables
from perfgate.report.mdtext import fmt, md_code, md_text, pct, us


def distinct_names(names: list[str], width: int = 90) -> dict[str, str]:
    """Each kernel name shortened to ``width`` (template arguments run to kilobytes) so that
    different kernels stay different: names whose heads coincide keep their tails too
    ("head...tail"), and any still alike are numbered."""
    short = {n: short_name(n, width) for n in names}
    taken: dict[str, list[str]] = {}
    for n, s in short.items():
        taken.setdefault(s, []).append(n)
    for alike in (group for group in taken.values() if len(group) > 1):
        half = (width - 3) // 2
        for n in alike:
            flat = " ".join(n.split())
            short[n] = flat if len(flat) <= width else flat[:half] + "..." + flat[-half:]
    seen: dict[str, int] = {}
    for n in names:
        k = seen[short[n]] = seen.get(short[n], 0) + 1
        if k > 1:
            short[n] += f" #{k}"
    return short


def render_steps(trace: str, source: str, groups: list[Any]) -> list[str]:
    """Engine steps of one trace (``perfgate.steps.groups``): kind, batch, count, device time
    per step (median and range), per token, launches per step."""
    what = "GPU kernel time" if source == "kernel" else "CPU operator time"
    lines = [
        f"Engine steps in {md_code(trace, in_table=False)} ({what} inside each step):",
        "",
        "| step | tokens | steps | median (us) | min-max (us) | per token (us) | launches |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for g in groups:
        lines.append(
            f"| {md_text(g.kind)} | {g.tokens} | {g.steps} | {g.median_us:.1f} | {g.min_us:.1f}-"
            f"{g.max_us:.1f} | {g.per_token_us:.1f} | {g.launches:g} |"
        )
    if not groups:
        lines.append("| (no engine step annotations in this trace) | | | | | | |")
    return [*lines, ""]


def render_kernel_table(table: KernelTable, top: int, title: str = "") -> list[str]:
    what = "GPU kernel" if table.source == "kernel" else "CPU operator (self time)"
    lines = [title] if title else []
    graphs = table.graph_launches or 0
    lines += [
        f"{len(table.rows)} distinct names ({what}), {table.total_us / 1000:.2f} ms in all"
        + (f", {graphs} CUDA graph launches" if graphs else "")
        + ".",
        "",
        f"| {what} | calls | total (ms) | mean (us) | share |",
        "|---|---:|---:|---:|---:|",
    ]
    shown = table.rows[:top]
    names = distinct_names([r.name for r in shown])
    for r in shown:
        lines.append(
            f"| {md_code(names[r.name])} | {r.calls} | {r.total_us / 1000:.3f} "
            f"| {r.mean_us:.1f} | {r.share:.1%} |"
        )
    return [*lines, ""]


def render_kernel_diff(base: KernelTable, cand: KernelTable, top: int) -> list[str]:
    lines = [
        "| kernel | baseline calls | baseline (ms) | candidate calls | candidate (ms) | change |",
        "|---|---:|---:|---:|---:|---|",
    ]
    diffs = diff_tables(base, cand, top=top)
    names = distinct_names([r.name for r in diffs])
    for r in diffs:
        lines.append(
            f"| {md_code(names[r.name])} | {r.baseline_calls} | {r.baseline_us / 1000:.3f} | "
            f"{r.candidate_calls} | {r.candidate_us / 1000:.3f} | {md_text(r.change)} |"
        )
    return [*lines, ""]


def render_windows(windows: dict[str, list[ProfiledStart]]) -> list[str]:
    """Each start's profiled-window figures, arm by arm."""
    lines = [
        "| arm | start | decode steps | time / step (us) | per token (us) | launches / step "
        "| graph replays / step | other steps (kind x batch: steps) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for arm in ("baseline", "candidate"):
        for profiled in windows.get(arm) or []:
            w = profiled.window
            others = ", ".join(
                f"{md_text(g.kind)} x {g.tokens}: {g.steps}"
                for g in w.groups or ()
                if not (g.kind == "decode" and g.tokens == w.batch)
            )
            lines.append(
                f"| {arm} | {profiled.start + 1} | {w.decode_steps} | "
                f"{us(w.time_per_step_us)} | {us(w.time_per_token_us)} | "
                f"{fmt(w.launches_per_step, '{:.0f}')} | "
                f"{fmt(w.graph_replays_per_step, '{:.0f}')} | {others or '-'} |"
            )
    return [*lines, ""]


def render_kernel_changes(k: KernelComparison, tpot: MetricComparison | None) -> list[str]:
    """The kernel-level A/B table: what changed per decode step, with intervals across
    starts, and how much of the step's change it explains, beside the end-to-end change."""
    what = "kernel" if k.source == "kernel" else "CPU operator"
    if k.problem:
        return [f"No kernel-level comparison: {md_text(k.problem)}.", ""]
    conf = f"{k.confidence:.0%}"
    lines = [
        f"**{what[0].upper() + what[1:]} changes per decode step** (batch {k.batch}; "
        f"{k.starts[0]} + {k.starts[1]} starts; mean over starts, {conf} interval of "
        "the change across starts)",
        "",
    ]
    rows = k.rows
    if rows:
        lines += [
            f"| {what} | change | us / call | calls / step | us / step | change / step (CI) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        names = distinct_names([r.name for r in rows], 70)
        for r in rows:
            lines.append(
                f"| {md_code(names[r.name])} | {md_text(r.change)} | "
                f"{us(r.baseline_us_per_call)} -> {us(r.candidate_us_per_call)} | "
                f"{r.baseline_calls_per_step:.1f} -> {r.candidate_calls_per_step:.1f} | "
                f"{us(r.baseline_us_per_step)} -> {us(r.candidate_us_per_step)} | "
                f"{us(r.diff_us_per_step, True)} ({us(r.low, True)} to "
                f"{us(r.high, True)}) |"
            )
        lines += [
            "",
            f"Each row's interval is its own ({conf}, not adjusted for the {len(rows)} listed "
            "nor for the kernels left out): it describes where the step's change went; the "
            "gated metrics above carry the verdict.",
            "",
        ]
    else:
        lines += [f"No {what} appeared, disappeared or changed beyond 0.5% of a step.", ""]
    step = (
        f"Time per decode step (the kernels' sum): {us(k.baseline_step_us)} -> "
        f"{us(k.candidate_step_us)} us, {us(k.step_diff_us, True)} us "
        f"({us(k.step_low, True)} to {us(k.step_high, True)}); the {len(rows)} listed "
        f"account for {us(k.listed_diff_us, True)} us, smaller changes elsewhere for "
        f"{us(k.step_diff_us - k.listed_diff_us, True)} us."
    )
    if tpot is not None:
        step += (
            f" End to end, {tpot.label}: {pct(tpot.estimate)} "
            f"({pct(tpot.low)} to {pct(tpot.high)})."
        )
    return [*lines, step, ""]


def render_checks(checks: list[dict[str, Any]]) -> list[str]:
    """The expect/forbid assertions, one row each with its calls on every profiled start."""
    by: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
    for c in checks:
        by.setdefault((c["arm"], c["kind"], c["pattern"], c["min_calls"]), []).append(c)
    lines = ["| arm | assertion | pattern | calls (per start) | result |", "|---|---|---|---:|---|"]
    for (arm, kind, pattern, min_calls), cs in by.items():
        need = f">= {min_calls}" if kind == "expect" else f"< {min_calls}"
        mark = "✅ pass" if all(c["ok"] for c in cs) else "❌ **fail**"
        calls = ", ".join(str(c["calls"]) for c in cs)
        lines.append(
            f"| {md_text(arm)} | {md_text(kind)} ({need} calls) | {md_code(pattern)} | {calls} "
            f"| {mark} |"
        )
    return [*lines, ""]


def render_profile_section(
    run: CompareRun, top: int = 10, tpot: MetricComparison | None = None
) -> list[str]:
    arms, checks, windows = run.profiles, run.kernel_checks, run.windows
    if not arms and not checks:
        return []
    lines = []
    if any(windows.values()):
        lines += [
            "**Kernel profile**: a profiled window at the end of every server start (after "
            "its timed repeats: the profiler never runs during a timed repeat); device time "
            "per decode step at the window's batch (GPU kernel time; CPU operator time on "
            "CPU vLLM). Prefill and mixed steps, whose batching depends on arrival timing, "
            "are counted apart.",
            "",
            "<details><summary>Profiled windows, start by start</summary>",
            "",
            *render_windows(windows),
            "</details>",
            "",
        ]
    else:  # results from before per-start windows: one profiled start per arm
        lines += [
            "**Kernel profile** (a separate, profiled server start per arm; its timings are "
            "not used)",
            "",
        ]
    if run.kernel_comparison:
        lines += render_kernel_changes(kernel_comparison(run.kernel_comparison), tpot)
    if checks:
        lines += render_checks(checks)
    if "baseline" in arms and "candidate" in arms:
        lines += [
            "<details><summary>Largest differences in the first window's totals</summary>",
            "",
        ]
        lines += render_kernel_diff(arms["baseline"], arms["candidate"], top)
        lines += ["</details>", ""]
    for name, table in arms.items():
        lines += [f"<details><summary>Top {top}: {name} (first window)</summary>", ""]
        lines += render_kernel_table(table, top)
        lines += ["</details>", ""]
    return lines


def kernel_comparison(doc: dict[str, Any]) -> KernelComparison:
    """The kernel table as results.json stores it (``profile.kernels``), typed."""
    where = "profile.kernels"
    return from_fields(
        KernelComparison,
        doc,
        where,
        starts=tuple(int(n) for n in doc.get("starts") or (0, 0)),
        rows=[from_fields(KernelChange, r, f"{where}.rows") for r in doc.get("rows") or []],
    )
