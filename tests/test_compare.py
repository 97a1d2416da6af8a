import numpy as np

from perfgate.compare import compare, gate, label, split_metric
from perfgate.metrics import compute_metrics
from perfgate.runner import blocks, schedule
from perfgate.scenario import Threshold
from tests.test_metrics import MS, rec

OUT = 16


def repeat(rng, tpot_ms, n=24, ttft_ms=20.0):
    """A bench document whose requests have about the given TPOT (and 1 token per chunk)."""
    records = []
    for i in range(n):
        step = tpot_ms * rng.lognormal(0, 0.05)
        first = ttft_ms * rng.lognormal(0, 0.1)
        chunks = tuple(int((first + k * step) * MS) for k in range(OUT))
        records.append(rec(index=i, send=0, chunks=chunks, tokens=(1,) * OUT, out=OUT))
    return {"metrics": compute_metrics(records), "records": [r.to_json() for r in records]}


THRESHOLDS = [Threshold("median_tpot_ms", 0.05), Threshold("output_throughput", 0.05)]


def test_identical_arms_do_not_regress():
    rng = np.random.default_rng(0)
    base = [repeat(rng, 3.0) for _ in range(3)]
    cand = [repeat(rng, 3.0) for _ in range(3)]
    rows = compare(THRESHOLDS, base, cand, resamples=500)
    assert {r.verdict for r in rows} <= {"no change", "improved", "inconclusive"}
    assert gate(rows) in ("pass", "inconclusive")


def test_a_slower_candidate_regresses_tpot_and_throughput():
    rng = np.random.default_rng(1)
    base = [repeat(rng, 3.0) for _ in range(3)]
    cand = [repeat(rng, 4.0) for _ in range(3)]
    rows = {r.metric: r for r in compare(THRESHOLDS, base, cand, resamples=500)}
    tpot = rows["median_tpot_ms"]
    assert tpot.verdict == "regressed"
    assert 0.25 < tpot.estimate < 0.40 and tpot.low > 0.05
    assert rows["output_throughput"].estimate < -0.15
    assert gate(rows.values()) == "regressed"


def test_a_faster_candidate_improves():
    rng = np.random.default_rng(2)
    base = [repeat(rng, 3.0) for _ in range(3)]
    cand = [repeat(rng, 2.4) for _ in range(3)]
    rows = {r.metric: r for r in compare(THRESHOLDS, base, cand, resamples=500)}
    assert rows["median_tpot_ms"].verdict == "improved"
    assert gate(rows.values()) == "pass"


def test_unmeasurable_metric_makes_the_gate_invalid():
    rng = np.random.default_rng(3)
    base = [repeat(rng, 3.0)]
    failed = rec(index=0, send=0, error="HTTP 500: x")
    cand = [{"metrics": compute_metrics([failed]), "records": [failed.to_json()]}]
    rows = compare(THRESHOLDS, base, cand, resamples=200)
    assert {r.verdict for r in rows} == {"invalid"}
    assert gate(rows) == "invalid"


def test_abba_schedule_and_server_blocks():
    assert schedule(2) == ["baseline", "candidate", "candidate", "baseline"]
    assert schedule(3) == [
        "baseline",
        "candidate",
        "candidate",
        "baseline",
        "baseline",
        "candidate",
    ]
    assert blocks(schedule(3), restart_between_repeats=False) == [
        ("baseline", 1),
        ("candidate", 2),
        ("baseline", 2),
        ("candidate", 1),
    ]
    assert len(blocks(schedule(3), restart_between_repeats=True)) == 6


def test_metric_names_and_labels():
    assert split_metric("p99_tpot_ms") == ("p99", "tpot")
    assert split_metric("output_throughput") is None
    assert label("median_ttft_ms") == "Median TTFT (ms)"
    assert label("p99_itl_per_token_ms") == "P99 ITL per token (ms)"


def test_one_repeat_per_arm_is_never_a_confident_verdict():
    # Request-level noise alone can make a tight interval; run-to-run noise needs repeats.
    rng = np.random.default_rng(5)
    rows = compare(THRESHOLDS, [repeat(rng, 3.0)], [repeat(rng, 4.0)], resamples=300)
    tpot = next(r for r in rows if r.metric == "median_tpot_ms")
    assert tpot.low > 0.05  # the bootstrap alone would call it a regression ...
    assert tpot.verdict == "inconclusive" and tpot.repeats_to_decide == 2  # ... perfgate won't
