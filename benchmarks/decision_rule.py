"""How often does perfgate's decision rule fail identical arms, and how often does it catch a
real change? A simulation through perfgate's own code, seeded from measured noise.

Each simulated run draws one value per server start and metric (log-normal), feeds them to
``perfgate.decide.comparison.compare_values`` look by look as ``perfgate compare`` would, applies
``perfgate.decide.family`` (Holm over the gated metrics and accuracy) and records the verdict.
Accuracy is a paired GPQA-like evaluation (per-question difficulty from a Beta distribution, k
samples per question) through ``perfgate.decide.accuracy.paired_accuracy``.

Noise (log-scale SD of one start's value), measured:

- ``gpu``: docs/gpu/results (H100/H200): start-to-start ~9%, repeat ~2.7%, wave ~10% (p99 of a
  start is about its slowest of ~4 lock-step waves, so the wave term does not average away).
  The metrics of one start move together: a shared start effect (correlation 0.8).
- ``quiet``: 1% per start for every metric, a signal as steady as GPU time per decode step
  (no accuracy in these designs), to show the rule deciding "pass" and saving starts.
- ``cpu``: the demo on this project's shared two-core CI box, 6 + 6 starts of demo-cpu with one
  repeat each (docs/statistics.md): TPOT ~28%, p99 TPOT ~28%, ITL ~27%, throughput ~24%,
  TTFT ~15%.

A change of +X% makes TPOT, p99 TPOT and ITL X% worse and throughput 1/(1+X) lower; TTFT stays.
Every rate is estimated over enough runs that its 95% interval is within +-1 pp (at most 10,000
runs per cell), each cell with its own seed. Usage::

    python benchmarks/decision_rule.py            # every table of docs/statistics.md
    python benchmarks/decision_rule.py --quick    # 1,000 runs per cell
    python benchmarks/decision_rule.py --runs 20  # a smoke test (the test suite's)
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import time
from dataclasses import dataclass, field

import numpy as np

from perfgate.decide import family, stats
from perfgate.decide import verdict as judge
from perfgate.decide.accuracy import paired_accuracy
from perfgate.decide.comparison import compare_values
from perfgate.documents.compare import INCONCLUSIVE, AccuracyComparison
from perfgate.documents.spec import Threshold

METRICS = ("median_tpot_ms", "p99_tpot_ms", "median_itl_ms", "output_throughput", "median_ttft_ms")
SHIFTED = {"median_tpot_ms": 1, "p99_tpot_ms": 1, "median_itl_ms": 1, "output_throughput": -1}


@dataclass(frozen=True)
class Noise:
    name: str
    start: dict[str, float]  # per-start log SD of each metric (one repeat per start)
    repeat: float = 0.0  # averages down with repeats per start
    wave: dict[str, float] = field(default_factory=dict)  # averages down with repeats only
    correlation: float = 0.8

    def sd(self, metric: str, repeats: int) -> float:
        return math.sqrt(
            self.start[metric] ** 2 + (self.repeat**2 + self.wave.get(metric, 0.0) ** 2) / repeats
        )


GPU = Noise(
    "gpu",
    start=dict.fromkeys(METRICS, 0.09),
    repeat=0.027,
    wave={"p99_tpot_ms": 0.10, "median_tpot_ms": 0.05, "median_itl_ms": 0.05},
)
CPU = Noise(
    "cpu",
    start={
        "median_tpot_ms": 0.277,
        "p99_tpot_ms": 0.282,
        "median_itl_ms": 0.274,
        "output_throughput": 0.244,
        "median_ttft_ms": 0.146,
    },
)
# A quiet signal (the GPU time per decode step of a profile is one; its start-to-start spread
# on an H200 was ~0.1%): 1% per start for every metric.
QUIET = Noise("quiet", start=dict.fromkeys(METRICS, 0.01))
GPU_TOLERANCES = (0.01, 0.03, 0.01, 0.01, 0.05)  # scenarios/gpt-oss-120b.toml
CPU_TOLERANCES = (0.25, 0.50, 0.25, 0.25, 0.50)  # the e2e tests' tests/e2e/compare-cpu.toml
DEMO_TOLERANCES = (0.35, 0.50, 0.35, 0.35, 0.50)  # scenarios/demo-cpu.toml (`make demo`)


def box(cv: float) -> Noise:
    """The shared two-core box at a between-start CV of ``cv`` for medians and throughput
    (p99 and TTFT 1.25 times it): 4-6% on a quiet box, 11-12% beside other work (2026-12-07)."""
    wide = ("p99_tpot_ms", "median_ttft_ms")
    return Noise(f"box {cv:.0%}", start={m: cv * (1.25 if m in wide else 1) for m in METRICS})


@dataclass(frozen=True)
class Accuracy:
    questions: int
    k: int
    max_drop: float
    drop: float = 0.0  # true accuracy drop of the candidate (absolute)


@dataclass(frozen=True)
class Design:
    """``starts`` per arm (fixed) or ``budget`` most starts per arm (sequential)."""

    name: str
    noise: Noise
    tolerances: tuple[float, ...]
    starts: int | None = None
    budget: int | None = None
    repeats_per_start: int = 1
    primary: tuple[str, ...] | None = None
    accuracy: Accuracy | None = None
    confidence: float = 0.95


def draw_starts(rng: np.random.Generator, d: Design, n: int, change: float) -> np.ndarray:
    """(n, metrics) values of n starts of one arm, ``change`` making it worse."""
    rho = d.noise.correlation
    shared = rng.standard_normal((n, 1))
    own = rng.standard_normal((n, len(METRICS)))
    out = np.empty((n, len(METRICS)))
    for j, m in enumerate(METRICS):
        sign = -1.0 if m == "output_throughput" else 1.0
        z = math.sqrt(rho) * sign * shared[:, 0] + math.sqrt(1 - rho) * own[:, j]
        shift = SHIFTED.get(m, 0) * math.log1p(change)
        out[:, j] = np.exp(shift + d.noise.sd(m, d.repeats_per_start) * z)
    return out


def draw_accuracy(rng: np.random.Generator, a: Accuracy) -> AccuracyComparison:
    p = rng.beta(2.6, 1.4, a.questions)  # mean difficulty ~65% correct
    q = np.clip(p - a.drop, 0, 1)
    base = (rng.random((a.questions, a.k)) < p[:, None]).astype(int)
    cand = (rng.random((a.questions, a.k)) < q[:, None]).astype(int)
    return paired_accuracy(
        base.tolist(),
        cand.tolist(),
        max_drop=a.max_drop,
        resamples=500,
        seed=int(rng.integers(2**31)),
    )


def analyse(d: Design, b: np.ndarray, c: np.ndarray, alpha: float) -> list:
    conf = 1 - alpha
    return [
        compare_values(
            Threshold(m, tol),
            b[:, j],
            c[:, j],
            confidence=conf,
            primary=d.primary is None or m in d.primary,
        )
        for j, (m, tol) in enumerate(zip(METRICS, d.tolerances, strict=True))
    ]


def one_run(d: Design, change: float, rng: np.random.Generator) -> tuple[str, int, object, str]:
    """(verdict, starts per arm used, the median TPOT row, the timed metrics' verdict
    without accuracy) of one simulated run."""
    most = d.budget or d.starts or 2
    b, c = draw_starts(rng, d, most, 0.0), draw_starts(rng, d, most, change)
    raw_acc = draw_accuracy(rng, d.accuracy) if d.accuracy else None
    base_alpha = 1 - d.confidence
    if d.budget is None:
        rows = analyse(d, b, c, base_alpha)
        rows, acc = family.apply(rows, raw_acc, alpha=base_alpha)
        return family.overall(rows, acc), most, rows[0], family.overall(rows, None)
    for n in range(2, most + 1):
        alpha = base_alpha * stats.look_share(n, 2, most)
        rows = analyse(d, b[:n], c[:n], alpha)
        looked, _ = family.apply(rows, None, alpha=alpha, pending=1 if raw_acc else 0)
        if family.overall(looked, None) != INCONCLUSIVE or n == most:
            # accuracy tested once, at its reserved share, wherever the run stops (as
            # perfgate.decide.judge does for a budgeted run)
            share = family.accuracy_share(base_alpha, len(rows)) if raw_acc else None
            rows, acc = family.apply(rows, raw_acc, alpha=alpha, accuracy_alpha=share)
            return family.overall(rows, acc), n, rows[0], family.overall(rows, None)
    raise AssertionError("unreachable")


def _batch(args: tuple[Design, float, int, int]) -> list[tuple[str, int, str]]:
    d, change, seed, count = args
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        verdict, starts, _, timed = one_run(d, change, rng)
        out.append((verdict, starts, timed))
    return out


def half_width(p: float, n: int) -> float:
    return 1.96 * math.sqrt(max(p * (1 - p), 1e-12) / n)


def run_cell(pool, d: Design, change: float, seed: int, most: int) -> dict:
    """Batches of 500 runs (two at a time; fewer when ``most`` is smaller) until every rate
    is within +-1 pp or ``most`` runs are done."""
    results: list[tuple[str, int, str]] = []
    batch = 0
    size = min(500, max(1, most // 2))
    while len(results) < most:
        jobs = [(d, change, seed * 1000 + batch + i, size) for i in range(2)]
        batch += 2
        for part in pool.map(_batch, jobs):
            results += part
        n = len(results)
        rates = [sum(r[0] == x for r in results) / n for x in ("regressed", "pass")]
        rates += [sum(r[2] == x for r in results) / n for x in ("regressed", "pass")]
        if all(half_width(p, n) <= 0.01 for p in rates):
            break
    n = len(results)
    return {
        "runs": n,
        "regressed": sum(r[0] == "regressed" for r in results) / n,
        "pass": sum(r[0] == "pass" for r in results) / n,
        "inconclusive": sum(r[0] == "inconclusive" for r in results) / n,
        "timed regressed": sum(r[2] == "regressed" for r in results) / n,
        "timed pass": sum(r[2] == "pass" for r in results) / n,
        "starts": float(np.mean([r[1] for r in results])),
    }


def _rerun(args: tuple[Design, Design, int, int]) -> tuple[int, int, int, int]:
    """Inconclusive A/A runs of ``first``, re-run at the plan's N (point, and high end)."""
    first, again, seed, count = args
    rng = np.random.default_rng(seed)
    undecided = point = high = planned = 0
    for _ in range(count):
        verdict, _, row, _ = one_run(first, 0.0, rng)
        if verdict != INCONCLUSIVE:
            continue
        undecided += 1
        for n, key in ((row.starts_to_decide, "point"), (row.starts_to_decide_high, "high")):
            if n is None:
                continue
            if key == "point":
                planned += 1
            v = one_run(replace_starts(again, n), 0.0, rng)[0]
            decided = v != INCONCLUSIVE
            point += decided and key == "point"
            high += decided and key == "high"
    return undecided, planned, point, high


