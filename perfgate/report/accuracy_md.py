"""The accuracy section of a report: each arm's GPQA accuracy and the paired verdict, and the
questions the arms answered differently."""

from __future__ import annotations

import math
from typing import Any

from perfgate.documents.compare import INCONCLUSIVE, AccuracyComparison
from perfgate.documents.eval import ArmAccuracy
from perfgate.report.mdtext import fmt, md_text


def _pp(v: Any) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v * 100:+.1f} pp"


def _acc(v: Any) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v * 100:.1f}%"


def render_accuracy_section(
    given: dict[str, ArmAccuracy], c: AccuracyComparison | None
) -> list[str]:
    """The accuracy table: each arm's score and CI, the paired difference, p, verdict."""
    if not given:
        return []
    # baseline first, whichever arm's accuracy ran first
    arms = {n: given[n] for n in sorted(given, key=lambda n: (n != "baseline", n))}
    first = next(iter(arms.values()))
    lines = ["**Accuracy** (GPQA via lm-eval, " + md_text(first.source) + ")", ""]
    if c is None:
        lines += ["| arm | accuracy | questions x k |", "|---|---:|---:|"]
        for name, a in arms.items():
            cells = [x for row in a.correct for x in row]
            score = sum(cells) / len(cells) if cells else None
            lines.append(f"| {md_text(name)} | {_acc(score)} | {len(a.correct)} x {a.k} |")
        return [*lines, ""]
    verdict = c.verdict
    if verdict == INCONCLUSIVE and c.k_to_decide:
        verdict += f" (~k = {c.k_to_decide} to decide)"
    elif verdict == INCONCLUSIVE and c.questions_to_decide:
        # at temperature 0 the k evaluations are replicas: only more questions decide
        verdict += f" (~{c.questions_to_decide} questions to decide)"
    lines += [
        f"| | baseline | candidate | change ({c.confidence:.0%} CI) "
        "| p (drop > tolerance) | tolerance | verdict |",
        "|---|---:|---:|---:|---:|---:|---|",
        f"| accuracy | {_acc(c.baseline)} ({_acc(c.baseline_low)}-"
        f"{_acc(c.baseline_high)}) | {_acc(c.candidate)} ({_acc(c.candidate_low)}-"
        f"{_acc(c.candidate_high)}) | {_pp(c.diff)} ({_pp(c.diff_low)} to "
        f"{_pp(c.diff_high)}) | {fmt(c.p_margin, '{:.3f}')} | -{c.max_drop * 100:.1f} pp "
        f"| {verdict} |",
        "",
        f"{c.n_questions} questions x k = {c.k_baseline} (baseline) / "
        f"{c.k_candidate} (candidate), paired by question; regressed only when the drop "
        "is significantly larger than the tolerance (paired t against the margin); without "
        f"a margin: {c.test}, p = {fmt(c.p_value, '{:.3f}')}. Smallest drop this "
        f"run detects (5% one-sided, 80% power): {c.min_detectable_drop * 100:.1f} pp. "
        + (
            f"Adjusted ({c.adjusted_by}): p = {fmt(c.p_adjusted, '{:.3f}')}. "
            if c.p_adjusted is not None and math.isfinite(c.p_adjusted)
            else ""
        )
        + "Replies with no extractable answer: "
        + ", ".join(f"{name} {a.no_answer}" for name, a in arms.items())
        + ".",
        "",
    ]
    return lines + _per_question(arms)


def _answers(arm: ArmAccuracy) -> dict[str, list[str]]:
    """question -> the extracted letter of each repeat, in order ("-": none), from its samples."""
    out: dict[str, dict[int, str]] = {}
    for s in arm.samples or []:
        letter = str(s.get("answer") or "").strip("()")
        out.setdefault(str(s["question"]), {})[int(s["repeat"])] = (
            letter if len(letter) == 1 else "-"
        )
    return {q: [byrep[r] for r in sorted(byrep)] for q, byrep in out.items()}


def _per_question(arms: dict[str, ArmAccuracy], most: int = 10) -> list[str]:
    """The paired comparison question by question: how many questions the candidate answered
    better, worse or the same (share of its k replies right), and the most changed ones with
    every reply's extracted letter."""
    b, c = arms.get("baseline"), arms.get("candidate")
    if not b or not c or b.questions != c.questions or not b.questions:
        return []
    rows = []
    for q, rb, rc in zip(b.questions, b.correct, c.correct, strict=True):
        if rb and rc:
            rows.append((sum(rc) / len(rc) - sum(rb) / len(rb), q, rb, rc))
    worse = sum(r[0] < 0 for r in rows)
    better = sum(r[0] > 0 for r in rows)
    lines = [
        f"Per question (paired): the candidate did worse on {worse}, better on {better} and "
        f"the same on {len(rows) - worse - better} of {len(rows)} questions.",
        "",
    ]
    changed = sorted((r for r in rows if r[0] != 0), key=lambda r: (r[0], r[1]))[:most]
    if not changed:
        return lines
    answers = {"baseline": _answers(b), "candidate": _answers(c)}
    targets = {str(s["question"]): str(s.get("target") or "").strip("()") for s in b.samples or []}
    lines += [
        f"Most changed ({len(changed)} of {worse + better}; letters: each reply's extracted "
        "answer, - none):",
        "",
        "| question | correct | baseline right | candidate right | change | baseline answers "
        "| candidate answers |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for diff, q, rb, rc in changed:
        lines.append(
            f"| {md_text(q)} | {md_text(targets.get(q, '?'))} | {sum(rb)}/{len(rb)} "
            f"| {sum(rc)}/{len(rc)} | {_pp(diff)} | {' '.join(answers['baseline'].get(q, []))} "
            f"| {' '.join(answers['candidate'].get(q, []))} |"
        )
    return [*lines, ""]
