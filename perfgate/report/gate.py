"""What ``perfgate gate`` writes besides results.json: report.md (the night's comparison, the
history's change points and the verdict) and a JUnit XML file (one test case per gated metric
and per kernel assertion), for CI systems that show test results."""

from __future__ import annotations

import math
import socket
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from typing import Any

from perfgate import registry
from perfgate.decide.nightly import (
    AT_ONCE_ALPHA,
    AT_ONCE_K,
    LEVEL_ALPHA,
    pending_reason,
    regressed_reason,
)
from perfgate.documents.compare import INCONCLUSIVE, MetricComparison
from perfgate.documents.io import replacing
from perfgate.documents.nightly import AT_ONCE, Detection, GateOutcome, Night
from perfgate.documents.run import CompareRun, recorded
from perfgate.documents.spec import ChangeRule
from perfgate.report.markdown import VERDICT_LINE, render_compare_markdown
from perfgate.report.mdtext import md_code, md_text

LAST_NIGHTS = 12


def _pct(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v * 100:+.1f}%"


PENDING = "pending: "


def night_head(verdict: str, reason: str, code: int) -> str:
    """A night's verdict line with its reason: "pending" where persistence, not noise, keeps
    it undecided (exit 3 all the same)."""
    if verdict == INCONCLUSIVE and reason.startswith(PENDING):
        return f"⏳ **pending** (exit {code}): {md_text(reason.removeprefix(PENDING))}."
    return f"{VERDICT_LINE.get(verdict, md_text(verdict))} (exit {code}): {md_text(reason)}."


def render_gate_markdown(outcome: GateOutcome) -> str:
    night, nights = outcome.night, outcome.nights
    head = night_head(outcome.verdict, outcome.reason, outcome.exit_code)
    stored = "gate" in outcome.run.design
    against = "the stored baseline" if stored else "a reference build run the same night"
    lines = [
        f"## perfgate gate: {md_text(outcome.run.scenario.name)}",
        "",
        head,
        "",
        f"Night {len(nights)} ({md_text(night.date)}, commit "
        f"{md_code(night.commit or 'n/a', in_table=False)}) "
        f"against {against}"
        + (
            " (its stored per-start values are the comparison's baseline column)."
            if stored
            else "."
        ),
        "",
    ]
    lines += render_history_section(
        nights, outcome.detection, [t.metric for t in outcome.run.scenario.thresholds],
        outcome.run.scenario.gate,
    )  # fmt: skip
    lines += [
        "",
        "---",
        "",
        "Tonight's comparison:",
        "",
        render_compare_markdown(recorded(outcome.run)),
    ]
    return "\n".join(lines)


