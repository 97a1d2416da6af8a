"""report.md: a compare result as a Markdown section to paste into a pull request.

A pure function of the result document (``results.json``), so ``perfgate report`` renders a
stored run exactly as the run itself did. Everything a user or a server supplied (names,
descriptions, commands, errors, kernel names, versions) goes in escaped as text or fenced as
code, so it can neither break the layout nor smuggle markup or HTML into a pull request.
"""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path
from typing import Any

from perfgate import registry
from perfgate.decide import family
from perfgate.decide.comparison import group_by_start
from perfgate.documents.compare import MetricComparison
from perfgate.documents.io import from_fields
from perfgate.documents.kernels import KernelTable, short_name
from perfgate.documents.spec import Budget
from perfgate.profiling import diff_tables

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


def md_text(value: Any) -> str:
    """Literal inline Markdown text: one line, emphasis/link/table/HTML characters escaped."""
    text = " ".join(str(value).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_\[\]|~])", r"\\\1", text)


def md_code(value: Any, *, in_table: bool = True) -> str:
    """Inline code that holds any text: a fence longer than any run of backticks inside, one
    line, and (in a table cell) '|' escaped, which would otherwise end the cell."""
    text = " ".join(str(value).split())
    if in_table:
        text = text.replace("|", "\\|")
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_block(text: str) -> list[str]:
    """A fenced code block whose fence no line of ``text`` can close."""
    fence = "`" * max(3, max((len(m) for m in re.findall(r"`{3,}", text)), default=0) + 1)
    return [fence, text, fence]


def _fmt(v: Any, fmt: str = "{:.2f}") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return fmt.format(v)


def _pct(v: float | None) -> str:
    if v is None or math.isnan(v):  # JSON holds an unbounded interval end as null
        return "n/a"
    if not math.isfinite(v):
        return "∞" if v > 0 else "-∞"
    return f"{v * 100:+.1f}%"


def _size(v: Any) -> str:
    """A relative size without sign (5.2%), or n/a."""
    if v is None or not isinstance(v, int | float) or not math.isfinite(v):
        return "n/a"
    return f"{v * 100:.1f}%"


def _median_over_repeats(repeats: list[dict[str, Any]], key: str) -> float | None:
    values = [r["metrics"].get(key) for r in repeats]
    values = [float(v) for v in values if v is not None]
    return statistics.median(values) if values else None


def _verdict_cell(row: dict[str, Any]) -> str:
    verdict = str(row["verdict"])
    if row.get("primary") is False:
        verdict += " (secondary)"
    if row["verdict"] != "inconclusive":
        return verdict
    reason = str(row.get("reason") or "")
    if reason.startswith("start-to-start variation unsampled"):
        return verdict + ": start-to-start variation unsampled"
    if reason.startswith("beyond the tolerance"):
        return verdict + ": beyond the tolerance, not significant after multiplicity (Holm)"
    n, low, high = (
        row.get(k) for k in ("starts_to_decide", "starts_to_decide_low", "starts_to_decide_high")
    )
    if n or high or low:
        span = f"{low or '?'}-{high or '>10000'}"
        return f"{verdict} (~{n or '>10000'} starts/arm to decide, range {span})"
    if row.get("repeats_to_decide"):  # a result file of an earlier perfgate
        unit = row.get("unit") or "repeat"
        return f"{verdict} (~{row['repeats_to_decide']} {unit}s/arm to decide)"
    return verdict


