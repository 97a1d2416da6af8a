"""A tiny model that knows its answers, and a damaged copy of it: the accuracy gate's proof.

The tiny random-weight Llama (``tinymodel``) answers gibberish, so an accuracy comparison
against it can only ever see 0% against 0%. This module teaches a copy of it perfgate's
bundled synthetic GPQA-format questions, exactly as lm-eval will prompt them (the chain-of-
thought zero-shot prompt, with the choice order of ``[accuracy] shuffle_seed``), to answer
``Answer: (X)`` and stop, with the correct letter at probability ``P_CORRECT`` and each other
letter at ``(1 - P_CORRECT) / 3``: served at temperature 1, it is right about 70% of the time,
and the sampling seed decides which time, so ``k`` evaluations are draws, not copies.

``build_degraded`` then adds Gaussian noise to one layer's weights (the way a faulty kernel or a
bad quantization reaches a model), scaled until the model's expected accuracy falls to a
target: a candidate with a real, known accuracy regression.

What these are: pipeline checks (lm-eval -> vLLM -> extraction -> the paired test -> the
verdict), not a measure of any real model. Trained on CPU in about a minute; cached like the
tiny model (a marker file records what was built). Needs torch, transformers and lm-eval.

Run as ``python -m perfgate.testmodels.taught TINY_MODEL_DIR OUT_DIR [DEGRADED_DIR]``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfgate.accuracy import output_to, task_config
from perfgate.documents.eval import AccuracySpec

P_CORRECT = 0.7  # the taught probability of the correct letter, per question
DEGRADED_ACCURACY = 0.4  # the damaged copy's expected accuracy
ANSWER_PREFIX = "Answer: ("
LETTERS = "ABCD"
MAX_STEPS = 400
SEED = 0
VERSION = 1  # of what is built here: a cached model of another version is built again
_MARKER = "perfgate-taught-model.json"


def _built(out_dir: Path) -> bool:
    marker = out_dir / _MARKER
    return marker.exists() and json.loads(marker.read_text()).get("version") == VERSION


@dataclass(frozen=True)
class Lesson:
    """The token ids the model is taught: each question's prompt as lm-eval sends it, the
    answer's fixed tokens around the letter, and which letter is correct."""

    prompts: list[list[int]]
    correct: list[int]  # index into LETTERS, per question
    prefix: list[int]  # "Answer: ("
    letters: list[int]  # the token of each of A, B, C, D
    suffix: list[int]  # ")" then the end-of-sequence token


def prompts_as_lm_eval_sends_them(shuffle_seed: int = 0) -> list[tuple[str, int]]:
    """(prompt text, index of the correct letter) for every bundled question, built by lm-eval
    from perfgate's GPQA task (so the prompt is byte for byte what the server will get)."""
    from lm_eval.tasks import TaskManager

    spec = AccuracySpec(shuffle_seed=shuffle_seed)
    with tempfile.TemporaryDirectory(prefix="perfgate-taught-") as tmp:
        previous = os.environ.get("HF_DATASETS_CACHE")
        os.environ["HF_DATASETS_CACHE"] = str(Path(tmp) / "datasets")
        try:
            with output_to(Path(tmp) / "lm-eval.log"):
                loaded = TaskManager(include_defaults=False).load([task_config(spec)])
                task = loaded["tasks"]["perfgate_gpqa"]
                task.build_all_requests(limit=None, rank=0, world_size=1)
        finally:
            if previous is None:
                os.environ.pop("HF_DATASETS_CACHE", None)
            else:
                os.environ["HF_DATASETS_CACHE"] = previous
    out = []
    for inst in task.instances:
        answer = inst.doc["answer"]  # "(C)"
        out.append((inst.args[0], LETTERS.index(answer.strip("()"))))
    return out


def lesson(tokenizer: Any, shuffle_seed: int = 0) -> Lesson:
    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False).input_ids)

    letters = []
    for letter in LETTERS:
        (one,) = ids(letter)  # each letter is one token of the tiny model's vocabulary
        letters.append(one)
    pairs = prompts_as_lm_eval_sends_them(shuffle_seed)
    return Lesson(
        prompts=[ids(text) for text, _ in pairs],  # no BOS: lm-eval's local-completions adds none
        correct=[c for _, c in pairs],
        prefix=ids(ANSWER_PREFIX),
        letters=letters,
        suffix=[*ids(")"), tokenizer.eos_token_id],
    )


def _answers(les: Lesson, forced: list[int]) -> list[list[int]]:
    """Each question's answer tokens, with letter ``forced[q]``."""
    return [[*les.prefix, les.letters[f], *les.suffix] for f in forced]


def _answer_log_probs(model: Any, les: Lesson, forced: list[int]) -> Any:
    """Log-probabilities over the vocabulary at each answer position, the answer teacher-
    forced with letter ``forced[q]`` after each prompt (right-padded): [question, position,
    vocab], the position before each answer token (the lm head only there)."""
    import torch

    rows = [[*p, *a] for p, a in zip(les.prompts, _answers(les, forced), strict=True)]
    ids = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    length = len(rows[0]) - len(les.prompts[0])
    index = torch.tensor([[len(p) - 1 + j for j in range(length)] for p in les.prompts])
    picked = hidden[torch.arange(len(rows))[:, None], index]
    return torch.log_softmax(model.lm_head(picked).float(), dim=-1)


def _correct_answer_log_probs(model: Any, les: Lesson) -> Any:
    """Log-probability of each token of each question's correct answer: [question, position]."""
    import torch

    with torch.no_grad():
        logp = _answer_log_probs(model, les, les.correct)
    targets = torch.tensor(_answers(les, les.correct))
    return logp.gather(-1, targets[..., None])[..., 0]


