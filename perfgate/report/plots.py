"""Pictures beside report.md (PNG, matplotlib, no display needed): each gated metric's
per-start values by arm, per-arm latency CDFs and a per-request timeline for a compare run,
and a trend chart per gated metric for the nightly gate. Each function writes one file and
returns its name; report.md links what exists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from perfgate import formulas as metrics
from perfgate import registry
from perfgate.documents.io import replacing
from perfgate.documents.nightly import Detection, Night
from perfgate.documents.records import RequestRecord
from perfgate.documents.run import ARMS, CompareRun
from perfgate.report import headline

COLORS = {"baseline": "#1f77b4", "candidate": "#d62728"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> str:
    """Lay ``fig`` out, write it to ``path`` as PNG (whole or not at all), close it; the
    file's name."""
    fig.tight_layout()
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path.name
    return path.name


def latency_cdfs(run: CompareRun, out_dir: Path) -> str | None:
    """TTFT and TPOT, every measured request of every repeat, one curve per arm."""
    series: dict[str, dict[str, list[float]]] = {}
    for arm in ARMS:
        reqs = [r for rep in run.repeats[arm] for r in rep.records if r.ok and not r.warmup]
        series[arm] = {
            "TTFT (ms)": [v for r in reqs if (v := metrics.ttft_ms(r)) is not None],
            "TPOT (ms)": [v for r in reqs if (v := metrics.tpot_ms(r)) is not None],
        }
    if not any(v for s in series.values() for v in s.values()):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, name in zip(axes, ("TTFT (ms)", "TPOT (ms)"), strict=True):
        for arm, s in series.items():
            values = np.sort(np.asarray(s[name]))
            if values.size:
                ax.step(values, np.arange(1, values.size + 1) / values.size, where="post",
                        color=COLORS[arm], label=f"{arm} ({values.size} requests)")  # fmt: skip
        spread = [v for s in series.values() for v in s[name] if v > 0]
        if spread and max(spread) > 20 * min(spread):  # one outlier would crush the rest
            ax.set_xscale("log")
            name += ", log scale"
        ax.set_xlabel(name)
        ax.set_ylabel("share of requests")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Latency CDFs, every measured request")
    return _save(plt, fig, out_dir / "latency-cdf.png")


def timeline(run: CompareRun, out_dir: Path, most: int = 64) -> str | None:
    """Each arm's first repeat (its measured requests) in a compare run: ``timeline.png``."""
    firsts = {a: run.repeats[a][:1] for a in ARMS}
    arms = {
        a: [r for r in reps[0].records if not r.warmup][:most] for a, reps in firsts.items() if reps
    }
    panels = [(f"{arm}: first repeat", COLORS[arm], reqs) for arm, reqs in arms.items() if reqs]
    if not panels:
        return None
    name = "timeline.png"
    request_timeline(panels, out_dir / name, most)
    return name