def start_charts(rows: list[dict[str, Any]]) -> list[str]:
    """What decided the verdict, drawn where GitHub draws it (a PR comment cannot show the PNGs
    beside report.md): each gated metric's per-start values, baseline starts then candidate
    starts, as a Mermaid bar chart, in a collapsed section. Rows of a stored run that did not
    record their values draw nothing."""
    charts = []
    for r in rows:
        b, c = r.get("values_baseline") or [], r.get("values_candidate") or []
        values = [v for v in (*b, *c) if isinstance(v, int | float) and math.isfinite(v)]
        if len(values) != len(b) + len(c) or not b or not c:
            continue
        low, high = min(values), max(values)
        pad = (high - low) * 0.1 or abs(high) * 0.01 or 1.0
        labels = [f"B{i}" for i in range(1, len(b) + 1)] + [f"C{i}" for i in range(1, len(c) + 1)]
        title = f"{r['label']} per server start: B baseline, C candidate ({r['verdict']})"
        charts += [
            "```mermaid",
            "xychart-beta",
            f'    title "{title.replace(chr(34), chr(39))}"',
            f"    x-axis [{', '.join(labels)}]",
            f"    y-axis {_g(low - pad)} --> {_g(high + pad)}",
            f"    bar [{', '.join(_g(v) for v in values)}]",
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


def _g(v: float) -> str:
    return f"{v:.6g}"


def _unverified_guards(doc: dict[str, Any]) -> list[str]:
    """The guards that made a complete run inconclusive while every primary metric and
    accuracy was decided (``family.unverified_guards`` over the stored rows)."""
    rows = [from_fields(MetricComparison, r, "comparison") for r in doc.get("comparison") or []]
    accuracy = (((doc.get("accuracy") or {}).get("comparison")) or {}).get("verdict")
    if doc.get("verdict") != "inconclusive" or accuracy == "inconclusive":
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


def _interval_confidence(doc: dict[str, Any]) -> float:
    """The confidence of the timed metrics' intervals: the scenario's, or above it when the
    final look of a budget spent only part of alpha."""
    share = float((doc.get("design") or {}).get("share") or 1.0)
    return 1 - (1 - doc["scenario"]["confidence"]) * share


def _design_note(doc: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """How the run was designed and judged: starts, order, looks, alpha, multiplicity."""
    arms = doc["arms"]
    starts = {
        a: len(group_by_start([r.get("start") for r in arms[a]["repeats"]]))
        for a in ("baseline", "candidate")
    }
    design = doc.get("design") or {}
    alpha = 1 - _interval_confidence(doc)
    text = (
        f"Unit of replication: the server start ({starts['baseline']} baseline, "
        f"{starts['candidate']} candidate); each metric is one value per start (repeats on a "
        "start pooled), compared with Welch's t on the log scale."
    )
    if design.get("seed") is not None:
        text += f" Rounds in random balanced order, seed {design['seed']}."
    looks = design.get("looks") or []
    if design.get("budget"):
        text += (
            f" Budget: {Budget(**design['budget'])}; {len(looks)} look(s), stopping when "
            f"decided; this analysis spends {float(design.get('share') or 1.0):.0%} of alpha "
            f"({_interim_split(design)}), so its intervals are at {1 - alpha:.1%} confidence."
        )
    tests = len(rows) + (1 if (doc.get("accuracy") or {}).get("comparison") else 0)
    text += (
        f" Gate: regressed only when Holm's procedure over the {tests} gated test(s) rejects "
        f'"worse by at most the tolerance" at alpha {alpha:.3g} (family-wise false-fail '
        f"at most {alpha:.1%})."
    )
    lines = [text, ""]
    if min(starts.values()) < 2 and any(not r.get("starts_sampled", True) for r in rows):
        lines += [
            "⚠️ Start-to-start variation is not sampled: an arm ran on a single server start. "
            "Starts of one build differed by ~9% in median TPOT on an H200, so no speed "
            "verdict is given; give each arm two or more starts (`--starts`, `--budget`), or "
            "a calibrated `start_noise` from stored A/A runs.",
            "",
        ]
    return lines


def render_compare_markdown(doc: dict[str, Any]) -> str:
    sc = doc["scenario"]
    arms = doc["arms"]
    status = doc["status"]
    reps = {a: len(arms[a]["repeats"]) for a in ("baseline", "candidate")}
    lines = [f"## perfgate: {md_text(sc['name'])}", ""]
    if status == "complete":
        head = VERDICT_LINE.get(doc["verdict"], str(doc["verdict"]))
        if guards := _unverified_guards(doc):
            head = (
                "⚠️ **inconclusive: guards unverified**: the primary metrics are decided, but "
                f"{', '.join(guards)} could still hide a regression beyond the tolerance"
            )
    else:
        head = STATUS_LINE.get(status, status)
    lines.append(
        f"{head} (exit {doc['exit_code']}). {md_text(sc.get('description') or '')}".rstrip()
    )
    if doc.get("recomputed"):
        was = doc["recomputed"]
        lines += [
            "",
            f"Comparison recomputed from the stored repeats by perfgate "
            f"{was['perfgate_version']}'s statistics; the run itself reported "
            f"**{was['verdict']}** (exit {was['exit_code']}).",
        ]
    if doc.get("error"):
        error = str(doc["error"]).strip()
        if len(error) > 3000:  # the head names the cause; the full text is in results.json
            error = error[:3000] + "\n... (full text in results.json)"
        lines += ["", *md_block(error)]
    lines.append("")
    w = sc["workload"]
    lines.append(
        f"Workload: {w['num_prompts']} prompts x {reps['baseline']} + {reps['candidate']} "
        f"repeats (baseline + candidate), {w['input_len']} in / "
        f"{w['output_len']} out, concurrency {w['max_concurrency']}, endpoint "
        f"`{w['endpoint']}`. Intervals: {_interval_confidence(doc):.1%} confidence."
    )
    lines.append("")

    rows = doc.get("comparison") or []
    if rows:
        lines += [
            "| metric | baseline | candidate | change (CI) | detectable | noise (CV) "
            "| tolerance | verdict |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in rows:
            better = "higher" if r["higher_is_better"] else "lower"
            change = (
                f"{_pct(r['estimate'])} ({_pct(r['low'])} to {_pct(r['high'])})"
                if r["estimate"] is not None and math.isfinite(r["estimate"])
                else "n/a"
            )
            lines.append(
                f"| {r['label']} | {_fmt(r['baseline'])} | {_fmt(r['candidate'])} | {change} "
                f"| {_size(r.get('min_detectable'))} | {_size(r.get('cv_between_units'))} "
                f"| {r['tolerance'] * 100:g}% ({better} is better) | {_verdict_cell(r)} |"
            )
        lines += [
            "",
            "detectable: the smallest change this run would have caught (80% power); noise: "
            "how much a server start's value spreads between starts, about a coefficient of "
            "variation. A tolerance below the detectable change cannot be decided at this "
            "noise with this many starts; the plan (starts/arm to decide, at 90% power) is "
            "given at the noise seen and over that noise's 80% interval.",
        ]
        lines.append("")
        lines += _design_note(doc, rows)

    lines += start_charts(rows)
    if doc.get("plots"):
        lines += [
            "Pictures: " + ", ".join(f"[{Path(p).stem}]({p})" for p in doc["plots"]),
            "",
        ]
    lines += render_accuracy_section(doc.get("accuracy") or {})

    lines += render_profile_section(
        doc.get("profile") or {},
        top=(sc.get("profile") or {}).get("top", 10),
        tpot=next((r for r in rows if r["metric"] == "median_tpot_ms"), None),
    )

    if any(arms[a]["repeats"] for a in arms):
        lines += [
            "<details><summary>Serving benchmark, side by side (median over repeats)</summary>",
            "",
            "| | baseline | candidate |",
            "|---|---:|---:|",
        ]
        for key in registry.SERVING_TABLE:
            m = registry.get(key)
            b = _median_over_repeats(arms["baseline"]["repeats"], key)
            c = _median_over_repeats(arms["candidate"]["repeats"], key)
            lines.append(f"| {m.label} | {_fmt(b, m.fmt)} | {_fmt(c, m.fmt)} |")
        lines += ["", "</details>", ""]

    warnings = sorted(
        {
            f"{a}: {w['message']}"
            for a in arms
            for rep in arms[a]["repeats"]
            for w in rep.get("warnings") or []
        }
    )
    if warnings:
        lines += ["<details><summary>Warnings</summary>", ""]
        lines += [f"- {md_text(w)}" for w in warnings]
        lines += ["", "</details>", ""]

    lines += ["<details><summary>Environment</summary>", ""]
    lines += ["| | baseline | candidate |", "|---|---|---|"]
    env_rows = [
        ("vLLM version", lambda a: _first(arms[a]["repeats"], "server", "version")),
        ("model", lambda a: _first(arms[a]["repeats"], "server", "model")),
        ("launch", lambda a: _launch(arms[a])),
    ]
    for label, fn in env_rows:
        lines.append(f"| {label} | {fn('baseline')} | {fn('candidate')} |")
    starts = render_starts(arms)
    if starts:
        lines += ["", "Server starts (the GPU sampled by nvidia-smi during the timed repeats):"]
        lines += ["", *starts[:-1]]
    env = doc.get("environment") or {}
    gpus = env.get("gpus")
    gpu_text = (
        ", ".join(f"{g.get('name')} (driver {g.get('driver_version')})" for g in gpus)
        if gpus
        else "none (CPU)"
    )
    lines += [
        "",
        f"Host {md_code(env.get('hostname'), in_table=False)}, {md_text(env.get('platform'))}, "
        f"Python {md_text(env.get('python'))}, GPUs: {md_text(gpu_text)}, perfgate "
        f"{md_text(env.get('perfgate_version'))}.",
        "",
        "</details>",
        "",
        "Reproduce:",
        "",
        *md_block(str(doc["command"])),
        "",
    ]
    return "\n".join(lines)


def _pp(v: Any) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v * 100:+.1f} pp"


def _acc(v: Any) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v * 100:.1f}%"


def render_accuracy_section(acc: dict[str, Any]) -> list[str]:
    """The accuracy table: each arm's score and CI, the paired difference, p, verdict."""
    given = acc.get("arms") or {}
    if not given:
        return []
    # baseline first, whichever arm's accuracy ran first
    arms = {n: given[n] for n in sorted(given, key=lambda n: (n != "baseline", n))}
    c = acc.get("comparison")
    first = next(iter(arms.values()))
    lines = ["**Accuracy** (GPQA via lm-eval, " + md_text(first.get("source")) + ")", ""]
    if c is None:
        lines += ["| arm | accuracy | questions x k |", "|---|---:|---:|"]
        for name, a in arms.items():
            cells = [x for row in a["correct"] for x in row]
            score = sum(cells) / len(cells) if cells else None
            lines.append(f"| {md_text(name)} | {_acc(score)} | {len(a['correct'])} x {a['k']} |")
        return [*lines, ""]
    verdict = c["verdict"]
    if verdict == "inconclusive" and c.get("k_to_decide"):
        verdict += f" (~k = {c['k_to_decide']} to decide)"
    elif verdict == "inconclusive" and c.get("questions_to_decide"):
        # at temperature 0 the k evaluations are replicas: only more questions decide
        verdict += f" (~{c['questions_to_decide']} questions to decide)"
    p_margin = c.get("p_margin")
    lines += [
        f"| | baseline | candidate | change ({c.get('confidence', 0.95):.0%} CI) "
        "| p (drop > tolerance) | tolerance | verdict |",
        "|---|---:|---:|---:|---:|---:|---|",
        f"| accuracy | {_acc(c['baseline'])} ({_acc(c['baseline_low'])}-"
        f"{_acc(c['baseline_high'])}) | {_acc(c['candidate'])} ({_acc(c['candidate_low'])}-"
        f"{_acc(c['candidate_high'])}) | {_pp(c['diff'])} ({_pp(c['diff_low'])} to "
        f"{_pp(c['diff_high'])}) | {_fmt(p_margin, '{:.3f}')} | -{c['max_drop'] * 100:.1f} pp "
        f"| {verdict} |",
        "",
        f"{c['n_questions']} questions x k = {c['k_baseline']} (baseline) / "
        f"{c['k_candidate']} (candidate), paired by question; regressed only when the drop "
        "is significantly larger than the tolerance (paired t against the margin); without "
        f"a margin: {c['test']}, p = {_fmt(c['p_value'], '{:.3f}')}. Smallest drop this "
        f"run detects (5% one-sided, 80% power): {c['min_detectable_drop'] * 100:.1f} pp. "
        + (
            f"Holm-adjusted over the run's gated tests: p = {_fmt(c['p_adjusted'], '{:.3f}')}. "
            if c.get("p_adjusted") is not None and math.isfinite(c["p_adjusted"])
            else ""
        )
        + "Replies with no extractable answer: "
        + ", ".join(f"{name} {a.get('no_answer', 0)}" for name, a in arms.items())
        + ".",
        "",
    ]
    return lines + _per_question(arms)


def _answers(arm: dict[str, Any]) -> dict[str, list[str]]:
    """question -> the extracted letter of each repeat, in order ("-": none), from its samples."""
    out: dict[str, dict[int, str]] = {}
    for s in arm.get("samples") or []:
        letter = str(s.get("answer") or "").strip("()")
        out.setdefault(str(s["question"]), {})[int(s["repeat"])] = (
            letter if len(letter) == 1 else "-"
        )
    return {q: [byrep[r] for r in sorted(byrep)] for q, byrep in out.items()}


def _per_question(arms: dict[str, Any], most: int = 10) -> list[str]:
    """The paired comparison question by question: how many questions the candidate answered
    better, worse or the same (share of its k replies right), and the most changed ones with
    every reply's extracted letter."""
    b, c = arms.get("baseline"), arms.get("candidate")
    if not b or not c or b.get("questions") != c.get("questions") or not b.get("questions"):
        return []
    rows = []
    for q, rb, rc in zip(b["questions"], b["correct"], c["correct"], strict=True):
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
    targets = {
        str(s["question"]): str(s.get("target") or "").strip("()") for s in b.get("samples") or []
    }
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
            f"| {g.kind} | {g.tokens} | {g.steps} | {g.median_us:.1f} | {g.min_us:.1f}-"
            f"{g.max_us:.1f} | {g.per_token_us:.1f} | {g.launches:g} |"
        )
    if not groups:
        lines.append("| (no engine step annotations in this trace) | | | | | | |")
    return [*lines, ""]