def expected_accuracy(model: Any, les: Lesson) -> tuple[float, list[float], float]:
    """Sampling at temperature 1: per question, P(the answer's fixed tokens) x P(the correct
    letter); their mean, the per-question values, and the least likely fixed token's
    probability (how surely the format holds)."""
    return _accuracy_of(_correct_answer_log_probs(model, les), len(les.prefix))


def _accuracy_of(token_logp: Any, at: int) -> tuple[float, list[float], float]:
    import torch

    fixed = torch.cat([token_logp[:, :at], token_logp[:, at + 1 :]], dim=1)
    per_q = (fixed.sum(dim=1) + token_logp[:, at]).exp()
    return float(per_q.mean()), [float(x) for x in per_q], float(fixed.exp().min())


def teach(model: Any, les: Lesson, *, p_correct: float = P_CORRECT, seed: int = SEED) -> int:
    """Train ``model`` in place until every question's correct letter sits within 0.02 of
    ``p_correct`` and the fixed tokens above 0.995; returns the steps taken."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    n = len(les.prompts)
    other = (1 - p_correct) / (len(LETTERS) - 1)
    soft = torch.full((n, len(LETTERS)), other)
    soft[torch.arange(n), torch.tensor(les.correct)] = p_correct
    letter_ids = torch.tensor(les.letters)
    at = len(les.prefix)
    model.train()
    for step in range(1, MAX_STEPS + 1):
        # the letter teacher-forced this step is drawn from the target distribution, so the
        # closing tokens are learnt after every letter the model may sample
        forced = torch.multinomial(soft, 1, generator=gen)[:, 0].tolist()
        logp = _answer_log_probs(model, les, forced)
        targets = torch.tensor(_answers(les, forced))
        fixed = torch.cat([torch.arange(at), torch.arange(at + 1, targets.shape[1])])
        hard = -logp[:, fixed].gather(-1, targets[:, fixed, None]).mean()
        letter = -(soft * logp[:, at][:, letter_ids]).sum(-1).mean()
        loss = hard + letter
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0:
            model.eval()
            token_logp = _correct_answer_log_probs(model, les)  # one pass for both checks
            letter_p = token_logp[:, at].exp().tolist()
            _, _, format_p = _accuracy_of(token_logp, at)
            model.train()
            if max(abs(p - p_correct) for p in letter_p) < 0.02 and format_p > 0.995:
                model.eval()
                return step
    model.eval()
    raise RuntimeError(f"the tiny model did not learn its answers in {MAX_STEPS} steps")


def build_taught(tiny_dir: Path, out_dir: Path) -> Path:
    """Teach a copy of the tiny model (``tinymodel.build``) into ``out_dir``; skipped when
    already built there."""
    out_dir = Path(out_dir)
    if _built(out_dir):
        return out_dir
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    torch.manual_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = LlamaForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    les = lesson(tokenizer)
    steps = teach(model, les)
    accuracy, per_q, format_p = expected_accuracy(model, les)
    _save(model, tokenizer, out_dir, {
        "kind": "taught", "steps": steps, "p_correct": P_CORRECT,
        "expected_accuracy": accuracy, "least_likely_fixed_token": format_p,
        "per_question": per_q, "questions": len(les.prompts),
    })  # fmt: skip
    return out_dir


def build_degraded(taught_dir: Path, out_dir: Path, target: float = DEGRADED_ACCURACY) -> Path:
    """A copy of the taught model with Gaussian noise on layer 0's MLP down-projection, its
    scale found by bisection so the expected accuracy is ``target`` (within 0.01)."""
    out_dir = Path(out_dir)
    if _built(out_dir):
        return out_dir
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(taught_dir)
    model = LlamaForCausalLM.from_pretrained(taught_dir, dtype=torch.float32)
    les = lesson(tokenizer)
    weight = model.model.layers[0].mlp.down_proj.weight
    clean = weight.detach().clone()
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(SEED + 1))
    noise *= float(clean.std())
    lo, hi = 0.0, 8.0
    for _ in range(40):
        scale = (lo + hi) / 2
        with torch.no_grad():
            weight.copy_(clean + scale * noise)
        accuracy, per_q, format_p = expected_accuracy(model, les)
        if abs(accuracy - target) < 0.01:
            break
        lo, hi = (scale, hi) if accuracy > target else (lo, scale)
    else:
        raise RuntimeError(f"no noise scale brings the taught model to accuracy {target}")
    _save(model, tokenizer, out_dir, {
        "kind": "degraded", "layer": "model.layers.0.mlp.down_proj", "noise_scale": scale,
        "expected_accuracy": accuracy, "least_likely_fixed_token": format_p,
        "per_question": per_q, "questions": len(les.prompts),
    })  # fmt: skip
    return out_dir


def _save(model: Any, tokenizer: Any, out_dir: Path, facts: dict[str, Any]) -> None:
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    (partial / _MARKER).write_text(json.dumps({"version": VERSION, **facts}, indent=1) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)  # a build cut short never looks finished


def facts(model_dir: Path) -> dict[str, Any]:
    """What ``build_taught`` / ``build_degraded`` recorded about the model in ``model_dir``."""
    return dict(json.loads((Path(model_dir) / _MARKER).read_text()))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        print(
            "usage: python -m perfgate.testmodels.taught TINY_MODEL_DIR OUT_DIR [DEGRADED_DIR]",
            file=sys.stderr,
        )
        return 2
    taught = build_taught(Path(args[0]), Path(args[1]))
    print(taught, json.dumps({k: v for k, v in facts(taught).items() if k != "per_question"}))
    if len(args) == 3:
        bad = build_degraded(taught, Path(args[2]))
        print(bad, json.dumps({k: v for k, v in facts(bad).items() if k != "per_question"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
