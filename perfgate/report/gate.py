"""What ``perfgate gate`` writes besides results.json: report.md (the night's comparison, the
history's change points and the verdict) and a JUnit XML file (one test case per gated metric
and per kernel assertion), for CI systems that show test results."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perfgate import registry
from perfgate.report.markdown import VERDICT_LINE, md_text, render_compare_markdown

if TYPE_CHECKING:
    from perfgate.run.gate import GateOutcome

LAST_NIGHTS = 12


def _pct(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v * 100:+.1f}%"


def render_gate_markdown(outcome: GateOutcome) -> str:
    night, nights = outcome.night, outcome.nights
    head = VERDICT_LINE.get(outcome.verdict, outcome.verdict)
    stored = "gate" in outcome.run.design
    against = "the stored baseline" if stored else "a reference build run the same night"
    lines = [
        f"## perfgate gate: {md_text(outcome.run.scenario.name)}",
        "",
        f"{head} (exit {outcome.exit_code}): {md_text(outcome.reason)}.",
        "",
        f"Night {len(nights)} ({md_text(night.date)}, commit `{night.commit or 'n/a'}`) "
        f"against {against}"
        + (
            " (its stored per-start values are the comparison's baseline column)."
            if stored
            else "."
        ),
        "",
    ]
    for c in outcome.detection.regressed:
        before, after = c.commits
        lines += [
            f"❌ **{md_text(registry.get(c.metric).label)}**: {c.step:+.1%} from night "
            f"{c.night + 1} ({md_text(c.first_date)}) on, {c.nights_after} nights. Bisect "
            f"`{before or 'n/a'}..{after or 'n/a'}`.",
            "",
        ]
    others = [c for c in outcome.detection.changes if not c.regressed]
    if others:
        lines += ["Other change points (within tolerance, not persisting yet, or better):", ""]
        lines += [
            f"- {md_text(registry.get(c.metric).label)}: {c.step:+.1%} from night {c.night + 1} "
            f"({md_text(c.first_date)}), {c.nights_after} nights"
            for c in others
        ]
        lines.append("")
    metrics = [t.metric for t in outcome.run.scenario.thresholds]
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
            f"| {i} | {md_text(n.date)} | `{n.commit or 'n/a'}` | "
            + " | ".join(cells)
            + f" | {n.verdict} |"
        )
    sigma = ", ".join(
        f"{md_text(registry.get(m).label)} {s:.2%}"
        for m, s in outcome.detection.sigma.items()
        if math.isfinite(s)
    )
    rule = outcome.run.scenario.gate
    lines += [
        "",
        f"Rule: change points by PELT on the log ratios (penalty {rule.penalty:g} x sigma^2 x "
        f"log n, segments of at least {rule.min_segment} nights); a regression is the latest "
        f"change point, reaching tonight, at least {rule.min_nights} nights long, beyond the "
        f"metric's tolerance. Night-to-night sigma: {sigma or 'not yet estimable'}.",
        "",
        "---",
        "",
        "Tonight's comparison:",
        "",
        render_compare_markdown(outcome.run.to_json()),
    ]
    return "\n".join(lines)


def write_junit(path: Path, outcome: GateOutcome | None, doc: dict[str, Any], name: str) -> None:
    """One test case per gated metric (failed when it regressed: in the gate, by the
    history's rule; in a compare, by the run's verdict) and per kernel assertion."""
    suite = ET.Element("testsuite", name=f"perfgate {name}")
    regressed = {c.metric: c for c in outcome.detection.regressed} if outcome else {}
    cases = 0
    failures = 0
    for row in doc.get("comparison") or []:
        case = ET.SubElement(suite, "testcase", classname="perfgate.metric", name=row["metric"])
        cases += 1
        change = f"{_pct(row['estimate'])} ({_pct(row['low'])} to {_pct(row['high'])})"
        if outcome is not None:
            c = regressed.get(row["metric"])
            if c is not None:
                failures += 1
                ET.SubElement(case, "failure", message=(
                    f"{c.step:+.1%} from night {c.night + 1} ({c.first_date}), persisting "
                    f"{c.nights_after} nights; bisect {c.commits[0]}..{c.commits[1]}"
                ))  # fmt: skip
            elif row["verdict"] in ("inconclusive", "regressed", "invalid"):
                ET.SubElement(case, "system-out").text = f"tonight {row['verdict']}: {change}"
        elif row["verdict"] in ("regressed", "invalid"):
            failures += 1
            ET.SubElement(case, "failure", message=f"{row['verdict']}: {change}")
        elif row["verdict"] == "inconclusive":
            ET.SubElement(case, "skipped", message=f"inconclusive: {change}")
    by: dict[str, list[dict[str, Any]]] = {}  # one case per assertion, over every window
    for check in (doc.get("profile") or {}).get("checks") or []:
        by.setdefault(f"{check['arm']} {check['kind']} {check['pattern']}", []).append(check)
    for label, checks in by.items():
        case = ET.SubElement(suite, "testcase", classname="perfgate.kernel", name=label)
        cases += 1
        failed = [c for c in checks if not c["ok"]]
        if failed:
            failures += 1
            ET.SubElement(case, "failure", message=failed[0]["message"])
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
