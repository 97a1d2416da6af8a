"""The nightly gate simulated as it runs: night by night, every night's exit counted.

Each simulated night is what ``perfgate gate`` records: tonight's geometric mean over its
``--starts`` server starts against the stored baseline's ``--baseline-starts``, as a log ratio,
with the standard error and degrees of freedom of tonight's own comparison. Its noise:

- each start's value spreads by the per-start CV (the metric's measured start-to-start noise);
- each night may carry a **day effect** (a shift shared by that night's starts), and the day
  the baseline was recorded carries one too, shared by every night compared with it;
- tonight's comparison sees only the start noise (its standard error is estimated from the
  starts, with their degrees of freedom): the day effects are what the history's
  night-to-night sigma has to absorb.

The gate's own code decides each night (``perfgate.history.detect`` and
``perfgate.decide.nightly.decide_night``): exit 1 regressed, 3 pending, 0 pass. Per row:

- **A/A**: histories of ``--nights`` nights of one build: exit 1 and exit 3 per night, and the
  share of histories with any exit 1 or any exit 3;
- **steps** of +2%, +5% and +10% from night 21: the share of histories failed (exit 1) within 3
  nights of the step, and the median nights to the first exit 1 (counting the step's first
  night as 1);
- **creep** of +0.15% a night from night 1: the median level (the true change) at the first
  exit 1.

The metrics, with the noise measured at gpt-oss-120b's shape on an H100 (docs/gpu.md): GPU
time per decode step (0.3% per start, tolerance 0.6%), median TPOT (0.03%, tolerance 0.5%),
output throughput (7.5%, tolerance 15%); and end-to-end TPOT at the 2-layer toy's 9% per start
with a 2% tolerance, where gating nightly is meaningless and the gate warns before it runs.

    python benchmarks/nightly_changepoints.py [--runs 200] [--nights 50] [--starts 3]
"""

from __future__ import annotations

import argparse
import math
import statistics

import numpy as np

from perfgate.decide.nightly import decide_night
from perfgate.documents.nightly import Night, NightMetric
from perfgate.documents.spec import ChangeRule
from perfgate.history import detect

# (name, per-start CV, tolerance, higher is better)
METRICS = (
    ("GPU time per decode step", 0.003, 0.006, False),
    ("median TPOT (36 layers)", 0.0003, 0.005, False),
    ("output throughput", 0.075, 0.15, True),
    ("median TPOT (2-layer toy)", 0.09, 0.02, False),
)
STEP_NIGHT = 21  # the first night of a step (1-based)
RULE = ChangeRule()


def simulate(
    rng: np.random.Generator,
    cv: float,
    tol: float,
    higher: bool,
    change: np.ndarray,
    starts: int,
    base_starts: int,
    day: float,
) -> list[int]:
    """One history night by night: each night's exit code. ``change``: the true log change
    per night (in the bad direction); ``day``: the day effect's SD, in units of ``cv``."""
    sign = -1.0 if higher else 1.0
    base_day = rng.normal(0.0, day * cv)
    base = rng.normal(base_day, cv, base_starts)
    nights: list[Night] = []
    codes = []
    for i, delta in enumerate(change):
        values = rng.normal(sign * delta + rng.normal(0.0, day * cv), cv, starts)
        log_ratio = float(values.mean() - base.mean())
        sd = math.sqrt(
            ((starts - 1) * values.var(ddof=1) + (base_starts - 1) * base.var(ddof=1))
            / (starts + base_starts - 2)
        )
        se = sd * math.sqrt(1 / starts + 1 / base_starts)
        ratio = math.exp(log_ratio)
        metric = NightMetric(ratio, ratio, math.nan, math.nan, "", starts, se=se,
                             df=starts + base_starts - 2)  # fmt: skip
        nights.append(Night(f"n{i + 1}", f"c{i + 1}", {}, {"m": metric}, "pass"))
        d = detect(nights, {"m": (tol, higher)}, RULE)
        verdict, _ = decide_night(nights[-1], d, RULE, None)
        codes.append({"pass": 0, "regressed": 1, "inconclusive": 3}.get(verdict, 2))
    return codes


def first(codes: list[int], code: int, after: int = 0) -> int | None:
    """1-based night of the first ``code`` at or after night ``after + 1``."""
    return next((i + 1 for i, c in enumerate(codes) if i >= after and c == code), None)


def row(args: argparse.Namespace, rng: np.random.Generator, metric: tuple, day: float) -> str:
    name, cv, tol, higher = metric
    n = args.nights

    def run(change: np.ndarray) -> list[list[int]]:
        return [
            simulate(rng, cv, tol, higher, change, args.starts, args.baseline_starts, day)
            for _ in range(args.runs)
        ]

    aa = run(np.zeros(n))
    per_night_1 = statistics.fmean(c.count(1) / n for c in aa)
    per_night_3 = statistics.fmean(c.count(3) / n for c in aa)
    any_1 = statistics.fmean(1 in c for c in aa)
    any_3 = statistics.fmean(3 in c for c in aa)
    cells = [f"{per_night_1:.2%}", f"{per_night_3:.1%}", f"{any_1:.1%}", f"{any_3:.0%}"]
    for size in (0.02, 0.05, 0.10):
        step = np.r_[np.zeros(STEP_NIGHT - 1), np.full(n - STEP_NIGHT + 1, math.log1p(size))]
        found = [first(c, 1, STEP_NIGHT - 1) for c in run(step)]
        within = statistics.fmean(f is not None and f - STEP_NIGHT + 1 <= 3 for f in found)
        nights = [f - STEP_NIGHT + 1 for f in found if f is not None]
        median = f"{statistics.median(nights):g}" if nights else "never"
        cells.append(f"{within:.0%} / {median}")
    creep = np.arange(n) * math.log(1.0015)
    at = [first(c, 1) for c in run(creep)]
    levels = [math.expm1(creep[f - 1]) for f in at if f is not None]
    cells.append(f"{statistics.median(levels):+.1%}" if levels else "never")
    return f"| {name} | {cv:.2%} | {tol:.1%} | {day:g} | " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200, help="histories per cell")
    ap.add_argument("--nights", type=int, default=50)
    ap.add_argument("--starts", type=int, default=3, help="server starts a night")
    ap.add_argument("--baseline-starts", type=int, default=8)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    print(
        f"{args.runs} histories of {args.nights} nights per cell, {args.starts} starts a night "
        f"against a baseline of {args.baseline_starts}; steps from night {STEP_NIGHT}; creep "
        f"+0.15% a night; rule: {RULE}.\n"
    )
    print(
        "| metric | per-start CV | tolerance | day effect (x CV) | A/A exit 1 per night | "
        "A/A exit 3 per night | A/A histories with an exit 1 | with an exit 3 | +2%: failed "
        "within 3 nights / median nights | +5% | +10% | creep: level at the first exit 1 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for metric in METRICS:
        for day in (0.0, 2.0):
            print(row(args, rng, metric, day), flush=True)


if __name__ == "__main__":
    main()
