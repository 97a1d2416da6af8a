"""Where the noise of a compare run comes from, arm by arm: the between-start spread (the unit
perfgate's decision rule replicates) of end-to-end median TPOT, output throughput and device
time per decode step, and a descriptive decomposition of per-request TPOT into between-start,
between-wave (within a start) and within-wave spread.

A wave is one concurrency's worth of requests in send order (requests 0-7, 8-15, ... at
concurrency 8). Spreads are standard deviations of natural logs (about a coefficient of
variation); they are descriptive (not bias-corrected variance components).

    python benchmarks/gpu_noise.py docs/gpu/results/h200-aa-pinning.json.xz [...]

prints one Markdown table per file (docs/gpu.md quotes them).
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path
from typing import Any

from perfgate.decide.comparison import start_values
from perfgate.documents.io import read_json
from perfgate.documents.run import CompareRun
from perfgate.documents.spec import Threshold


def _sd_log(values: list[float]) -> float:
    logs = [math.log(v) for v in values if v > 0]
    return statistics.stdev(logs) if len(logs) > 1 else math.nan


def _pooled(groups: list[list[float]]) -> float:
    """Pooled SD of values around their group means (groups of two or more)."""
    ss, df = 0.0, 0
    for g in groups:
        if len(g) > 1:
            m = statistics.fmean(g)
            ss += sum((x - m) ** 2 for x in g)
            df += len(g) - 1
    return math.sqrt(ss / df) if df else math.nan


def tpot_layers(run: CompareRun, arm: str) -> dict[str, float]:
    """SD of log per-request TPOT: of start means, of wave means around their start's mean,
    of requests around their wave's mean."""
    concurrency = run.scenario.workload.max_concurrency or 1
    starts: dict[int, list[list[float]]] = {}
    for rep in run.repeats[arm]:
        ok = sorted((r for r in rep.records if r.ok and not r.warmup), key=lambda r: r.send_ns)
        waves: dict[int, list[float]] = {}
        for i, r in enumerate(ok):
            out = (r.output_tokens or 0) - 1
            first, last = r.first_token_ns, r.last_token_ns
            if out > 0 and first is not None and last is not None and last > first:
                waves.setdefault(i // concurrency, []).append(math.log((last - first) / out))
        starts.setdefault(rep.start or 0, []).extend(waves.values())
    start_means = [statistics.fmean([x for w in ws for x in w]) for ws in starts.values()]
    wave_groups = [[statistics.fmean(w) for w in ws] for ws in starts.values()]
    return {
        "between starts": statistics.stdev(start_means) if len(start_means) > 1 else math.nan,
        "between waves": _pooled(wave_groups),
        "within a wave": _pooled([w for ws in starts.values() for w in ws]),
    }


def arm_row(run: CompareRun, arm: str) -> dict[str, Any]:
    windows = [w.metrics for w in run.windows[arm]]
    per_start = {
        m: start_values(Threshold(m, 0.0), run.repeats[arm], windows)
        for m in ("median_tpot_ms", "output_throughput", "device_time_per_step_us")
    }
    steps = [
        (g.max_us - g.min_us) / g.median_us
        for w in run.windows[arm]
        for g in w.window.groups
        if g.kind == "decode" and g.tokens == w.window.batch
    ]
    pins = {
        "pinned" if (s.get("facts") or {}).get("pinning") else "unpinned" for s in run.servers[arm]
    }
    return {
        "arm": arm,
        "pinning": "/".join(sorted(pins)) or "n/a",
        "starts": len(per_start["median_tpot_ms"]),
        **{m: _sd_log(v) for m, v in per_start.items()},
        "step range": statistics.median(steps) if steps else math.nan,
        **tpot_layers(run, arm),
    }


def table(path: Path) -> list[str]:
    run = CompareRun.from_json(read_json(path))
    lines = [
        f"`{path.name}` ({run.scenario.name}):",
        "",
        "| arm | CPUs | starts | median TPOT | output tok/s | device time / step "
        "| steps in a window (max-min)/median | TPOT: between starts | between waves "
        "| within a wave |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm in ("baseline", "candidate"):
        r = arm_row(run, arm)
        cells = [
            r["median_tpot_ms"],
            r["output_throughput"],
            r["device_time_per_step_us"],
            r["step range"],
            r["between starts"],
            r["between waves"],
            r["within a wave"],
        ]
        lines.append(
            f"| {arm} | {r['pinning']} | {r['starts']} | "
            + " | ".join("n/a" if math.isnan(c) else f"{c:.2%}" for c in cells)
            + " |"
        )
    return [*lines, ""]


def main(paths: list[str]) -> None:
    print(
        "Between-start spread (SD of log per-start values, ~CV) per arm, and per-request "
        "TPOT's spread by layer.\n"
    )
    for p in paths:
        print("\n".join(table(Path(p))))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "results",
        nargs="*",
        help="compare results (results.json, .json.xz); default: docs/gpu/results/h200-*",
    )
    given = ap.parse_args().results
    main(given or [str(p) for p in sorted(Path("docs/gpu/results").glob("h200-*.json.xz"))])
