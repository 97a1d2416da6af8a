"""Bad input as a user meets it: each case is a command line, the exit code and the message it
must print, with no traceback and no server started. ``tests/test_bad_input.py`` runs every
case; ``tests/reliability_doc.py`` renders the same list into ``docs/reliability.md``, so the
document cannot drift from what is tested."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BASE = """\
name = "case"
model = "builtin:tiny-llama"
[server]
args = ["--max-model-len", "2048"]
[workload]
num_prompts = 4
input_len = 64
output_len = 16
[arms.baseline]
[arms.candidate]
"""


@dataclass(frozen=True)
class Case:
    id: str
    section: str  # the issue section it belongs to
    what: str  # the input, in words
    argv: Callable[[Path], list[str]]  # tmp dir -> the perfgate command line (after "perfgate")
    exit_code: int
    message: str  # must appear in the output, literally


def scenario(tmp: Path, text: str = BASE, name: str = "s.toml", data: bytes | None = None) -> str:
    path = tmp / name
    if data is not None:
        path.write_bytes(data)
    else:
        path.write_text(text)
    return str(path)


def compare(tmp: Path, text: str = BASE, *extra: str) -> list[str]:
    return ["compare", "--scenario", scenario(tmp, text), "--out-dir", str(tmp / "run"), *extra]


def _history(tmp: Path, text: str) -> str:
    path = tmp / "history.jsonl"
    path.write_text(text)
    return str(path)


_NIGHT = (
    '{"schema": "perfgate.history/1", "date": "2026-12-01", "commit": "c1", "fingerprint": {}, '
    '"metrics": {}, "verdict": "pass", "run_dir": null}'
)


def _baseline(tmp: Path, per_start: object) -> str:
    path = tmp / "baseline.json"
    metric = {"per_start": per_start, "tolerance": 0.02, "higher_is_better": False}
    doc = {
        "schema": "perfgate.baseline/1",
        "scenario": "case",
        "machine": {},
        "metrics": {"median_tpot_ms": metric},
    }
    path.write_text(json.dumps(doc))
    return str(path)


def gate(tmp: Path, baseline: str, history: str) -> list[str]:
    return [
        "gate", "--scenario", scenario(tmp), "--baseline", baseline, "--history", history,
        "--out-dir", str(tmp / "run"),
    ]  # fmt: skip


def _linked_history(tmp: Path) -> str:
    (tmp / "elsewhere.jsonl").write_text("")
    (tmp / "link.jsonl").symlink_to(tmp / "elsewhere.jsonl")
    return str(tmp / "link.jsonl")


_HELD: list[int] = []  # locks a case holds, as another gate would, until the test process ends


def _held_history(tmp: Path) -> str:
    """A history whose lock another process holds: a gate running on it right now."""
    import fcntl
    import os

    path = tmp / "held.jsonl"
    path.write_text(_NIGHT + "\n")
    fd = os.open(tmp / "held.jsonl.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"4242")
    _HELD.append(fd)
    return str(path)


def _huge_line_history(tmp: Path) -> str:
    path = tmp / "history.jsonl"
    path.write_text(_NIGHT + "\n" + '{"pad": "' + "x" * 2**20 + '"}\n')
    return str(path)


def with_(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


def gpqa(tmp: Path, name: str, text: str | None = None, data: bytes | None = None) -> str:
    path = tmp / name
    if data is not None:
        path.write_bytes(data)
    elif text is not None:
        path.write_text(text)
    else:
        path.mkdir()
    return str(path)


HEADER = "Question,Correct Answer,Incorrect Answer 1,Incorrect Answer 2,Incorrect Answer 3\n"


def _report_of(tmp: Path, doc: dict) -> list[str]:
    path = tmp / "r.json"
    path.write_text(json.dumps(doc))
    return ["report", str(path)]


def _bad_trace(tmp: Path) -> list[str]:
    path = tmp / "t.pt.trace.json"
    event = {"ph": "X", "cat": "kernel", "name": "k", "ts": 0, "dur": "fast"}
    path.write_text(json.dumps({"traceEvents": [event]}))
    return ["kernels", str(path)]


def _file(tmp: Path) -> Path:
    f = tmp / "a-file"
    f.write_text("x")
    return f


def crafted_result(tmp: Path, edit: Callable[[dict], None]) -> str:
    """A stored GPU result with one field rewritten, as a hostile file would be."""
    from perfgate.documents.io import read_json

    root = Path(__file__).resolve().parents[1]
    doc = read_json(root / "docs/gpu/results/h100-120b-tinygemm-broken.json.xz")
    edit(doc)
    path = tmp / "crafted.json"
    path.write_text(json.dumps(doc))
    return str(path)


def planted_link(tmp: Path, name: str) -> str:
    """A symbolic link at an output path, pointing at a file someone else owns."""
    (tmp / "victim").write_text("not yours to overwrite\n")
    (tmp / name).symlink_to(tmp / "victim")
    return str(tmp / name)


def _run_dir_with_link(tmp: Path) -> list[str]:
    run = tmp / "run"
    run.mkdir()
    planted_link(run, "report.md")
    return compare(tmp)


def _fifo(tmp: Path) -> str:
    import os

    os.mkfifo(tmp / "fifo")
    return str(tmp / "fifo")


BAD_INPUT = [
    # -- 4. bad input fails before any server starts
    Case(
        "model-path-missing",
        "4",
        "a local model path that does not exist",
        lambda t: compare(t, with_('model = "builtin:tiny-llama"', 'model = "/no/such/model"')),
        2,
        "model: /no/such/model does not exist",
    ),
    Case(
        "serve-model-missing",
        "4",
        "`bench --serve` of a model path that does not exist",
        lambda t: ["bench", "--serve", "./no/such/model", "--num-prompts", "1"],
        2,
        "--serve: ./no/such/model does not exist",
    ),
    Case(
        "bench-client-processes-zero",
        "4",
        "`bench --client-processes 0`",
        lambda t: ["bench", "--url", "http://127.0.0.1:9", "--client-processes", "0"],
        2,
        "'0': give \"auto\" or a number of processes, 1 or more",
    ),
    Case(
        "scenario-client-processes-zero",
        "4",
        "a scenario's `workload.client_processes = 0`",
        lambda t: compare(t, with_("output_len = 16\n", "output_len = 16\nclient_processes = 0\n")),
        2,
        "workload.client_processes must be an integer >= 1 (at most 256), got 0",
    ),
    Case(
        "gpqa-header-only",
        "4",
        "a GPQA file with only its header row",
        lambda t: compare(t, BASE, "--gpqa-path", gpqa(t, "q.csv", HEADER)),
        2,
        "holds no questions (a header row at most)",
    ),
    Case(
        "gpqa-empty-answer",
        "4",
        "a GPQA row with an empty answer",
        lambda t: compare(t, BASE, "--gpqa-path", gpqa(t, "q.csv", HEADER + "Q?,a,,c,d\n")),
        2,
        "row 1 has empty ['Incorrect Answer 1']",
    ),
    Case(
        "longer-than-max-model-len",
        "4",
        "input_len + output_len larger than the --max-model-len the scenario passes",
        lambda t: compare(t, with_('"2048"', '"64"')),
        2,
        "input_len + workload.output_len = 64 + 16 = 80 tokens exceeds --max-model-len 64",
    ),
    Case(
        "longer-than-cli-max-model-len",
        "4",
        "the same through `--candidate-arg=--max-model-len=32`",
        lambda t: compare(t, BASE, "--candidate-arg=--max-model-len=32"),
        2,
        "exceeds --max-model-len 32 in the candidate's server arguments",
    ),
    Case(
        "num-prompts-float",
        "4",
        "`num_prompts = 1e26`",
        lambda t: compare(t, with_("num_prompts = 4", "num_prompts = 1e26")),
        2,
        "workload.num_prompts must be an integer >= 1 (at most 1000000), got 1e+26",
    ),
    Case(
        "input-len-huge",
        "4",
        "`input_len = 2**63 - 1`",
        lambda t: compare(t, with_("input_len = 64", "input_len = 9223372036854775807")),
        2,
        "workload.input_len must be an integer >= 1 (at most 10000000)",
    ),
    Case(
        "env-key-with-equals",
        "4",
        "an environment key holding '='",
        lambda t: compare(t, with_("[arms.candidate]", '[arms.candidate]\nenv = { "A=B" = "1" }')),
        2,
        "'A=B' is not a valid environment variable name",
    ),
    Case(
        "env-value-nul",
        "4",
        "a NUL byte in an environment value",
        lambda t: compare(
            t, with_("[arms.candidate]", '[arms.candidate]\nenv = { A = "x\\u0000y" }')
        ),
        2,
        "the value of A holds a NUL byte",
    ),
    Case(
        "arg-nul",
        "4",
        "a NUL byte in a server argument",
        lambda t: compare(t, with_("[arms.candidate]", '[arms.candidate]\nargs = ["--x\\u0000"]')),
        2,
        "holds a NUL byte, which no command line can carry",
    ),
    Case(
        "port-in-args",
        "4",
        "`--port` among the server arguments",
        lambda t: compare(t, BASE, "--candidate-arg=--port=8000"),
        2,
        "--port in the server arguments: perfgate gives each server start a free port",
    ),
    Case(
        "empty-kernel-pattern",
        "4",
        '`expect_kernels = [""]`',
        lambda t: compare(t, BASE + '[profile.candidate]\nexpect_kernels = [""]\n'),
        2,
        "matches every name (it matches the empty string)",
    ),
    Case(
        "window-metric-without-profile",
        "4",
        "a threshold on `device_time_per_step_us` with `[profile]` off",
        lambda t: compare(t, BASE + "[thresholds]\ndevice_time_per_step_us = 0.01\n"),
        2,
        "thresholds.device_time_per_step_us is read from each server start's profiled window; "
        "turn it on with [profile] enabled = true (or --profile)",
    ),
    Case(
        "url-arm-profile-without-trace-dir",
        "4",
        "`--profile` with a running server (url) and no `trace_dir`",
        lambda t: compare(t, BASE, "--profile", "--candidate-url", "http://127.0.0.1:9"),
        2,
        "arms.candidate is a running server (url) and [profile] is on: set "
        "arms.candidate.trace_dir",
    ),
    Case(
        "pin-cpus-value",
        "4",
        '`[server] pin_cpus = "sometimes"`',
        lambda t: compare(t, with_("[server]\n", '[server]\npin_cpus = "sometimes"\n')),
        2,
        "server.pin_cpus must be true, false or \"auto\", got 'sometimes'",
    ),
    Case(
        "name-traversal",
        "4",
        'scenario `name = "../../x"`',
        lambda t: compare(t, with_('name = "case"', 'name = "../../x"')),
        2,
        "name must be 1-64 letters, digits, '.', '_' or '-'",
    ),
    Case(
        "name-markup",
        "4",
        "a scenario name with a newline and `<script>`",
        lambda t: compare(t, with_('name = "case"', 'name = "a\\n<script>"')),
        2,
        "name must be 1-64 letters",
    ),
    # -- 5. messages, never tracebacks, and the right cause first
    Case(
        "markup-in-path",
        "5",
        "`--scenario '[bold]x.toml'` (no such file)",
        lambda t: ["compare", "--scenario", "[bold]x.toml"],
        2,
        "[bold]x.toml: no such scenario file",
    ),
    Case(
        "markup-closing-tag",
        "5",
        "`--candidate-env '[/x]'`",
        lambda t: compare(t, BASE, "--candidate-env", "[/x]"),
        2,
        "--candidate-env takes KEY=VALUE, got '[/x]'",
    ),
    Case(
        "bracketed-words",
        "5",
        "a scenario without arms (the message names [arms.baseline])",
        lambda t: compare(t, 'model = "m"\n'),
        2,
        "every scenario has a [arms.baseline] and an [arms.candidate] table",
    ),
    Case(
        "binary-scenario",
        "5",
        "a binary scenario file",
        lambda t: ["compare", "--scenario", scenario(t, data=b"\x89PNG\x00\xff\xfe")],
        2,
        "not a UTF-8 text file",
    ),
    Case(
        "long-unicode-name",
        "5",
        "a 300-character unicode scenario name",
        lambda t: compare(t, with_('name = "case"', f'name = "{"ü" * 300}"')),
        2,
        "name must be 1-64 letters",
    ),
    Case(
        "negative-seed",
        "5",
        "`bench --seed -1`",
        lambda t: ["bench", "--seed", "-1"],
        2,
        "--seed",
    ),
    Case(
        "empty-scenario-path",
        "5",
        '`--scenario ""`',
        lambda t: ["compare", "--scenario", ""],
        2,
        "--scenario is empty; give a built-in scenario's name",
    ),
    Case(
        "scenario-neither-file-nor-name",
        "5",
        "`--scenario gpt-oss-12b` (a typo: no such file, no such built-in)",
        lambda t: ["compare", "--scenario", "gpt-oss-12b"],
        2,
        "--scenario 'gpt-oss-12b' is neither a file nor a built-in scenario; built-in: demo-cpu",
    ),
    Case(
        "scenario-is-a-directory",
        "5",
        "`--scenario` naming a directory",
        lambda t: ["compare", "--scenario", str(t)],
        2,
        "is a directory, not a scenario file",
    ),
    Case(
        "out-dir-under-a-file",
        "5",
        "`--out-dir` under a file",
        lambda t: [*compare(t)[:3], "--out-dir", str(_file(t) / "run")],
        2,
        "a-file is a file, not a directory",
    ),
    Case(
        "report-missing-keys",
        "5",
        "`perfgate report` on a compare file missing keys",
        lambda t: _report_of(t, {"schema": "perfgate.compare/1", "status": "complete"}),
        2,
        "compare result: missing key 'scenario'",
    ),
    Case(
        "report-future-schema",
        "5",
        "`perfgate report` on a file of an unknown schema version",
        lambda t: _report_of(t, {"schema": "perfgate.compare/2"}),
        2,
        "schema 'perfgate.compare/2' is not one this perfgate",
    ),
    Case(
        "kernels-malformed-event",
        "5",
        "`perfgate kernels` on a trace with a malformed event",
        _bad_trace,
        2,
        "traceEvents[0] ('k'): dur is 'fast', not a number",
    ),
    Case(
        "gpqa-binary",
        "5",
        "a binary `--gpqa-path`",
        lambda t: compare(t, BASE, "--gpqa-path", gpqa(t, "q.csv", data=b"\xff\xfe\x00bin")),
        2,
        "is not a UTF-8 text file",
    ),
    Case(
        "gpqa-directory",
        "5",
        "a directory as `--gpqa-path`",
        lambda t: compare(t, BASE, "--gpqa-path", gpqa(t, "q.csv")),
        2,
        "Invalid value for '--gpqa-path'",
    ),
    Case(
        "request-rate-tiny",
        "5",
        "`--request-rate 1e-300` (would hang)",
        lambda t: ["bench", "--request-rate", "1e-300", "--num-prompts", "2"],
        2,
        "--request-rate 1e-300 with 2 prompts would take about forever",
    ),
    Case(
        "ttft-timeout-zero",
        "4",
        "`--ttft-timeout 0`",
        lambda t: ["bench", "--ttft-timeout", "0", "--num-prompts", "2"],
        2,
        "--ttft-timeout must be above 0 and at most 86400 s, got 0 (leave it out for no deadline)",
    ),
    Case(
        "scenario-request-timeout-negative",
        "4",
        "a scenario's `workload.request_timeout_s = -1`",
        lambda t: compare(
            t, with_("output_len = 16\n", "output_len = 16\nrequest_timeout_s = -1\n")
        ),
        2,
        "workload.request_timeout_s must be a number in [0.001, 86400], got -1",
    ),
    Case(
        "percentiles-empty",
        "5",
        '`--metric-percentiles ","`',
        lambda t: ["bench", "--metric-percentiles", ","],
        2,
        "--metric-percentiles",
    ),
    Case(
        "empty-thresholds",
        "5",
        "an empty `[thresholds]` table",
        lambda t: compare(t, BASE + "[thresholds]\n"),
        2,
        "thresholds is empty, so nothing would be gated",
    ),
    # -- 2. nothing measured is lost: output paths are checked before any work
    Case(
        "bench-out-under-a-file",
        "2",
        "`bench --out /etc/hostname/r.json` (a file as the directory)",
        lambda t: ["bench", "--out", str(_file(t) / "r.json")],
        2,
        "a-file is a file, not a directory",
    ),
    Case(
        "bench-out-is-a-directory",
        "2",
        "`bench --out` naming a directory",
        lambda t: ["bench", "--out", str(t)],
        2,
        "Invalid value for '--out'",
    ),
    Case(
        "eval-out-under-a-file",
        "2",
        "`eval --out` under a file",
        lambda t: ["eval", "--url", "http://127.0.0.1:9", "--out", str(_file(t) / "e.json")],
        2,
        "a-file is a file, not a directory",
    ),
    Case(
        "budget-unreadable",
        "4",
        "`--budget` that is neither starts nor a wall time",
        lambda t: compare(t, BASE, "--budget", "soon"),
        2,
        "--budget: budget 'soon': 'soon' is neither a number of starts (8) nor a wall time",
    ),
    Case(
        "budget-one-start",
        "4",
        "a budget of one start per arm",
        lambda t: compare(t, with_("[arms.baseline]", '[compare]\nbudget = "1"\n[arms.baseline]')),
        2,
        "compare.budget: budget '1': most starts per arm must be 2..200",
    ),
    Case(
        "repeats-replaced",
        "4",
        "`--repeats` (replaced by starts)",
        lambda t: compare(t, BASE, "--repeats", "4"),
        2,
        "--repeats was replaced: the unit is now the server start",
    ),
    Case(
        "primary-not-gated",
        "4",
        "a primary metric that is not gated",
        lambda t: compare(
            t, with_("[arms.baseline]", '[compare]\nprimary = ["p99_ttft_ms"]\n[arms.baseline]')
        ),
        2,
        "compare.primary: 'p99_ttft_ms' is not a gated metric",
    ),
    Case(
        "history-cut-short",
        "6",
        "`perfgate gate` with a history whose last night was cut short",
        lambda t: gate(t, _baseline(t, [3.0, 3.1]), _history(t, _NIGHT + "\n" + _NIGHT[:50])),
        2,
        "history.jsonl:2: cut short (a night whose writing was interrupted)",
    ),
    Case(
        "history-symlink",
        "6",
        "`perfgate gate` with `--history` a symbolic link",
        lambda t: gate(t, _baseline(t, [3.0, 3.1]), _linked_history(t)),
        2,
        "link.jsonl: a symbolic link",
    ),
    Case(
        "history-locked",
        "6",
        "`perfgate gate` on a history another gate is using (its lock held)",
        lambda t: gate(t, _baseline(t, [3.0, 3.1]), _held_history(t)),
        2,
        "held.jsonl: another perfgate gate is using this history (pid 4242",
    ),
    Case(
        "history-huge-line",
        "6",
        "`perfgate gate` on a history with a line of over a million characters",
        lambda t: gate(t, _baseline(t, [3.0, 3.1]), _huge_line_history(t)),
        2,
        "history.jsonl:2: 1048587 characters, more than a night's record can hold (1048576)",
    ),
    Case(
        "history-command-without-scenario",
        "6",
        "`perfgate history` with no scenario to take the tolerances from",
        lambda t: ["history", _history(t, _NIGHT + "\n")],
        2,
        "give exactly one of --scenario NAME|FILE or --model NAME (its [thresholds] and [gate] "
        "judge the history",
    ),
    Case(
        "baseline-string-values",
        "6",
        "a baseline whose per-start values are a string",
        lambda t: gate(t, _baseline(t, "12"), str(t / "h.jsonl")),
        2,
        "metrics.median_tpot_ms.per_start must be a list of numbers",
    ),
    Case(
        "baseline-negative-values",
        "6",
        "a baseline with a negative per-start value",
        lambda t: gate(t, _baseline(t, [3.0, -1.0]), str(t / "h.jsonl")),
        2,
        "metrics.median_tpot_ms.per_start must hold finite positive values",
    ),
    Case(
        "report-text-where-a-number-belongs",
        "7",
        "`perfgate report` of a results.json whose kernel check's `calls` is HTML, not a number",
        lambda t: [
            "report",
            crafted_result(t, lambda d: d["profile"]["checks"][0].update(calls="<img src=x>")),
        ],
        2,
        "profile.checks: calls must be an integer (or null), got '<img src=x>'",
    ),
    Case(
        "report-hostile-text",
        "7",
        "`perfgate report` of a results.json whose scenario description is raw HTML and an "
        "@mention (every text field: tests/test_hostile_results.py)",
        lambda t: [
            "report",
            crafted_result(t, lambda d: d["scenario"].update(description="<b>hi</b> @alice")),
        ],
        0,
        "&lt;b&gt;hi&lt;/b&gt; &#64;alice",
    ),
    Case(
        "link-bench-out",
        "2",
        "`bench --out` a symbolic link (planted at the output path)",
        lambda t: ["bench", "--url", "http://127.0.0.1:9", "--out", planted_link(t, "r.json")],
        2,
        "r.json: a symbolic link (perfgate never writes through or over a link)",
    ),
    Case(
        "link-bench-timeline",
        "2",
        "`bench --timeline` a symbolic link",
        lambda t: ["bench", "--url", "http://127.0.0.1:9", "--timeline", planted_link(t, "t.png")],
        2,
        "t.png: a symbolic link (perfgate never writes through or over a link)",
    ),
    Case(
        "link-eval-out",
        "2",
        "`eval --out` a symbolic link",
        lambda t: ["eval", "--url", "http://127.0.0.1:9", "--out", planted_link(t, "e.json")],
        2,
        "e.json: a symbolic link (perfgate never writes through or over a link)",
    ),
    Case(
        "link-compare-junit",
        "2",
        "`compare --junit` a symbolic link",
        lambda t: [*compare(t), "--junit", planted_link(t, "j.xml")],
        2,
        "j.xml: a symbolic link (perfgate never writes through or over a link)",
    ),
    Case(
        "link-gate-junit",
        "2",
        "`gate --junit` a symbolic link",
        lambda t: [
            *gate(t, _baseline(t, [3.0]), str(t / "h.jsonl")),
            "--junit",
            planted_link(t, "j.xml"),
        ],
        2,
        "j.xml: a symbolic link (perfgate never writes through or over a link)",
    ),
    Case(
        "link-baseline-out",
        "2",
        "`baseline record --out` a symbolic link",
        lambda t: [
            "baseline",
            "record",
            str(Path(__file__).resolve().parents[1] / "docs/gpu/results/h100-120b-aa.json.xz"),
            "--out",
            planted_link(t, "b.json"),
        ],
        2,
        "b.json: a symbolic link (perfgate never writes through or over a link)",
    ),
    Case(
        "link-report-in-out-dir",
        "2",
        "a symbolic link planted as report.md in `--out-dir`",
        _run_dir_with_link,
        2,
        "report.md there is a symbolic link (perfgate never writes through or over a link)",
    ),
    Case(
        "fifo-bench-out",
        "2",
        "`bench --out` a FIFO",
        lambda t: ["bench", "--url", "http://127.0.0.1:9", "--out", _fifo(t)],
        2,
        "not a regular file (a FIFO, socket or device)",
    ),
]
