"""``perfgate eval``: GPQA against one server, or two paired by question."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.text import Text

from perfgate import redact
from perfgate.accuracy import evaluate
from perfgate.cli.common import (
    err_console,
    fail,
    served_model,
    served_model_option,
    show_markdown,
)
from perfgate.decide.accuracy import compare_arms
from perfgate.decide.verdict import overall
from perfgate.documents.compare import EXIT_FOR, INVALID, PASS
from perfgate.documents.eval import AccuracyError, AccuracySpec, EvalRun
from perfgate.documents.io import (
    ResultError,
    check_output_file,
    jsonable,
    write_json_or_fallback,
)
from perfgate.report.accuracy_md import render_accuracy_section
from perfgate.serve.server_api import EndpointError

EXIT_PASS, EXIT_INVALID = EXIT_FOR[PASS], EXIT_FOR[INVALID]


@click.command("eval")
@click.option("--url", required=True, help="The (baseline) server.")
@click.option(
    "--candidate-url", default=None, help="A second server: compare the two, paired by question."
)
@served_model_option
@click.option(
    "--tokenizer",
    default=None,
    help="Tokenizer (path or hub id) for --endpoint completions; default: the model's "
    "path as the server reports it.",
)
@click.option(
    "--source",
    type=click.Choice(["bundled", "local", "hub"]),
    default="bundled",
    show_default=True,
    help="GPQA source: perfgate's synthetic file, a local copy, or the gated hub dataset.",
)
@click.option("--gpqa-path", default=None, help="Local GPQA file (implies --source local).")
@click.option(
    "--subset",
    type=click.Choice(["diamond", "main", "extended"]),
    default="diamond",
    show_default=True,
    help="GPQA subset (the hub's gpqa_diamond, gpqa_main or gpqa_extended).",
)
@click.option(
    "--k",
    "k",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Evaluations per server, each with its own seed.",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="First N questions.")
@click.option(
    "--endpoint",
    type=click.Choice(["completions", "chat"]),
    default="completions",
    show_default=True,
    help="The server's API: /v1/completions (the prompt as text) or /v1/chat/completions "
    "(the model's chat template; GPT-OSS needs it).",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0.0),
    default=0.0,
    show_default=True,
    help="Sampling temperature (0: greedy, and the k evaluations are replicas).",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Most tokens a reply may take (reasoning models need thousands).",
)
@click.option(
    "--reasoning-effort",
    type=click.Choice(["low", "medium", "high"]),
    default=None,
    help="GPT-OSS's reasoning effort (chat endpoint); default: the model's own.",
)
@click.option(
    "--num-concurrent",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Questions lm-eval sends at once.",
)
@click.option(
    "--max-drop",
    type=click.FloatRange(min=0.0, max=1.0),
    default=0.01,
    show_default=True,
    help="Tolerated accuracy drop (0.01 = 1 pp).",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the JSON result (per-question rows included) here.",
)
def eval_(
    url: str,
    candidate_url: str | None,
    model: str | None,
    model_alias: str | None,
    tokenizer: str | None,
    source: str,
    gpqa_path: str | None,
    subset: str,
    k: int,
    limit: int | None,
    endpoint: str,
    temperature: float,
    max_tokens: int,
    reasoning_effort: str | None,
    num_concurrent: int,
    max_drop: float,
    out_path: Path | None,
) -> None:
    """Accuracy alone (GPQA through lm-eval) against one server, or two compared by question.

    Exit codes: 0 pass (or one server measured), 1 the candidate's accuracy dropped beyond
    --max-drop, 2 invalid or failed, 3 inconclusive.

    \b
    Examples:
      perfgate eval --url http://127.0.0.1:8000 --out base.json
      perfgate eval --url http://127.0.0.1:8000 --candidate-url http://127.0.0.1:8001 --k 4
    """
    model = served_model(model, model_alias)
    spec = AccuracySpec(
        source="local" if gpqa_path else source,
        path=gpqa_path,
        subset=subset,
        k=k,
        limit=limit,
        endpoint=endpoint,
        temperature=temperature,
        max_tokens=max_tokens,
        reasoning_effort=reasoning_effort,
        num_concurrent=num_concurrent,
        max_drop=max_drop,
    )
    try:
        if out_path is not None:
            check_output_file(out_path, "--out")
        urls = {"baseline": url, **({"candidate": candidate_url} if candidate_url else {})}
        for server_url in urls.values():
            redact.register_url(server_url)
        arms = evaluate(
            spec,
            urls,
            model=model,
            tokenizer=tokenizer,
            work_root=out_path.parent if out_path else Path("reports"),
            api_key=redact.server_key((), {}, started=False),
            say=err_console.print,
        )
        paired = compare_arms(arms["baseline"], arms["candidate"], spec) if len(arms) == 2 else None
    except (AccuracyError, EndpointError, ResultError) as exc:
        fail(str(exc))
    run = EvalRun(spec, arms, paired)
    doc = run.to_json()
    written, problem = (None, None)
    if out_path is not None:
        written, problem = write_json_or_fallback(out_path, doc, "perfgate-eval")
    shown = EvalRun.from_json(jsonable(doc))  # as the file records it
    show_markdown("\n".join(render_accuracy_section(shown.arms, shown.comparison)))
    if problem is not None:
        err_console.print(Text.assemble(("warning:", "bold yellow"), f" {problem}"))
    if written is not None:
        err_console.print(f"result written to {written}")
    accuracy_verdict = None if run.comparison is None else run.comparison.verdict
    sys.exit(EXIT_FOR[overall([], accuracy_verdict)])