def render_history_section(
    nights: list[Night], detection: Detection, metrics: list[str], rule: ChangeRule
) -> list[str]:
    """What the rule finds in a history, as the gate's report and ``perfgate history`` print
    it: the failed and pending metrics, missing nights, each metric's level against the
    reference, PELT's change points with their p-values, the last nights, and the rule."""
    lines: list[str] = []
    for c in detection.regressed:
        span = f"{c.commits[0] or 'n/a'}..{c.commits[1] or 'n/a'}"
        how = "tonight alone" if c.rule == AT_ONCE else "its level"
        lines += [
            f"❌ **{md_text(registry.get(c.metric).label)}** ({how}): "
            f"{md_text(regressed_reason(c))}. Bisect {md_code(span, in_table=False)}.",
            "",
        ]
    for c in detection.pending:
        lines += [
            f"⏳ **{md_text(registry.get(c.metric).label)}**: {md_text(pending_reason(c))}.",
            "",
        ]
    if (since := detection.reference_since) is not None:
        lines += [
            f"ℹ️ the reference changed on night {since + 1} ({md_text(nights[since].date)}): "
            f"the baseline was recorded again, or the nights switched between a stored "
            f"baseline and a same-night reference build; levels and change points are judged "
            f"over the {len(nights) - since} nights since.",
            "",
        ]
    for metric, count in detection.missing.items():
        lines += [
            f"⚠️ {md_text(registry.get(metric).label)}: not measured on the last {count} "
            "night(s); "
            "judged on the nights that measured it.",
            "",
        ]
    lines += _levels_table(detection)
    if detection.changes:
        lines += ["Change points (PELT), with the p-value of each step:", ""]
        lines += [
            f"- {md_text(registry.get(c.metric).label)}: {c.step:+.1%} from night {c.night + 1} "
            f"({md_text(c.first_date)}), {c.nights_after} nights, p = {c.p_value:.2g}"
            for c in detection.changes
        ]
        lines.append("")
    lines += [
        f"History, last {min(LAST_NIGHTS, len(nights))} of {len(nights)} nights (ratio to the "
        "reference per gated metric):",
        "",
        "| night | date | commit | "
        + " | ".join(registry.get(m).label for m in metrics)
        + " | verdict |",
        "|---:|---|---|" + "---:|" * len(metrics) + "---|",
    ]
    first = max(0, len(nights) - LAST_NIGHTS)
    for i, n in enumerate(nights[first:], first + 1):
        cells = [_pct(n.metrics[m].ratio - 1) if m in n.metrics else "n/a" for m in metrics]
        lines.append(
            f"| {i} | {md_text(n.date)} | {md_code(n.commit or 'n/a')} | "
            + " | ".join(cells)
            + f" | {md_text(n.verdict)} |"
        )
    sigma = ", ".join(
        f"{md_text(registry.get(m).label)} {s:.2%}"
        + (f" (day effect {d:.2%})" if (d := detection.day.get(m, 0.0)) > 0 else "")
        for m, s in detection.sigma.items()
        if math.isfinite(s)
    )
    lines += [
        "",
        f"Rule (docs/nightly.md): a metric fails the night it is seen when tonight's own "
        f"comparison is certainly worse than {AT_ONCE_K:g} x its tolerance (p < "
        f"{AT_ONCE_ALPHA:g}); else when its level over the recent nights (the segment since "
        f"PELT's last change point, or the last {rule.min_nights} nights) is worse than the "
        f"tolerance (p < {LEVEL_ALPHA:g}, at sqrt(sigma^2 / nights + day^2), the day effect "
        f"being sigma's share beyond the nights' own errors); a level or a night worse than "
        f"the tolerance that is not yet established is pending (exit 3). Change points: PELT "
        f"on the log ratios (penalty {rule.penalty:g} x sigma^2 x log n, segments of at least "
        f"{rule.min_segment} nights). Night-to-night sigma: {sigma or 'not yet estimable'}.",
        "",
    ]
    return lines


def _levels_table(detection: Detection) -> list[str]:
    """Each gated metric's current level against the reference, with its interval."""
    if not detection.levels:
        return []
    lines = [
        "| metric | level vs reference (95% CI) | since night | worse than tolerance | state |",
        "|---|---:|---:|---:|---|",
    ]
    for c in detection.levels:
        state = "regressed" if c.regressed else "pending" if c.pending else "within"
        lines.append(
            f"| {md_text(registry.get(c.metric).label)} | {_pct(c.level)} ({_pct(c.level_low)} "
            f"to {_pct(c.level_high)}) | {c.night + 1} | {c.nights_beyond} of the last "
            f"{c.nights_needed} | {state} (tolerance {c.tolerance:.1%}) |"
        )
    return [*lines, ""]


