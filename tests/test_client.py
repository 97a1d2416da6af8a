import asyncio

from perfgate.measure.client import StreamParser, build_payload, consume_stream
from tests.sse import (
    DONE,
    ScriptedClock,
    completion_chunk,
    event,
    lines,
    usage_chunk,
)


def run(stream, times):
    clock = ScriptedClock(times)
    result = asyncio.run(consume_stream(lines(stream), clock))
    assert clock.reads == len(times), "every non-blank line and the end are stamped exactly once"
    return result


def test_one_token_per_chunk_stamps_every_chunk():
    stream = [completion_chunk(t, 10, i + 1) for i, t in enumerate("abcd")]
    stream += [usage_chunk(10, 4), DONE]
    result = run(stream, [100, 200, 350, 400, 410, 420, 430])
    assert result.error is None
    assert result.chunk_ns == [100, 200, 350, 400]
    assert result.chunk_tokens == [1, 1, 1, 1]
    assert (result.prompt_tokens, result.output_tokens) == (10, 4)
    assert result.end_ns == 430
    # without per-chunk usage, the chunks that carried text are the token-carrying ones
    bare = run([completion_chunk(t, None, None) for t in "ab"] + [DONE], [100, 200, 210, 220])
    assert (bare.chunk_ns, bare.chunk_tokens) == ([100, 200], None)


def test_multi_token_chunks_carry_the_usage_growth():
    # The server coalesced tokens: 1, then 3, then 2 in one chunk each.
    stream = [
        completion_chunk("a", 5, 1),
        completion_chunk("bcd", 5, 4),
        completion_chunk("ef", 5, 6),
        usage_chunk(5, 6),
        DONE,
    ]
    result = run(stream, [10, 40, 90, 91, 92, 93])
    assert result.chunk_ns == [10, 40, 90]
    assert result.chunk_tokens == [1, 3, 2]
    assert sum(result.chunk_tokens) == result.output_tokens == 6


def test_chunk_without_new_tokens_is_not_a_token_chunk():
    # vLLM's last choice chunk may carry only finish_reason: same cumulative count.
    stream = [
        completion_chunk("a", 5, 1),
        completion_chunk("b", 5, 2),
        completion_chunk("", 5, 2),
        DONE,
    ]
    result = run(stream, [10, 20, 30, 31, 32])
    assert result.chunk_ns == [10, 20]
    assert result.chunk_tokens == [1, 1]
    assert result.output_tokens == 2


def test_missing_usage_falls_back_to_text_chunks_and_unknown_counts():
    stream = [
        completion_chunk("a", None, None),
        completion_chunk("", None, None),
        completion_chunk("b", None, None),
        DONE,
    ]
    result = run(stream, [10, 20, 30, 40, 50])
    assert result.error is None
    assert result.chunk_ns == [10, 30]
    assert result.chunk_tokens is None
    assert result.output_tokens is None and result.prompt_tokens is None


def test_error_event_mid_stream_fails_the_request_and_keeps_its_message():
    stream = [
        completion_chunk("a", 5, 1),
        event({"error": {"message": "engine died"}}),
        completion_chunk("b", 5, 2),
        DONE,
    ]
    result = run(stream, [10, 20, 30])
    assert result.error == "server error mid-stream: engine died"
    assert result.chunk_ns == [10]


def test_stream_cut_before_done_is_an_error():
    result = run([completion_chunk("a", 5, 1)], [10, 20])
    assert result.error == "stream ended before [DONE]"


def test_malformed_event_is_an_error_not_a_crash():
    result = run([b"data: {not json\n"], [10, 11])
    assert result.error is not None and result.error.startswith("malformed stream event")


def test_stream_with_no_tokens_is_an_error():
    result = run([usage_chunk(5, 0), DONE], [10, 11, 12])
    assert result.error == "stream carried no generated tokens"


def test_chat_role_chunk_is_not_a_token_and_reasoning_counts():
    def chat(delta, ct):
        return event(
            {
                "choices": [{"index": 0, "delta": delta}],
                "usage": {"prompt_tokens": 7, "completion_tokens": ct},
            }
        )

    stream = [
        chat({"role": "assistant", "content": ""}, 0),
        chat({"reasoning_content": "hm"}, 1),
        chat({"content": "ok"}, 3),
        DONE,
    ]
    result = run(stream, [5, 10, 30, 31, 32])
    assert result.chunk_ns == [10, 30]
    assert result.chunk_tokens == [1, 2]
    # without usage, reasoning and content deltas both count as text; the empty role one not
    bare = [
        event({"choices": [{"index": 0, "delta": d}]})
        for d in ({"role": "assistant"}, {"reasoning_content": "hm"}, {"content": "ok"})
    ]
    assert run([*bare, DONE], [5, 10, 30, 31, 32]).chunk_ns == [10, 30]


