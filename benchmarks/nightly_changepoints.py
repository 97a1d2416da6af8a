"""How the nightly gate's change-point rule (perfgate.history) behaves on simulated histories.

A night's value is its log ratio to the reference: normal noise with the night-to-night SD
``sigma`` (the spread of a night's geometric mean over its starts, including any night effect).
For each sigma and rule setting:

- **A/A**: ``--nights`` (default 20) nights of one build: the share of histories where the rule
  reports any change point, and where it reports a regression (target: none in >= 95%).
- **Step**: 10 nights, then a 5% regression (ratio x 1.05) from night 11 on: the share of
  histories in which the rule reports the regression by night 13 (within 3 nights of the
  change; target >= 90%), and by night 15.

The noise comes from measurements: on an H200, GPU kernel time per decode step varied 0.07-0.26%
between starts and end-to-end median TPOT 5-18% (docs/gpu.md); a night of N starts has about
the per-start spread / sqrt(N). So sigma = 0.25% stands for the kernel metric at one start per
night; 1-3% for end-to-end TPOT at 10-100 starts per night.

    python benchmarks/nightly_changepoints.py [--runs 2000] [--nights 20]
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from perfgate.documents.nightly import Night, NightMetric
from perfgate.documents.spec import ChangeRule
from perfgate.history import detect

TOL = 0.02  # the gate's tolerance for the metric (a 5% step is beyond it)
PENALTIES = (4.0, 6.0)


def history(logs: np.ndarray) -> list[Night]:
    return [
        Night(
            date=f"night-{i + 1}",
            commit=f"c{i + 1}",
            fingerprint={},
            metrics={
                "m": NightMetric(
                    value=math.exp(x),
                    ratio=math.exp(x),
                    low=math.nan,
                    high=math.nan,
                    verdict="",
                    starts=1,
                )
            },
            verdict="",
        )
        for i, x in enumerate(logs)
    ]


def rates(sigma: float, rule: ChangeRule, runs: int, nights: int, rng: np.random.Generator):
    any_cp = aa_fail = by13 = by15 = 0
    for _ in range(runs):
        aa = rng.normal(0.0, sigma, nights)
        d = detect(history(aa), {"m": (TOL, False)}, rule)
        any_cp += bool(d.changes)
        aa_fail += bool(d.regressed)
        step = rng.normal(0.0, sigma, 15) + np.r_[np.zeros(10), np.full(5, math.log(1.05))]
        found13 = bool(detect(history(step[:13]), {"m": (TOL, False)}, rule).regressed)
        by13 += found13
        by15 += found13 or bool(detect(history(step), {"m": (TOL, False)}, rule).regressed)
    return any_cp / runs, aa_fail / runs, by13 / runs, by15 / runs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--nights", type=int, default=20)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    print(
        f"{args.runs} simulated histories per row; A/A over {args.nights} nights; step: +5% "
        f"from night 11; tolerance {TOL:.0%}; min_nights 3.\n"
    )
    print(
        "| night-to-night sigma | penalty | sigma from | A/A: any change point | "
        "A/A: regression | 5% step found by night 13 | by night 15 |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|")
    for sigma in (0.0025, 0.005, 0.01, 0.015, 0.02, 0.03):
        for penalty in PENALTIES:
            for calibrated in (True, False):
                rule = ChangeRule(
                    min_nights=3, penalty=penalty, sigma=sigma if calibrated else None
                )
                cp, fail, f13, f15 = rates(sigma, rule, args.runs, args.nights, rng)
                print(
                    f"| {sigma:.2%} | {penalty:g} | {'calibrated' if calibrated else 'history'} "
                    f"| {cp:.1%} | {fail:.1%} | {f13:.1%} | {f15:.1%} |"
                )


if __name__ == "__main__":
    main()
