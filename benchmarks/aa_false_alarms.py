"""How often does ``perfgate compare`` call identical arms different? A simulation.

Each simulated A/A run follows compare's A B B A schedule with one server start per block (as
``restart_between_repeats = false``). Median TPOT of a request = base x start effect x repeat
effect x request noise, all log-normal; the start effect is what a server start carries (on an
H100, starts of one build differed by about +-12%), the repeat effect what a repeat on one
start carries. Both arms are the same build, so every "regressed" or "improved" is false
(``--shift 0.2`` makes the candidate 20% slower instead: then "regressed" is the power).

It prints, per number of repeats, the false-call rate of perfgate's rule (units = server
starts, bootstrap enveloped with Welch or the pooled t) and of a request-pooling bootstrap over
repeats alone (what perfgate did before it knew about starts). With a 95% interval a sound rule
calls "regressed" at most 2.5% of the time, and "improved" at most 2.5%.

    python benchmarks/aa_false_alarms.py --sims 200
"""

from __future__ import annotations

import argparse

import numpy as np

from perfgate import registry
from perfgate.decide import stats
from perfgate.decide import verdict as judge
from perfgate.decide.comparison import RepeatData, compare, request_values
from perfgate.measure.metrics import compute_metrics
from perfgate.measure.records import RequestRecord
from perfgate.registry import Threshold
from perfgate.run.schedule import blocks, schedule

MS = 1_000_000
TOKENS = 16


def repeat_doc(tpots_ms: np.ndarray, start: int) -> RepeatData:
    records = []
    for i, t in enumerate(tpots_ms):
        chunks = tuple(int((20.0 + k * t) * MS) for k in range(TOKENS))
        records.append(
            RequestRecord(
                index=i,
                expected_prompt_tokens=4,
                expected_output_tokens=TOKENS,
                scheduled_ns=0,
                send_ns=0,
                end_ns=chunks[-1],
                chunk_ns=chunks,
                chunk_tokens=(1,) * TOKENS,
                prompt_tokens=4,
                output_tokens=TOKENS,
            )
        )
    return RepeatData(records, compute_metrics(records), start)


TPOT = registry.get("median_tpot_ms")


def simulate(rng: np.random.Generator, repeats: int, a: argparse.Namespace) -> dict[str, list]:
    docs: dict[str, list] = {"baseline": [], "candidate": []}
    starts = {"baseline": 0, "candidate": 0}
    for arm, count in blocks(schedule(repeats), restart_between_repeats=False):
        start_effect = rng.lognormal(0, a.start_sd)
        for _ in range(count):
            effect = start_effect * rng.lognormal(0, a.repeat_sd)
            shift = 1 + a.shift if arm == "candidate" else 1.0
            tpots = 2.0 * shift * effect * rng.lognormal(0, a.request_sd, a.requests)
            docs[arm].append(repeat_doc(tpots, starts[arm]))
        starts[arm] += 1
    return docs


def old_rule(base: list, cand: list, tolerance: float, resamples: int, seed: int) -> str:
    """Bootstrap over repeats and requests alone, one repeat = one unit."""
    iv = stats.bootstrap_relative(
        request_values(base, TPOT.per_request),
        request_values(cand, TPOT.per_request),
        "median",
        resamples=resamples,
        seed=seed,
    )
    n = min(len(base), len(cand))
    verdict = judge.decide(iv, higher_is_better=False, tolerance=tolerance, repeats=n).verdict
    return judge.INCONCLUSIVE if n < 2 else verdict


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sims", type=int, default=200)
    p.add_argument("--repeats", type=int, nargs="+", default=[2, 3, 4, 6])
    p.add_argument("--start-sd", type=float, default=0.08, help="log sd of a server start")
    p.add_argument("--repeat-sd", type=float, default=0.02, help="log sd of a repeat")
    p.add_argument("--request-sd", type=float, default=0.05, help="log sd of a request")
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--tolerance", type=float, default=0.01)
    p.add_argument(
        "--shift", type=float, default=0.0, help="candidate slower by this much (power, not A/A)"
    )
    p.add_argument("--resamples", type=int, default=400)
    a = p.parse_args()
    th = [Threshold("median_tpot_ms", a.tolerance)]
    print(
        f"{'A/A' if a.shift == 0 else f'candidate {a.shift:+.0%} TPOT'}, median TPOT, "
        f"tolerance {a.tolerance:.0%}, {a.sims} simulated runs per row; "
        f"log sd: start {a.start_sd}, repeat {a.repeat_sd}, request {a.request_sd}"
    )
    print("| repeats/arm | rule | regressed | improved | inconclusive |")
    print("|---:|---|---:|---:|---:|")
    for repeats in a.repeats:
        rng = np.random.default_rng(repeats)
        counts: dict[str, dict[str, int]] = {"perfgate": {}, "repeats-only bootstrap": {}}
        for i in range(a.sims):
            docs = simulate(rng, repeats, a)
            new = compare(th, docs["baseline"], docs["candidate"], resamples=a.resamples)[0]
            old = old_rule(docs["baseline"], docs["candidate"], a.tolerance, a.resamples, i)
            for rule, verdict in (("perfgate", new.verdict), ("repeats-only bootstrap", old)):
                counts[rule][verdict] = counts[rule].get(verdict, 0) + 1
        for rule, c in counts.items():
            rate = {k: c.get(k, 0) / a.sims for k in ("regressed", "improved", "inconclusive")}
            print(
                f"| {repeats} | {rule} | {rate['regressed']:.1%} | {rate['improved']:.1%} "
                f"| {rate['inconclusive']:.1%} |"
            )


if __name__ == "__main__":
    main()