def request_timeline(
    panels: Sequence[tuple[str, str, Sequence[RequestRecord]]], path: Path, most: int = 64
) -> None:
    """One panel per (title, color, requests), request by request: a line from send to end, a
    dot at the first token, a tick at every chunk, so waves, bursts and stalls show. At most
    ``most`` requests a panel (the first sent)."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.2 + 0.09 * most * len(panels)),
                             squeeze=False)  # fmt: skip
    for ax, (title, color, all_reqs) in zip(axes[:, 0], panels, strict=True):
        reqs = sorted(all_reqs, key=lambda r: r.send_ns)[:most]
        t0 = min(r.send_ns for r in reqs)
        for i, r in enumerate(reqs):
            end = r.end_ns or (r.chunk_ns[-1] if r.chunk_ns else r.send_ns)
            ax.plot([(r.send_ns - t0) / 1e9, (end - t0) / 1e9], [i, i], color="0.75", lw=1)
            chunks = [(c - t0) / 1e9 for c in r.chunk_ns]
            if chunks:
                ax.plot(chunks, [i] * len(chunks), "|", color=color, ms=4)
                ax.plot(chunks[0], i, "o", color="black", ms=2.5)
        ax.set_title(f"{title}, {len(reqs)} requests (dot: first token, tick: chunk)",
                     fontsize=9)  # fmt: skip
        ax.set_ylabel("request")
        ax.invert_yaxis()
        ax.grid(alpha=0.3, axis="x")
    axes[-1, 0].set_xlabel("seconds from the first send")
    _save(plt, fig, path)


def trend(
    nights: Sequence[Night], detection: Detection, metric: str, tolerance: float, out_dir: Path
) -> str | None:
    """The nightly ratios to the reference with each night's interval, the tolerance, and the
    change points (red: a regression under the rule)."""
    points = [(i, n.metrics[metric]) for i, n in enumerate(nights, 1) if metric in n.metrics]
    if not points:
        return None
    m = registry.get(metric)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.6))
    xs = [i for i, _ in points]
    ys = [p.ratio for _, p in points]  # on a log axis: a x20 step and 1% noise both show
    lo = [
        y - (1 + p.low if _finite(p.low) and p.low > -1 else y)
        for y, (_, p) in zip(ys, points, strict=True)
    ]
    hi = [(1 + p.high if _finite(p.high) else y) - y for y, (_, p) in zip(ys, points, strict=True)]
    ax.errorbar(xs, ys, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], fmt="o-", ms=4,
                color="#333333", ecolor="#999999", capsize=2, lw=1)  # fmt: skip
    ax.set_yscale("log")
    bad = 1 - tolerance if m.higher_is_better else 1 + tolerance
    ax.axhline(bad, color="#d62728", ls="--", lw=1, label=f"tolerance ({tolerance:.1%})")
    ax.axhline(1, color="0.6", lw=0.8)
    for c in detection.changes:
        if c.metric == metric:
            label = f"change point {c.step:+.1%}" + (" (regression)" if c.regressed else "")
            color = "#d62728" if c.regressed else "#ff7f0e"
            ax.axvline(c.night + 0.5, color=color, lw=1.5, label=label)
    ax.set_xlabel("night")
    ax.set_ylabel("ratio to the reference (log)")
    ax.set_title(f"{m.label}: nightly ratio to the reference, with each night's interval")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _save(plt, fig, out_dir / f"trend-{metric}.png")


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def start_strips(run: CompareRun, out_dir: Path) -> str | None:
    """What decided the verdict: each gated metric's per-start values (the unit the decision
    rule replicates), one column of points per arm, each arm's geometric mean as a bar, and
    the row's verdict and change with its interval in the panel's title."""
    rows = [
        r
        for r in run.comparison
        if r.values_baseline
        and r.values_candidate
        and all(_finite(v) and v > 0 for v in (*r.values_baseline, *r.values_candidate))
    ]
    if not rows:
        return None
    plt = _pyplot()
    cols = min(len(rows), 3)
    lines = math.ceil(len(rows) / cols)
    fig, axes = plt.subplots(lines, cols, figsize=(3.6 * cols, 3.2 * lines), squeeze=False)
    for ax, row in zip(axes.flat, rows, strict=False):
        for x, (arm, values) in enumerate(
            (("baseline", row.values_baseline), ("candidate", row.values_candidate))
        ):
            n = len(values)
            offsets = [(i - (n - 1) / 2) * min(0.5 / n, 0.08) for i in range(n)]
            ax.scatter([x + o for o in offsets], values, color=COLORS[arm], s=22, zorder=3)
            mean = math.exp(sum(math.log(v) for v in values) / n)
            ax.hlines(mean, x - 0.25, x + 0.25, color=COLORS[arm], linewidth=2)
        ax.set_xticks([0, 1], [f"baseline\n({len(row.values_baseline)} starts)",
                               f"candidate\n({len(row.values_candidate)} starts)"])  # fmt: skip
        ax.set_xlim(-0.6, 1.6)
        ax.set_title(f"{row.label}\n{row.verdict}: {headline.change(row)}", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(rows) :]:
        ax.set_visible(False)
    fig.suptitle("Per-start values of each gated metric (bars: each arm's geometric mean)")
    return _save(plt, fig, out_dir / "per-start.png")


def compare_plots(run: CompareRun, out_dir: Path) -> list[str]:
    """The pictures of a compare run; [] without matplotlib (perfgate's own dependency, so only
    in a partial install)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return []
    drawn = (start_strips(run, out_dir), latency_cdfs(run, out_dir), timeline(run, out_dir))
    return [n for n in drawn if n]
