"""Is a run fit to be measured at all? Checks on the records, before any verdict.

A run is invalid when any measured request failed, when the server's ``usage`` says a prompt
was not the asked length or an output was shorter (or longer) than asked, or when the server did
not report token counts so none of that could be checked. An invalid run exits with code 2 and
is never a pass, whatever its timings say.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from perfgate.documents.bench import Problem
from perfgate.documents.records import RequestRecord


def check_records(records: Sequence[RequestRecord]) -> list[Problem]:
    measured = [r for r in records if not r.warmup]
    problems: list[Problem] = []
    if not measured:
        return [Problem("no_requests", 0, "no request was measured")]

    failed = [r for r in measured if not r.ok]
    if failed:
        common = Counter(r.error for r in failed).most_common(3)
        shown = "; ".join(f"{n}x {err}" for err, n in common)
        problems.append(
            Problem(
                "failed_requests",
                len(failed),
                f"{len(failed)} of {len(measured)} requests failed: {shown} ({_which(failed)})",
            )
        )

    ok = [r for r in measured if r.ok]
    no_usage = [r for r in ok if r.prompt_tokens is None or r.output_tokens is None]
    if no_usage:
        problems.append(
            Problem(
                "missing_usage",
                len(no_usage),
                f"{len(no_usage)} requests came back without token counts (usage); perfgate "
                "cannot check their lengths. Use a server that honours "
                "stream_options.include_usage (vLLM does)",
            )
        )

    for kind, what, hint in (
        ("prompt", "prompts were not the asked length as the server counted them", ""),
        ("output", "outputs were not the asked length", "; is ignore_eos honoured by the server?"),
    ):
        bad = [
            r
            for r in ok
            if getattr(r, f"{kind}_tokens") is not None
            and getattr(r, f"{kind}_tokens") != getattr(r, f"expected_{kind}_tokens")
        ]
        if bad:
            r = bad[0]
            problems.append(
                Problem(
                    f"{kind}_length_mismatch",
                    len(bad),
                    f"{len(bad)} {what} (e.g. request {r.index}: "
                    f"{getattr(r, f'{kind}_tokens')} tokens, asked "
                    f"{getattr(r, f'expected_{kind}_tokens')}){hint}",
                )
            )

    chunk_mismatch = [
        r
        for r in ok
        if r.chunk_tokens is not None
        and r.output_tokens is not None
        and sum(r.chunk_tokens) != r.output_tokens
    ]
    if chunk_mismatch:
        r = chunk_mismatch[0]
        problems.append(
            Problem(
                "token_count_mismatch",
                len(chunk_mismatch),
                f"{len(chunk_mismatch)} streams' chunks did not add up to their usage count "
                f"(e.g. request {r.index}: {sum(r.chunk_tokens or ())} streamed, "
                f"{r.output_tokens} reported)",
            )
        )
    return problems


def _which(records: Sequence[RequestRecord], most: int = 5) -> str:
    """The failed requests by their index in the workload (``--out``'s records say more)."""
    ids = [str(r.index) for r in records[:most]]
    more = f" and {len(records) - most} more" if len(records) > most else ""
    return ("request " if len(records) == 1 else "requests ") + ", ".join(ids) + more