def render_kernel_table(table: dict[str, Any], top: int, title: str = "") -> list[str]:
    what = "GPU kernel" if table["source"] == "kernel" else "CPU operator (self time)"
    lines = [title] if title else []
    graphs = table.get("graph_launches") or 0
    lines += [
        f"{len(table['rows'])} distinct names ({what}), {table['total_us'] / 1000:.2f} ms in all"
        + (f", {graphs} CUDA graph launches" if graphs else "")
        + ".",
        "",
        f"| {what} | calls | total (ms) | mean (us) | share |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in table["rows"][:top]:
        lines.append(
            f"| {md_code(short_name(r['name']))} | {r['calls']} | {r['total_us'] / 1000:.3f} "
            f"| {r['mean_us']:.1f} | {r['share']:.1%} |"
        )
    return [*lines, ""]


def render_kernel_diff(base: KernelTable, cand: KernelTable, top: int) -> list[str]:
    lines = [
        "| kernel | baseline calls | baseline (ms) | candidate calls | candidate (ms) | change |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in diff_tables(base, cand, top=top):
        lines.append(
            f"| {md_code(short_name(r.name))} | {r.baseline_calls} | {r.baseline_us / 1000:.3f} | "
            f"{r.candidate_calls} | {r.candidate_us / 1000:.3f} | {r.change} |"
        )
    return [*lines, ""]


def _us(v: Any, signed: bool = False) -> str:
    if v is None or not math.isfinite(v):
        return "n/a" if v is None or v != v else ("+inf" if v > 0 else "-inf")
    return f"{v:+.2f}" if signed else f"{v:.2f}"


def render_windows(windows: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Each start's profiled-window figures, arm by arm."""
    lines = [
        "| arm | start | decode steps | time / step (us) | per token (us) | launches / step "
        "| graph replays / step | other steps (kind x batch: steps) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for arm in ("baseline", "candidate"):
        for w in windows.get(arm) or []:
            others = ", ".join(
                f"{g['kind']} x {g['tokens']}: {g['steps']}"
                for g in w.get("groups") or []
                if not (g["kind"] == "decode" and g["tokens"] == w["batch"])
            )
            lines.append(
                f"| {arm} | {w['start'] + 1} | {w['decode_steps']} | "
                f"{_us(w.get('time_per_step_us'))} | {_us(w.get('time_per_token_us'))} | "
                f"{_fmt(w.get('launches_per_step'), '{:.0f}')} | "
                f"{_fmt(w.get('graph_replays_per_step'), '{:.0f}')} | {others or '-'} |"
            )
    return [*lines, ""]


def render_kernel_changes(k: dict[str, Any], tpot: dict[str, Any] | None) -> list[str]:
    """The kernel-level A/B table: what changed per decode step, with intervals across
    starts, and how much of the step's change it explains, beside the end-to-end change."""
    what = "kernel" if k["source"] == "kernel" else "CPU operator"
    if k.get("problem"):
        return [f"No kernel-level comparison: {md_text(k['problem'])}.", ""]
    conf = f"{k['confidence']:.0%}"
    lines = [
        f"**{what[0].upper() + what[1:]} changes per decode step** (batch {k['batch']}; "
        f"{k['starts'][0]} + {k['starts'][1]} starts; mean over starts, {conf} interval of "
        "the change across starts)",
        "",
    ]
    rows = k.get("rows") or []
    if rows:
        lines += [
            f"| {what} | change | us / call | calls / step | us / step | change / step (CI) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {md_code(short_name(r['name'], 70))} | {r['change']} | "
                f"{_us(r['baseline_us_per_call'])} -> {_us(r['candidate_us_per_call'])} | "
                f"{r['baseline_calls_per_step']:.1f} -> {r['candidate_calls_per_step']:.1f} | "
                f"{_us(r['baseline_us_per_step'])} -> {_us(r['candidate_us_per_step'])} | "
                f"{_us(r['diff_us_per_step'], True)} ({_us(r['low'], True)} to "
                f"{_us(r['high'], True)}) |"
            )
        lines.append("")
    else:
        lines += [f"No {what} appeared, disappeared or changed beyond 0.5% of a step.", ""]
    step = (
        f"Time per decode step (the kernels' sum): {_us(k['baseline_step_us'])} -> "
        f"{_us(k['candidate_step_us'])} us, {_us(k['step_diff_us'], True)} us "
        f"({_us(k['step_low'], True)} to {_us(k['step_high'], True)}); the {len(rows)} listed "
        f"account for {_us(k['listed_diff_us'], True)} us, smaller changes elsewhere for "
        f"{_us(k['step_diff_us'] - k['listed_diff_us'], True)} us."
    )
    if tpot is not None:
        step += (
            f" End to end, {tpot['label']}: {_pct(tpot['estimate'])} "
            f"({_pct(tpot['low'])} to {_pct(tpot['high'])})."
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
        lines.append(f"| {arm} | {kind} ({need} calls) | {md_code(pattern)} | {calls} | {mark} |")
    return [*lines, ""]


def render_profile_section(
    profile: dict[str, Any], top: int = 10, tpot: dict[str, Any] | None = None
) -> list[str]:
    arms = profile.get("arms") or {}
    checks = profile.get("checks") or []
    windows = profile.get("windows") or {}
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
            *render_windows(windows),
        ]
    else:  # results from before per-start windows: one profiled start per arm
        lines += [
            "**Kernel profile** (a separate, profiled server start per arm; its timings are "
            "not used)",
            "",
        ]
    if profile.get("kernels"):
        lines += render_kernel_changes(profile["kernels"], tpot)
    if checks:
        lines += render_checks(checks)
    if "baseline" in arms and "candidate" in arms:
        lines += [
            "<details><summary>Largest differences in the first window's totals</summary>",
            "",
        ]
        lines += render_kernel_diff(
            KernelTable.from_json(arms["baseline"]), KernelTable.from_json(arms["candidate"]), top
        )
        lines += ["</details>", ""]
    for name, table in arms.items():
        lines += [f"<details><summary>Top {top}: {name} (first window)</summary>", ""]
        lines += render_kernel_table(table, top)
        lines += ["</details>", ""]
    return lines


def render_starts(arms: dict[str, Any]) -> list[str]:
    """Where each server start ran and the state of the host and GPU during its repeats."""
    lines = [
        "| arm | start | startup (s) | compile cache | pinned (engine / API / client) "
        "| GPU SM MHz (min-max) | clock events | max temp (C) | power (W) |",
        "|---|---:|---:|---|---|---|---|---:|---:|",
    ]
    seen = False
    for arm in ("baseline", "candidate"):
        for i, srv in enumerate(arms[arm].get("servers") or []):
            facts = srv.get("facts")
            if not facts:
                continue
            seen = True
            pin = facts.get("pinning")
            pinned = f"{pin['engine']} / {pin['api_server']} / {pin['client']}" if pin else "no"
            gpus = [g for d in srv.get("during_repeats") or [] for g in d.get("gpu") or []]
            sm = [v for g in gpus for v in (g.get("sm_mhz") or [])]
            reasons = sorted({g.get("clock_event_reasons") for g in gpus} - {None})
            temps = [g["max_temperature_c"] for g in gpus if g.get("max_temperature_c")]
            power = [g["median_power_w"] for g in gpus if g.get("median_power_w")]
            cold = facts.get("compile_cache_cold")
            lines.append(
                f"| {arm} | {i + 1} | {_fmt(srv.get('startup_s'), '{:.0f}')} | "
                f"{'shared' if cold is None else ('cold' if cold else 'warm')} | {pinned} | "
                f"{f'{min(sm):.0f}-{max(sm):.0f}' if sm else 'n/a'} | "
                f"{', '.join(reasons) or 'n/a'} | "
                f"{_fmt(max(temps) if temps else None, '{:.0f}')} | "
                f"{_fmt(statistics.median(power) if power else None, '{:.0f}')} |"
            )
    return [*lines, ""] if seen else []


def _first(repeats: list[dict[str, Any]], *path: str) -> str:
    for r in repeats:
        v: Any = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if v:
            return md_code(v)
    return "n/a"


def _launch(arm: dict[str, Any]) -> str:
    spec = arm["spec"]
    if spec.get("url"):
        return f"running server {md_code(spec['url'])}"
    servers = arm.get("servers") or []
    if servers:
        argv = " ".join(servers[0]["argv"])
        env = " ".join(f"{k}={v}" for k, v in (servers[0].get("env") or {}).items())
        return md_code((env + " " + argv).strip())
    return "not started"
