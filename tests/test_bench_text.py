from perfgate.documents.bench import BenchConfig, BenchResult, ServerInfo
from perfgate.measure.bench import collect_warnings
from perfgate.measure.server_metrics import cross_check
from perfgate.measure.summary import compute_metrics
from perfgate.measure.validity import check_records
from perfgate.report.bench_text import render_bench_text
from tests.golden_util import assert_golden
from tests.test_metrics import MS, rec
from tests.test_server_metrics import AFTER, BEFORE


def sample_doc(records):
    metrics = compute_metrics(records)
    checks = cross_check(BEFORE, AFTER, metrics)
    return BenchResult(
        config=BenchConfig(
            url="http://127.0.0.1:8000",
            num_prompts=len(records),
            input_len=4,
            output_len=4,
            max_concurrency=2,
        ),
        server=ServerInfo("http://127.0.0.1:8000", ("tiny",), "tiny", 4096, "0.32.0"),
        environment={"perfgate_version": "test"},
        records=records,
        metrics=metrics,
        problems=check_records(records),
        cross_checks=checks,
        warnings=collect_warnings(metrics, checks),
    ).to_json()


def records():
    return [
        rec(index=0, send=0, chunks=(20 * MS, 30 * MS, 40 * MS), tokens=(1, 2, 1), out=4),
        rec(
            index=1,
            send=5 * MS,
            chunks=(25 * MS, 35 * MS, 45 * MS, 55 * MS),
            tokens=(1, 1, 1, 1),
            out=4,
        ),
    ]


def test_bench_summary_matches_golden_file():
    assert_golden(
        "bench_summary.txt", render_bench_text(BenchResult.from_json(sample_doc(records())))
    )


def test_invalid_run_summary_says_why():
    bad = [*records(), rec(index=2, send=0, error="HTTP 500: engine dead")]
    text = render_bench_text(BenchResult.from_json(sample_doc(bad)))
    assert "INVALID RUN (exit 2):" in text
    assert "1 of 3 requests failed: 1x HTTP 500: engine dead" in text


def test_all_failed_renders_na_not_zero():
    bad = [rec(index=i, send=0, error="boom") for i in range(2)]
    text = render_bench_text(BenchResult.from_json(sample_doc(bad)))
    assert "Mean TTFT (ms):                              n/a" in text


def test_warmups_that_never_fill_the_batch_are_flagged():
    # demo-cpu on two cores: with 4 warmups at concurrency 8, each arm's first repeat after a
    # start ran at median TPOT 4.6 ms against 2.5-3.0 ms for the next three.
    metrics = compute_metrics(records())
    few = BenchConfig(url="http://x", num_warmups=4, max_concurrency=8)
    codes = [w.code for w in collect_warnings(metrics, [], few)]
    assert codes.count("few_warmups") == 1
    for ok in (
        BenchConfig(url="http://x", num_warmups=8, max_concurrency=8),
        BenchConfig(url="http://x", num_warmups=0, max_concurrency=8),  # warm from before
        BenchConfig(url="http://x", num_warmups=4, max_concurrency=None, num_prompts=4),
    ):
        assert "few_warmups" not in [w.code for w in collect_warnings(metrics, [], ok)]
