from perfgate.measure.validity import check_records
from tests.test_metrics import MS, rec


def good(i=0):
    return rec(index=i, send=0, chunks=(MS, 2 * MS), tokens=(1, 1), out=2, prompt=4)


def kinds(records):
    return [p.kind for p in check_records(records)]


def test_a_clean_run_has_no_problems():
    assert check_records([good(0), good(1)]) == []


def test_one_failed_request_makes_the_run_invalid_with_its_error_text():
    bad = rec(index=1, send=0, error="HTTP 500: out of memory")
    problems = check_records([good(0), bad])
    assert [p.kind for p in problems] == ["failed_requests"]
    assert "1 of 2 requests failed" in problems[0].message
    assert "HTTP 500: out of memory" in problems[0].message


def test_short_output_is_invalid():
    short = rec(send=0, chunks=(MS,), tokens=(1,), out=1, expected_out=2)
    assert kinds([short]) == ["output_length_mismatch"]


def test_prompt_length_mismatch_is_invalid():
    r = rec(send=0, chunks=(MS, 2 * MS), tokens=(1, 1), out=2, prompt=4)
    r = type(r)(**{**r.__dict__, "prompt_tokens": 5})
    problems = check_records([r])
    assert [p.kind for p in problems] == ["prompt_length_mismatch"]
    assert "5 tokens, asked 4" in problems[0].message


def test_missing_usage_is_invalid_because_lengths_cannot_be_checked():
    r = rec(send=0, chunks=(MS,), tokens=None, out=None, expected_out=1)
    assert kinds([r]) == ["missing_usage"]


def test_chunks_not_adding_up_to_usage_is_invalid():
    r = rec(send=0, chunks=(MS, 2 * MS), tokens=(1, 2), out=2)
    assert kinds([r]) == ["token_count_mismatch"]


def test_warmup_failures_do_not_count_but_an_empty_run_is_invalid():
    warm = rec(index=-1, send=0, error="boom", warmup=True)
    assert kinds([warm, good()]) == []
    assert kinds([warm]) == ["no_requests"]
