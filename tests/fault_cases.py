"""Faults while measuring, and what perfgate does about each: the exit code, the message, what
results.json keeps. Every case is asserted by a test that names it (``tests/test_faults.py``
with the scripted server, ``tests/e2e/test_faults_real_vllm.py`` with real CPU vLLM), and
``tests/reliability_doc.py`` renders this list into ``docs/reliability.md``."""

from __future__ import annotations

from dataclasses import dataclass

SCRIPTED = "scripted server"
REAL = "real vLLM (CPU)"


@dataclass(frozen=True)
class Fault:
    id: str
    what: str
    against: str  # SCRIPTED or REAL
    exit_code: int
    message: str  # must appear in perfgate's output
    kept: str  # what the result file holds afterwards


FAULTS = [
    Fault(
        "http500",
        "every request answers HTTP 500",
        SCRIPTED,
        2,
        "4 of 4 requests failed: 4x HTTP 500",
        "every request's record, with its error; `valid: false`",
    ),
    Fault(
        "http429",
        "every request answers HTTP 429 (rate limited)",
        SCRIPTED,
        2,
        "4 of 4 requests failed: 4x HTTP 429",
        "every request's record, with its error; `valid: false`",
    ),
    Fault(
        "malformed",
        "a stream sends a line that is not JSON",
        SCRIPTED,
        2,
        "4x malformed stream event: '{not json'",
        "every request's record, with its error; `valid: false`",
    ),
    Fault(
        "bad-event-once",
        "one request of 24 gets an event that is JSON but not a stream event "
        '(`data: {"choices": [1]}`), with one or two client processes',
        SCRIPTED,
        2,
        "1 of 24 requests failed: 1x unexpected stream event: '{\"choices\": [1]}' (request ",
        "the 23 good records and the failed one, with its error; `valid: false`",
    ),
    Fault(
        "keepalive",
        "a stream sends SSE keepalive comments every 0.2 s but no token past the stall timeout "
        "(`--stall-timeout 1`)",
        SCRIPTED,
        2,
        "4x no token for 1 s while the server kept the stream open",
        "every request's record, with the chunk that arrived; `valid: false`",
    ),
    Fault(
        "late_first",
        "a stream sends SSE keepalive comments but no first token past the first-token "
        "deadline (`--ttft-timeout 1`; the stall timeout is far off)",
        SCRIPTED,
        2,
        "4x no first token within 1 s of the send (the first-token deadline: --ttft-timeout",
        "every request's record, with its error; `valid: false`",
    ),
    Fault(
        "trickle",
        "a stream sends a token every 0.3 s, never stalling, past the request deadline "
        "(`--request-timeout 1`), with one or two client processes",
        SCRIPTED,
        2,
        "4x not finished within 1 s of the send (the request deadline: --request-timeout",
        "every request's record, with the tokens that arrived in time; `valid: false`",
    ),
    Fault(
        "bench-signal",
        "`bench` gets SIGTERM, or SIGINT in a job started with SIGINT ignored, mid-run",
        SCRIPTED,
        2,
        "interrupted: N of 400 measured requests had finished (kept here)",
        "the requests that finished; `valid: false`, problem `interrupted`",
    ),
    Fault(
        "models_not_json",
        "`/v1/models` answers with something that is not JSON (a proxy's HTML page)",
        SCRIPTED,
        2,
        "answered with something that is not JSON ('<html>proxy error</html>')",
        "nothing measured yet: no file",
    ),
    Fault(
        "version_not_json",
        "`/version` answers bytes that are not JSON (not every server has it)",
        SCRIPTED,
        0,
        "Successful requests",
        "a valid run, the server's version unknown",
    ),
    Fault(
        "metrics_not_utf8",
        "`/metrics` carries bytes that are not UTF-8",
        SCRIPTED,
        0,
        "Successful requests",
        "a valid run; the cross-check reads the rest of /metrics",
    ),
    Fault(
        "tokenize_odd",
        "`/tokenize` answers JSON without integer tokens or count",
        SCRIPTED,
        2,
        "answered without a list 'tokens'",
        "nothing measured yet: no file",
    ),
    Fault(
        "drop",
        "the server drops the connection mid-stream",
        SCRIPTED,
        2,
        "4x the server closed the connection mid-stream",
        "every request's record, with the chunks that arrived; `valid: false`",
    ),
    Fault(
        "stall",
        "a stream stalls past the stall timeout (`--stall-timeout 1`)",
        SCRIPTED,
        2,
        "4x the server sent nothing for 1 s (the stall timeout",
        "every request's record, with its error; `valid: false`",
    ),
    Fault(
        "no_metrics",
        "the server has no /metrics",
        SCRIPTED,
        0,
        "warning: the server has no /metrics",
        "the full result; the warning `no_server_metrics`; no cross-check rows",
    ),
    Fault(
        "wrong_usage",
        "usage reports one token more than the stream carried",
        SCRIPTED,
        2,
        "4 outputs were not the asked length (e.g. request 0: 9 tokens, asked 8)",
        "every request's record; the /metrics cross-check disagreeing; `valid: false`",
    ),
    Fault(
        "out-unwritable-at-the-end",
        "`bench --out` cannot be written once the run is over (disk full)",
        SCRIPTED,
        0,
        "the result was saved to",
        "the full result, in a private temporary file the message names",
    ),
    Fault(
        "compare-candidate-fails",
        "compare of two running servers (URL arms) whose candidate answers HTTP 500",
        SCRIPTED,
        2,
        "candidate repeat 1 is invalid: 4 of 4 requests failed: 4x HTTP 500",
        "the baseline's repeat and the candidate's failed one; `status: invalid`",
    ),
    Fault(
        "never-healthy",
        "a server whose /health never answers 200",
        SCRIPTED,
        2,
        "was not healthy after 3 s (raise the start-up timeout if it is still loading)",
        "its log; no process of its group is left",
    ),
    Fault(
        "port-taken",
        "the port a server is to use is already taken",
        SCRIPTED,
        2,
        "is already in use by another process",
        "nothing started",
    ),
    Fault(
        "killed-mid-repeat",
        "the candidate's vLLM is killed (SIGKILL) during its repeat",
        REAL,
        2,
        "server 'candidate' was killed by signal 9 (SIGKILL) during the run",
        "the baseline's repeats; `status: failed`; report.md; no vLLM process left",
    ),
    Fault(
        "exits-during-start-up",
        "the candidate's vLLM exits during start-up (an unknown argument)",
        REAL,
        2,
        "server 'candidate' exited with code",
        "the baseline's repeat, the log's tail and path; `status: failed`",
    ),
    Fault(
        "ctrl-c-during-start-up",
        "Ctrl-C while a server starts",
        REAL,
        2,
        "interrupted",
        "`status: interrupted`; no vLLM process left",
    ),
    Fault(
        "ctrl-c-during-accuracy",
        "Ctrl-C during the accuracy phase (lm-eval running)",
        REAL,
        2,
        "interrupted",
        "every timed repeat; `status: interrupted`; no vLLM process left",
    ),
    Fault(
        "ctrl-c-during-profiling",
        "Ctrl-C during a start's profiled window",
        REAL,
        2,
        "interrupted",
        "every timed repeat; `status: interrupted`; no vLLM process left",
    ),
]

BY_ID = {f.id: f for f in FAULTS}
