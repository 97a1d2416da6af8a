"""Accuracy phase: GPQA through lm-eval against an arm's running server, kept per question.

lm-eval does the evaluation (prompting, generation through ``local-completions`` /
``local-chat-completions``, filtering, scoring); perfgate supplies:

- the GPQA task as an lm-eval task config (chain-of-thought zero-shot prompt, as lm-eval's own
  ``gpqa_*_cot_zeroshot``) over one of three sources: the hub (gated; the user's token), a
  local copy in the hub's schema (CSV or JSONL), or the synthetic file bundled with perfgate
  (offline runs and tests; scores from it say nothing about a model);
- a choice order fixed per question (a hash of the question and ``shuffle_seed``), so both arms
  and every repeat see the same permutation whatever lm-eval's global random state or the
  datasets cache hold;
- an answer-extraction filter for reasoning models (``extract_answer``): GPT-OSS answers like
  ``**C**``, ``Answer: (C)`` or ``\\boxed{C}``, which lm-eval's stock GPQA regexes miss;
- ``k`` evaluations per arm, each with its own sampling seed (lm-eval sends one fixed seed by
  default, which would make repeats identical), and per-question, per-repeat correctness.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import json
import os
import random
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from perfgate import redact
from perfgate.documents.eval import AccuracyError, AccuracySpec, ArmAccuracy
from perfgate.serve.server_api import probe_server

BUNDLED_GPQA = Path(__file__).resolve().parent / "data" / "gpqa_synthetic.jsonl"
HUB_DATASET = "Idavidrein/gpqa"
HUB_SUBSETS = {"diamond": "gpqa_diamond", "main": "gpqa_main", "extended": "gpqa_extended"}
REQUIRED_COLUMNS = (
    "Question",
    "Correct Answer",
    "Incorrect Answer 1",
    "Incorrect Answer 2",
    "Incorrect Answer 3",
)
LETTERS = "ABCD"
NO_ANSWER = "[no answer]"

PROMPT = (
    "What is the correct answer to this question:{{Question}}\nChoices:\n(A) {{choice1}}\n"
    "(B) {{choice2}}\n(C) {{choice3}}\n(D) {{choice4}}\nLet's think step by step: "
)


# ---------------------------------------------------------------- answer extraction

_PATTERNS = [
    # priority order: the most explicit statement of a final answer wins
    re.compile(r"\\boxed\{\s*\(?([A-D])\)?\s*\}"),
    re.compile(
        r"(?i)\*{0,2}(?:final\s+)?answer\*{0,2}\s*(?:is|:)?\s*\*{0,2}\s*[\(\[]?([A-D])[\)\]]?"
        r"(?![A-Za-z])"
    ),
    re.compile(r"(?i)answer\s+is\s*:?\s*\*{0,2}\s*[\(\[]?([A-D])[\)\]]?(?![A-Za-z])"),
    re.compile(r"\*\*\s*\(?([A-D])\)?\s*\*\*"),
    re.compile(r"\(([A-D])\)"),
    re.compile(r"(?m)^\s*([A-D])[\.\)]?\s*$"),
]


def extract_answer(text: str | None) -> str | None:
    """The answer letter of a model's reply, or None. Within one pattern the last match wins
    (a reasoning model restates the options before concluding)."""
    if not text:
        return None
    for pattern in _PATTERNS:
        matches = pattern.findall(text)
        if matches:
            return str(matches[-1]).upper()
    return None


def extract_filter(resps: Sequence[Sequence[str]], docs: Sequence[Any]) -> list[list[str]]:
    """lm-eval ``custom`` filter: each response -> "(X)" (the target's shape) or NO_ANSWER."""
    out = []
    for per_doc in resps:
        letters = [extract_answer(r) for r in per_doc]
        out.append([f"({x})" if x else NO_ANSWER for x in letters])
    return out


# ---------------------------------------------------------------- dataset and task


def _clean(text: Any) -> str:
    if text is None:
        return " "
    return " ".join(str(text).strip().replace(" [title]", ". ").split())


def shuffled_choices(doc: dict[str, Any], seed: int) -> tuple[list[str], int]:
    """The four choices in an order fixed by the question text and ``seed``; index of the
    correct one."""
    choices = [
        _clean(doc["Incorrect Answer 1"]),
        _clean(doc["Incorrect Answer 2"]),
        _clean(doc["Incorrect Answer 3"]),
        _clean(doc["Correct Answer"]),
    ]
    digest = hashlib.sha256(f"{seed}\0{doc['Question']}".encode()).digest()
    order = list(range(4))
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
    shuffled = [choices[i] for i in order]
    return shuffled, order.index(3)


def make_process_docs(seed: int) -> Any:
    def process_docs(dataset: Any) -> Any:
        def one(doc: dict[str, Any]) -> dict[str, Any]:
            choices, correct = shuffled_choices(doc, seed)
            return {
                "choice1": choices[0],
                "choice2": choices[1],
                "choice3": choices[2],
                "choice4": choices[3],
                "choices": choices,
                "answer": f"({LETTERS[correct]})",
            }

        return dataset.map(one)

    return process_docs


def check_local_file(path: Path) -> None:
    """Fail fast on a missing or malformed local GPQA file, naming the row and the fix: every
    row must hold a question, its correct answer and three incorrect ones."""
    where = f"accuracy.path (--gpqa-path) {path}"
    if not path.exists():
        raise AccuracyError(
            f"{where} does not exist (give a CSV or JSONL file in the GPQA hub schema, or use "
            'source = "bundled")'
        )
    if path.is_dir():
        raise AccuracyError(f"{where} is a directory; give the CSV or JSONL file in it")
    if path.suffix not in (".csv", ".jsonl", ".json"):
        raise AccuracyError(f"{where} must be .csv or .jsonl")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise AccuracyError(f"{where} is not a UTF-8 text file (a CSV or JSONL file)") from None
    except OSError as exc:
        raise AccuracyError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    rows = _rows(text, path.suffix, where)
    if not rows:
        raise AccuracyError(
            f"{where} holds no questions (a header row at most); add rows in the GPQA schema"
        )
    for n, row in enumerate(rows, start=1):
        missing = [c for c in REQUIRED_COLUMNS if c not in row]
        if missing:
            raise AccuracyError(f"{where}: row {n} lacks the GPQA columns {missing}")
        empty = [c for c in REQUIRED_COLUMNS if not str(row[c] or "").strip()]
        if empty:
            raise AccuracyError(f"{where}: row {n} has empty {empty}; fill or remove the row")


def _rows(text: str, suffix: str, where: str) -> list[dict[str, Any]]:
    if suffix == ".csv":
        import csv
        import io

        return list(csv.DictReader(io.StringIO(text)))
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise AccuracyError(f"{where}: line {n} is not a JSON object") from None
        if not isinstance(row, dict):
            raise AccuracyError(f"{where}: line {n} is not a JSON object")
        rows.append(row)
    return rows


def preflight(spec: AccuracySpec) -> str:
    """Check lm-eval and the source before any server starts; returns a description of it."""
    if importlib.util.find_spec("lm_eval") is None:
        raise AccuracyError(
            "the accuracy phase needs lm-eval, which is not installed here: pip install "
            "'perfgate[eval]' (or lm-eval[api]), or leave accuracy out (--no-accuracy)"
        )
    if spec.source == "bundled":
        return f"bundled synthetic GPQA-format file ({BUNDLED_GPQA.name}; not real GPQA)"
    if spec.source == "local":
        if not spec.path:
            raise AccuracyError(
                'accuracy.path is required with source = "local" (or pass --gpqa-path FILE)'
            )
        check_local_file(Path(spec.path))
        return f"local file {spec.path}"
    if spec.source == "hub":
        if spec.subset not in HUB_SUBSETS:
            raise AccuracyError(
                f"accuracy.subset must be one of {sorted(HUB_SUBSETS)}, got {spec.subset!r}"
            )
        if not (
            os.environ.get("HF_TOKEN")
            or os.environ.get("HUGGING_FACE_HUB_TOKEN")
            or _hub_token_file()
        ):
            raise AccuracyError(
                f'accuracy.source = "hub": {HUB_DATASET} is gated and no Hugging Face token '
                "was found; accept its terms on the hub and set HF_TOKEN, or use a local copy "
                "(--gpqa-path FILE)"
            )
        return f"hub {HUB_DATASET} ({HUB_SUBSETS[spec.subset]})"
    raise AccuracyError(f"accuracy.source must be bundled, local or hub, got {spec.source!r}")


def _hub_token_file() -> bool:
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return (home / "token").exists()


def task_config(spec: AccuracySpec, name: str = "perfgate_gpqa") -> dict[str, Any]:
    """An lm-eval task config (the shape of its GPQA CoT zero-shot YAML) for ``spec``."""
    if spec.source == "hub":
        data: dict[str, Any] = {
            "dataset_path": HUB_DATASET,
            "dataset_name": HUB_SUBSETS[spec.subset],
        }
    else:
        path = Path(spec.path) if spec.source == "local" and spec.path else BUNDLED_GPQA
        kind = "csv" if path.suffix == ".csv" else "json"
        data = {"dataset_path": kind, "dataset_kwargs": {"data_files": {"train": str(path)}}}
    until = [] if spec.endpoint == "chat" else ["</s>"]
    return {
        "task": name,
        **data,
        "output_type": "generate_until",
        "process_docs": make_process_docs(spec.shuffle_seed),
        "training_split": "train",
        "validation_split": "train",
        "test_split": None,
        "doc_to_text": PROMPT,
        "doc_to_target": "answer",
        "filter_list": [
            {
                "name": "perfgate-extract",
                "filter": [
                    {"function": "custom", "filter_fn": extract_filter},
                    {"function": "take_first"},
                ],
            },
        ],
        "generation_kwargs": {
            "until": until,
            "do_sample": spec.temperature > 0,
            "temperature": spec.temperature,
            "max_gen_toks": spec.max_tokens,
        },
        "num_fewshot": 0,
        "metric_list": [
            {
                "metric": "exact_match",
                "aggregation": "mean",
                "higher_is_better": True,
                "ignore_case": True,
                "ignore_punctuation": True,
            }
        ],
        "metadata": {"version": 1.0},
    }


# ---------------------------------------------------------------- running lm-eval


def question_seed(seed: int, prompt: Any) -> int:
    """The sampling seed of one request: the evaluation's seed mixed with the prompt (token ids,
    text or chat messages), so every question gets its own random numbers, the same in both
    arms and on every rerun."""
    digest = hashlib.sha256(f"{seed}\0{json.dumps(prompt, sort_keys=True)}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class _SeedPerQuestion:
    """Mixed into lm-eval's local API models: lm-eval sends one ``seed`` with every request of
    an evaluation, and vLLM seeds each request's sampler with it, so every reply draws the same
    random numbers at the same position. Replies to different questions were then not
    independent draws: a model that gave every question the same answer distribution answered
    all of them alike within a seed (right on every question whose answer was A, wrong on every
    other), which the paired test, treating questions as independent, cannot know. Each request
    gets ``question_seed`` of the evaluation's seed and its own prompt instead."""

    def _create_payload(self, messages: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        payload: dict[str, Any] = super()._create_payload(messages, *args, **kwargs)  # type: ignore[misc]
        if payload.get("seed") is not None:
            payload["seed"] = question_seed(int(payload["seed"]), messages)
        return payload


def lm_eval_model(chat: bool, model_args: dict[str, Any]) -> Any:
    """lm-eval's ``local-completions`` (or ``local-chat-completions``) model with a seed per
    question (``_SeedPerQuestion``)."""
    from lm_eval.api.registry import get_model

    base = get_model("local-chat-completions" if chat else "local-completions")
    seeded: Any = type(f"SeedPerQuestion{base.__name__}", (_SeedPerQuestion, base), {})
    return seeded.create_from_arg_obj(
        model_args, {"batch_size": None, "max_batch_size": None, "device": None}
    )


def auth_header(base_url: str, api_key: str | None) -> tuple[str, dict[str, str] | None]:
    """The URL without user-info, and the Authorization header to send instead: lm-eval sets
    that header itself on every request, which HTTP clients refuse to combine with
    credentials in the URL. A bearer key wins over URL credentials."""
    parts = urlsplit(base_url)
    plain = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    if api_key:
        return plain, {"Authorization": f"Bearer {api_key}"}
    if parts.username is not None or parts.password is not None:
        pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        return plain, {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    return plain, None


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Everything written to stdout and stderr meanwhile, by Python or by C code, by handlers
    that libraries bound to the streams earlier, goes to ``log`` (appended, owner-only), and
    through perfgate's secret scrubbing afterwards. The process's streams are restored after."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        with (
            open(fd, "w", closefd=False) as text,
            contextlib.redirect_stdout(text),
            contextlib.redirect_stderr(text),
        ):
            yield
            text.flush()
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (*saved, fd):
            os.close(f)
        _scrub_file(log)


def _scrub_file(path: Path) -> None:
    data = path.read_bytes()
    clean = redact.scrub_bytes(data)
    if clean != data:
        path.write_bytes(clean)


def run_accuracy(
    spec: AccuracySpec,
    *,
    base_url: str,
    model: str,
    tokenizer: str | None,
    work_dir: Path,
    api_key: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ArmAccuracy:
    """``k`` lm-eval runs of the GPQA task against one server; per-question correctness.
    lm-eval's own output (progress bars, log lines) goes to ``work_dir/lm-eval.log``;
    ``progress(done, k)`` is called after each run."""
    source = preflight(spec)
    work_dir.mkdir(parents=True, exist_ok=True)
    log = work_dir / "lm-eval.log"
    with output_to(log):
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager

    # A datasets cache of the run's own, so nothing stale can change the documents.
    os.environ.setdefault("HF_DATASETS_CACHE", str(work_dir / "hf-datasets"))
    chat = spec.endpoint == "chat"
    path = "/v1/chat/completions" if chat else "/v1/completions"
    base_url, auth = auth_header(base_url, api_key)
    model_args: dict[str, Any] = {
        "model": model,
        "base_url": base_url.rstrip("/") + path,
        "num_concurrent": spec.num_concurrent,
        "max_retries": 3,
        "tokenized_requests": not chat,
    }
    if auth:
        model_args["header"] = auth
    if tokenizer and not chat:
        model_args["tokenizer"] = tokenizer
        model_args["tokenizer_backend"] = "huggingface"
    with output_to(log):
        lm = lm_eval_model(chat, model_args)
    result = ArmAccuracy(source=source, task="perfgate_gpqa", k=spec.k)
    rows: dict[str, list[int]] = {}
    for repeat in range(spec.k):
        gen_kwargs: dict[str, Any] = {"seed": repeat}
        if spec.reasoning_effort:
            gen_kwargs["reasoning_effort"] = spec.reasoning_effort
        with output_to(log):
            out = simple_evaluate(
                model=lm,
                tasks=[task_config(spec)],
                task_manager=TaskManager(include_defaults=False),
                limit=spec.limit,
                gen_kwargs=gen_kwargs,
                apply_chat_template=chat,
                log_samples=True,
                random_seed=spec.shuffle_seed,
                bootstrap_iters=0,
            )
        if out is None:
            raise AccuracyError(f"lm-eval returned no results (its log: {log})")
        if progress is not None:
            progress(repeat + 1, spec.k)
        samples = out["samples"]["perfgate_gpqa"]
        for s in samples:
            if s.get("filter") not in (None, "perfgate-extract"):
                continue
            qid = str(s["doc"].get("Record ID") or s["doc_id"])
            ok = int(float(s["exact_match"]) > 0)
            rows.setdefault(qid, []).append(ok)
            answer = s["filtered_resps"][0] if s.get("filtered_resps") else None
            result.no_answer += answer == NO_ANSWER
            result.samples.append(
                {
                    "question": qid,
                    "repeat": repeat,
                    "target": s["target"],
                    "answer": answer,
                    "correct": ok,
                    "response": (s["resps"][0][0] if s.get("resps") else None),
                }
            )
    result.questions = sorted(rows)
    result.correct = [rows[q] for q in result.questions]
    (work_dir / "samples.json").write_text(json.dumps(result.samples, indent=1))
    return result


def evaluate(
    spec: AccuracySpec,
    urls: dict[str, str],
    *,
    model: str | None,
    tokenizer: str | None,
    work_root: Path,
    api_key: str | None,
    say: Callable[[str], None],
) -> dict[str, ArmAccuracy]:
    """GPQA against each named server (``baseline``, optionally ``candidate``), each in
    ``work_root/eval-<name>``: each arm's answers, by name."""
    preflight(spec)
    arms: dict[str, ArmAccuracy] = {}
    for name, url in urls.items():
        info = probe_server(url, model, api_key)
        say(f"[{name}] GPQA x {spec.k} against {info.base_url} ({info.model})")
        arms[name] = run_accuracy(
            spec,
            base_url=info.base_url,
            model=info.model,
            tokenizer=tokenizer or info.root,
            work_dir=work_root / f"eval-{name}",
            api_key=api_key,
            progress=lambda done, k, name=name: say(f"[{name}] run {done}/{k} done"),  # type: ignore[misc]
        )
    return arms
