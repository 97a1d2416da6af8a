"""The accuracy documents: a scenario's ``[accuracy]`` section, one arm's GPQA answers
question by question, and ``perfgate eval``'s result. Data, reading and writing only;
``perfgate.accuracy`` runs lm-eval to make them, ``perfgate.decide.accuracy`` compares them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from perfgate.documents.compare import AccuracyComparison
from perfgate.documents.io import EVAL_SCHEMA, from_fields, need


class AccuracyError(Exception):
    """The accuracy phase cannot run as configured; the message names the field and the fix."""


@dataclass(frozen=True)
class AccuracySpec:
    """The scenario's ``[accuracy]`` section."""

    enabled: bool = True
    source: str = "bundled"  # bundled | local | hub
    path: str | None = None  # local: CSV / JSONL in the hub's schema
    subset: str = "diamond"  # hub: diamond | main | extended
    k: int = 2  # evaluations per arm, each with its own seed
    limit: int | None = None  # first N questions only
    endpoint: str = "completions"  # completions -> local-completions, chat -> local-chat-...
    temperature: float = 0.0
    max_tokens: int = 1024
    reasoning_effort: str | None = None  # GPT-OSS: low | medium | high
    num_concurrent: int = 8
    max_drop: float = 0.01  # accuracy drop (fraction, 0.01 = 1 pp) the gate tolerates
    shuffle_seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ArmAccuracy:
    """One arm's per-question, per-repeat correctness (1/0), and what produced it."""

    source: str
    task: str
    k: int
    questions: list[str] = field(default_factory=list)  # doc ids, in order
    correct: list[list[int]] = field(default_factory=list)  # [question][repeat]
    no_answer: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)  # per question x repeat

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def accuracy(self) -> float:
        cells = [c for row in self.correct for c in row]
        return sum(cells) / len(cells) if cells else float("nan")


@dataclass
class EvalRun:
    """``perfgate eval``: one server's accuracy, or two compared by question."""

    spec: AccuracySpec
    arms: dict[str, ArmAccuracy]
    comparison: AccuracyComparison | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EvalRun:
        acc = need(d, "accuracy", "eval result")
        comparison = acc.get("comparison")
        return cls(
            spec=from_fields(AccuracySpec, need(acc, "spec", "accuracy"), "accuracy.spec"),
            arms={
                a: from_fields(ArmAccuracy, x, f"accuracy.arms.{a}")
                for a, x in need(acc, "arms", "accuracy").items()
            },
            comparison=None
            if comparison is None
            else from_fields(AccuracyComparison, comparison, "accuracy.comparison"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": EVAL_SCHEMA,
            "accuracy": {
                "spec": self.spec.to_json(),
                "arms": {n: r.to_json() for n, r in self.arms.items()},
                "comparison": None if self.comparison is None else asdict(self.comparison),
            },
        }