def replace_starts(d: Design, n: int) -> Design:
    from dataclasses import replace

    return replace(d, starts=n, budget=None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1,000 runs per cell")
    ap.add_argument(
        "--runs",
        type=int,
        default=None,
        help="runs per cell in every table (a smoke test: the suite runs it with a few)",
    )
    ap.add_argument(
        "--part",
        choices=("all", "designs", "rerun", "accuracy", "guards"),
        default="all",
        help="one table only",
    )
    ap.add_argument(
        "--e2e-noise",
        type=float,
        nargs="+",
        default=[0.09],
        help="guards table: the between-start CV(s) of end-to-end metrics the scenario has no "
        "calibrated start_noise for (default: 0.09, the 2-layer toy on an H200)",
    )
    args = ap.parse_args()
    part = args.part
    most = args.runs or (1000 if args.quick else 10_000)
    gpu_acc = Accuracy(questions=198, k=8, max_drop=0.01)
    cpu_acc = Accuracy(questions=24, k=2, max_drop=0.05)
    demo_acc = Accuracy(questions=24, k=8, max_drop=0.20)  # the taught model, ~70% right
    designs = [
        Design("gpu fixed 2", GPU, GPU_TOLERANCES, starts=2, accuracy=gpu_acc),
        Design("gpu fixed 4", GPU, GPU_TOLERANCES, starts=4, accuracy=gpu_acc),
        Design("gpu fixed 8 (5% tolerances)", GPU, (0.05,) * 5, starts=8, accuracy=gpu_acc),
        Design(
            "gpu budget 8 (gpt-oss-120b)",
            GPU,
            GPU_TOLERANCES,
            budget=8,
            repeats_per_start=2,
            primary=("median_tpot_ms", "output_throughput"),
            accuracy=gpu_acc,
        ),
        Design(
            "gpu budget 8 (5% tolerances)",
            GPU,
            (0.05,) * 5,
            budget=8,
            repeats_per_start=2,
            accuracy=gpu_acc,
        ),
        Design("cpu budget 3 (compare-cpu)", CPU, CPU_TOLERANCES, budget=3, accuracy=cpu_acc),
        *(
            Design(
                f"cpu budget 4 (demo-cpu), start noise {cv:.0%}",
                box(cv),
                DEMO_TOLERANCES,
                budget=4,
                accuracy=demo_acc,
            )
            for cv in (0.05, 0.08, 0.12)
        ),
        Design("quiet 1%, fixed 8, 2% tolerances", QUIET, (0.02,) * 5, starts=8),
        Design("quiet 1%, budget 8, 2% tolerances", QUIET, (0.02,) * 5, budget=8),
    ]
    changes = (0.0, 0.02, 0.05, 0.10, 0.30)
    began = time.time()
    with multiprocessing.Pool(2) as pool:
        if part in ("all", "designs"):
            designs_table(pool, designs, changes, most)
        if part in ("all", "rerun"):
            rerun_table(pool, args.runs or (2000 if args.quick else 10_000))
        if part in ("all", "accuracy"):
            accuracy_table(args.runs or (2000 if args.quick else 10_000))
        if part in ("all", "guards"):
            guards_table(pool, args.runs or (1000 if args.quick else 4000), args.e2e_noise)
    print(f"\n({time.time() - began:.0f} s)")


def designs_table(pool, designs: list[Design], changes: tuple[float, ...], most: int) -> None:
    print(
        "| design | true change | runs | regressed | pass | inconclusive | timed metrics: "
        "regressed | timed metrics: pass | mean starts/arm |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for i, d in enumerate(designs):
        for j, change in enumerate(changes):
            r = run_cell(pool, d, change, seed=100 * i + j + 1, most=most)
            label = "A/A" if change == 0 else f"+{change:.0%}"
            print(
                f"| {d.name} | {label} | {r['runs']} | {r['regressed']:.1%} | "
                f"{r['pass']:.1%} | {r['inconclusive']:.1%} | {r['timed regressed']:.1%} | "
                f"{r['timed pass']:.1%} | {r['starts']:.2f} |",
                flush=True,
            )
    print()


def rerun_table(pool, count: int) -> None:
    print(
        "Re-running inconclusive A/A runs with the plan's starts per arm (median TPOT row)\n\n"
        "| first run | re-run | inconclusive first runs | decided at the plan's N "
        "| decided at the high end of its range |\n|---|---|---:|---:|---:|"
    )
    first = Design(
        "gpu fixed 3, 5% tolerances, TPOT primary",
        GPU,
        (0.05,) * 5,
        starts=3,
        primary=("median_tpot_ms",),
    )
    parts = pool.map(_rerun, [(first, first, 7000 + i, count // 2) for i in range(2)])
    undecided = sum(p[0] for p in parts)
    planned, point, high = (sum(p[k] for p in parts) for k in (1, 2, 3))
    print(
        f"| {first.name} | fixed at N | {undecided} | "
        f"{point / max(planned, 1):.1%} (of {planned} with a plan) | "
        f"{high / max(planned, 1):.1%} |"
    )
    print()


def accuracy_table(runs: int) -> None:
    print(
        "Accuracy alone (198 questions x k = 8, temperature > 0, max_drop 1 pp; paired t "
        "against the margin)\n\n| true drop | runs | regressed | no change | improved "
        "| inconclusive |\n|---:|---:|---:|---:|---:|---:|"
    )
    for drop in (0.0, 0.005, 0.01, 0.05):
        acc = Accuracy(questions=198, k=8, max_drop=0.01, drop=drop)
        rng = np.random.default_rng(9000 + int(drop * 1000))
        verdicts = [draw_accuracy(rng, acc).verdict for _ in range(runs)]
        print(
            f"| {drop * 100:.1f} pp | {runs} | "
            + " | ".join(
                f"{sum(v == x for v in verdicts) / runs:.1%}"
                for x in ("regressed", "no change", "improved", "inconclusive")
            )
            + " |",
            flush=True,
        )
    print()


# The kernel scenario as scenarios/gpt-oss-120b.toml states it: its primary and guards, their
# tolerances, its budget and its calibrated start noise (GPU_STEP_NOISE and --e2e-noise stand in
# for a metric it has no calibration for). A host-side change makes TPOT, p99 TPOT and ITL X%
# worse and throughput 1/(1+X) lower; GPU time per step and TTFT stay.
GPU_STEP_NOISE = 0.002  # GPU time per decode step between starts on an H200 (docs/gpu.md)
HOST_SIGN = {"median_tpot_ms": 1, "p99_tpot_ms": 1, "median_itl_ms": 1, "output_throughput": -1}


@dataclass(frozen=True)
class Gated:
    metric: str
    tolerance: float
    cv: float
    primary: bool


def kernel_scenario(e2e: float) -> tuple[list[Gated], int]:
    from perfgate.scenario import load_builtin

    sc = load_builtin("gpt-oss-120b")
    cv = dict(sc.start_noise.cv) if sc.start_noise else {}
    primary = set(sc.primary or [t.metric for t in sc.thresholds])
    gated = [
        Gated(
            t.metric,
            t.tolerance,
            cv.get(t.metric, GPU_STEP_NOISE if t.metric == "device_time_per_step_us" else e2e),
            t.metric in primary,
        )
        for t in sc.thresholds
    ]
    most = sc.budget.most_starts if sc.budget else sc.starts
    return gated, most


def guarded_run(gated: list[Gated], change: float, most: int, rng: np.random.Generator) -> tuple:
    """One sequential run of the kernel scenario under both rules: (verdict and starts when
    undecided guards hold a pass back, the same when they do not)."""

    def draw(shift: float) -> np.ndarray:
        shared = rng.standard_normal((most, 1))
        own = rng.standard_normal((most, len(gated)))
        out = np.empty((most, len(gated)))
        for j, g in enumerate(gated):
            sign = HOST_SIGN.get(g.metric, 0)
            if g.metric == "device_time_per_step_us":
                z = own[:, j]  # the GPU's own time: not moved by the host's start effect
            else:
                z = math.sqrt(0.8) * shared[:, 0] + math.sqrt(0.2) * own[:, j]
                z = -z if sign < 0 else z
            out[:, j] = np.exp(sign * math.log1p(shift) + g.cv * z)
        return out

    b, c = draw(0.0), draw(change)
    results = []
    for guards_count in (True, False):
        for n in range(2, most + 1):
            alpha = 0.05 * stats.look_share(n, 2, most)
            rows = [
                compare_values(
                    Threshold(g.metric, g.tolerance),
                    b[:n, j],
                    c[:n, j],
                    confidence=1 - alpha,
                    primary=g.primary,
                )
                for j, g in enumerate(gated)
            ]
            rows, _ = family.apply(rows, None, alpha=alpha)
            if guards_count:
                v = family.overall(rows, None)
            else:  # the earlier rule: an undecided secondary metric never held a run back
                v = judge.overall(
                    [r.verdict for r in rows if r.primary or r.verdict != INCONCLUSIVE]
                )
            if v != INCONCLUSIVE or n == most:
                results.append((v, n))
                break
    return tuple(results)


def _guard_batch(args: tuple[list[Gated], float, int, int, int]) -> list[tuple]:
    gated, change, most, seed, count = args
    rng = np.random.default_rng(seed)
    return [guarded_run(gated, change, most, rng) for _ in range(count)]


def guards_table(pool, runs: int, noises: list[float]) -> None:
    for e2e in noises:
        gated, most = kernel_scenario(e2e)
        print(
            "Guards, scenarios/gpt-oss-120b.toml (budget "
            f"{most} starts per arm): "
            + ", ".join(
                f"{g.metric} {g.tolerance:.1%} ({'primary' if g.primary else 'guard'}, noise "
                f"{g.cv:.1%})"
                for g in gated
            )
            + ". A host-side change leaves GPU time alone. 'caught' = the run does not pass."
            "\n\n| host-side change | runs | guards count: regressed | caught | "
            "inconclusive | mean starts/arm | guards ignored: pass | mean starts/arm |\n"
            "|---:|---:|---:|---:|---:|---:|---:|---:|"
        )
        for i, change in enumerate((0.0, 0.05, 0.10, 0.20, 0.30)):
            seed = 5000 + 100 * i + int(e2e * 1e4)
            jobs = [(gated, change, most, seed + k, runs // 2) for k in (0, 1)]
            res = [r for part in pool.map(_guard_batch, jobs) for r in part]
            new = [r[0] for r in res]
            old = [r[1] for r in res]
            n = len(res)
            label = "A/A" if change == 0 else f"+{change:.0%}"
            print(
                f"| {label} | {n} | "
                f"{sum(v == 'regressed' for v, _ in new) / n:.1%} | "
                f"{sum(v != 'pass' for v, _ in new) / n:.1%} | "
                f"{sum(v == 'inconclusive' for v, _ in new) / n:.1%} | "
                f"{np.mean([k for _, k in new]):.2f} | "
                f"{sum(v == 'pass' for v, _ in old) / n:.1%} | "
                f"{np.mean([k for _, k in old]):.2f} |",
                flush=True,
            )
        print()


if __name__ == "__main__":
    main()