def write_junit(path: Path, outcome: GateOutcome | None, run: CompareRun, name: str) -> None:
    """JUnit XML for CI systems, for every way a run ends (exit 0, 1, 2 and 3): one test case
    per gated metric, for accuracy, per kernel assertion, and one for the run itself.

    A metric or accuracy that regressed is a ``failure`` (in a gate: by the history's rule; in
    a compare: by the run's verdict); one that could not be measured, a kernel assertion that
    failed (the kernel under test never ran) and a run that did not complete are ``error``s; an
    undecided one is ``skipped`` with its reason (inconclusive, or in a gate a change tonight
    still pending), so an inconclusive run is never all green (docs/nightly.md). Times are in
    seconds: the run's case and the suite carry the run's wall time so far."""
    regressed = {c.metric: c for c in outcome.detection.regressed} if outcome else {}
    suite_time = _elapsed(run.started_at)
    suite = ET.Element("testsuite", name=f"perfgate {name}")
    props = ET.SubElement(suite, "properties")
    for key, value in (
        ("status", run.status),
        ("verdict", run.verdict),
        ("exit_code", run.exit_code),
        ("command", run.command),
    ):
        ET.SubElement(props, "property", name=key, value=str(value))
    cases: list[tuple[str, str, str | None, str, float]] = []
    for row in run.comparison:
        change = f"{_pct(row.estimate)} ({_pct(row.low)} to {_pct(row.high)})"
        cases.append(
            ("perfgate.metric", row.metric, *_metric_outcome(row, change, regressed, outcome), 0.0)
        )
    acc = run.accuracy_comparison
    if acc is not None:
        d, lo, hi = (v * 100 for v in (acc.diff, acc.diff_low, acc.diff_high))
        diff = f"{d:+.1f} pp ({lo:+.1f} to {hi:+.1f})"
        kinds = {"regressed": "failure", "inconclusive": "skipped", "invalid": "error"}
        cases.append(
            ("perfgate.accuracy", "accuracy", kinds.get(acc.verdict), f"{acc.verdict}: {diff}", 0.0)
        )
    by: dict[str, list[dict[str, Any]]] = {}  # one case per assertion, over every window
    for check in run.kernel_checks:
        by.setdefault(f"{check['arm']} {check['kind']} {check['pattern']}", []).append(check)
    for label, checks in by.items():
        failed = [c for c in checks if not c["ok"]]
        message = failed[0]["message"] if failed else f"held on {len(checks)} window(s)"
        cases.append(("perfgate.kernel", label, "error" if failed else None, message, 0.0))
    status = str(run.status)
    run_message = f"{status}: {run.error or 'the run did not complete'}"
    cases.append(("perfgate.run", "run", None if status == "complete" else "error",
                  "complete" if status == "complete" else run_message, suite_time))  # fmt: skip
    counts = {"failure": 0, "error": 0, "skipped": 0}
    for classname, case_name, kind, message, seconds in cases:
        case = ET.SubElement(
            suite, "testcase", name=case_name, classname=classname, time=f"{seconds:.3f}"
        )
        if kind is None:
            ET.SubElement(case, "system-out").text = message
            continue
        counts[kind] += 1
        attrs = {"message": _one_line(message)}
        if kind != "skipped":
            attrs["type"] = _case_type(kind, message)
        ET.SubElement(case, kind, attrs).text = message
    ET.SubElement(suite, "system-out").text = str(run.verdict or status)
    ET.SubElement(suite, "system-err").text = str(run.error or "")
    totals = {
        "tests": str(len(cases)),
        "failures": str(counts["failure"]),
        "errors": str(counts["error"]),
        "skipped": str(counts["skipped"]),
        "time": f"{suite_time:.3f}",
    }
    suite.attrib.update(totals)
    suite.set("timestamp", _timestamp(run.started_at))
    suite.set("hostname", socket.gethostname() or "localhost")
    root = ET.Element("testsuites", {"name": f"perfgate {name}", **totals})
    root.append(suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)


def _metric_outcome(
    row: MetricComparison,
    change: str,
    regressed: dict[str, Any],
    outcome: GateOutcome | None,
) -> tuple[str | None, str]:
    """(failure | error | skipped | None for a pass, its message) for one metric's row."""
    verdict = str(row.verdict)
    if verdict == "invalid":
        return "error", f"invalid: {change}"
    if outcome is not None:
        c = regressed.get(row.metric)
        if c is not None:
            return "failure", (
                f"regressed: {regressed_reason(c)}; bisect {c.commits[0]}..{c.commits[1]}"
            )
        pending = {p.metric: p for p in outcome.detection.pending}.get(row.metric)
        if pending is not None:
            return "skipped", f"{pending_reason(pending)}; tonight {change}"
        if verdict == "regressed":
            return "skipped", f"pending: tonight regressed, {change}"
        return None, f"tonight {verdict}: {change}"
    if verdict == "regressed":
        return "failure", f"regressed: {change}, tolerance {row.tolerance:.1%}"
    if verdict == "inconclusive":
        why = "guard unverified" if row.primary is False else "inconclusive"
        plan = row.starts_to_decide
        return "skipped", f"{why}: {change}" + (f"; ~{plan} starts/arm to decide" if plan else "")
    return None, f"{verdict}: {change}"


def _case_type(kind: str, message: str) -> str:
    return message.split(":", 1)[0] if ":" in message else kind


def _one_line(text: str, cap: int = 500) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= cap else line[: cap - 3] + "..."


def _elapsed(started_at: Any) -> float:
    """Seconds since the run began (0 when its start time is not readable)."""
    try:
        began = datetime.strptime(str(started_at), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return 0.0
    return max(0.0, (datetime.now(began.tzinfo) - began).total_seconds())


def _timestamp(started_at: Any) -> str:
    """JUnit's timestamp: the run's start, date and time without the zone."""
    text = str(started_at or "")
    if len(text) >= 19 and text[10] == "T":
        return text[:19]
    return datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