def test_usage_only_final_chunk_with_new_tokens_is_attributed_to_its_arrival():
    stream = [completion_chunk("a", 5, 1), usage_chunk(5, 3), DONE]
    result = run(stream, [10, 20, 21, 22])
    assert result.chunk_ns == [10, 20]
    assert result.chunk_tokens == [1, 2]


def test_sse_comments_and_other_fields_are_ignored():
    parser = StreamParser()
    parser.feed(b": ping\n", 1)
    parser.feed(b"event: message\n", 2)
    parser.feed(completion_chunk("a", 1, 1), 3)
    parser.feed(DONE, 4)
    result = parser.finish(5)
    assert result.chunk_ns == [3] and result.error is None


def test_payload_asks_for_exact_length_and_per_chunk_usage():
    body = build_payload("completions", "m", "hi", 17)
    assert body["max_tokens"] == 17 and body["ignore_eos"] is True and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    chat = build_payload("chat", "m", "hi", 17)
    assert chat["messages"] == [{"role": "user", "content": "hi"}]
    assert chat["max_completion_tokens"] == 17


def test_a_read_is_stamped_once_and_every_line_it_completes_gets_its_time():
    """Blocks as the connection delivers them: two events in one read share that read's time;
    an event split over two reads arrived when its second part did."""
    first = completion_chunk("a", 10, 1) + b"\n" + completion_chunk("b", 10, 2) + b"\n"
    split = completion_chunk("c", 10, 3) + b"\n"
    blocks = [first, split[:7], split[7:], usage_chunk(10, 3) + b"\n\n" + DONE + b"\n"]

    async def reads():
        for b in blocks:
            yield b

    clock = ScriptedClock([100, 200, 300, 400, 500])
    result = asyncio.run(consume_stream(reads(), clock))
    assert result.error is None
    assert result.chunk_ns == [100, 100, 300]  # "c" completed by the third read, not the second
    assert result.chunk_tokens == [1, 1, 1]
    assert result.end_ns == 500 and clock.reads == 5


def test_malformed_bytes_are_reported_readably():
    parser = StreamParser()
    parser.feed(b"data: {not json \xff", 1)
    assert parser.finish(2).error == "malformed stream event: '{not json \ufffd'"


def test_lines_take_the_time_their_bytes_arrived_not_when_the_reader_ran():
    """Bytes that arrived at 100 and 200 (two events, then a third split over two pieces at
    300 and 400), read only afterwards in one block: each line gets the time of the piece that
    completed it, not the reader's clock."""
    import types

    import aiohttp

    from perfgate.measure.client import Arrivals

    pieces = [
        completion_chunk("a", 10, 1) + b"\n\n",
        completion_chunk("b", 10, 2) + b"\n\n",
        completion_chunk("c", 10, 3)[:9],
        completion_chunk("c", 10, 3)[9:] + b"\n\n" + usage_chunk(10, 3) + b"\n\n" + DONE + b"\n",
    ]

    async def go():
        protocol = types.SimpleNamespace(
            _reading_paused=False, pause_reading=lambda **_: None, resume_reading=lambda **_: None
        )
        content = aiohttp.StreamReader(protocol, 2**16, loop=asyncio.get_running_loop())
        with Arrivals(content) as arrivals:
            for t, piece in zip((100, 200, 300, 400), pieces, strict=True):
                content.feed_data(piece)
                arrivals.record(content.total_bytes, t)  # as the connection's protocol does
            content.feed_eof()
            reader_clock = ScriptedClock([900, 950])  # one read of everything, then the end
            return await consume_stream(content.iter_any(), reader_clock, None, arrivals)

    result = asyncio.run(go())
    assert result.error is None
    assert result.chunk_ns == [100, 200, 400]
    assert result.end_ns == 950


def test_a_session_stamps_arrivals_on_its_connections():
    """The stamping protocol is installed on this aiohttp (it builds its protocols from a
    factory perfgate can wrap); if an upgrade changes that, this fails instead of the stamps
    silently falling back to the readers' clocks."""
    import aiohttp

    from perfgate.measure.client import StampingHandler, new_session, stamp_arrivals

    async def go():
        assert stamp_arrivals(aiohttp.TCPConnector())
        async with new_session(4) as session:
            return session.connector._factory.func

    assert asyncio.run(go()) is StampingHandler
