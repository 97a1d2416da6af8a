"""The nightly gate's rule: what tonight's night, the history's change points and (on a night
that measures it) accuracy by question decide, with the sentence that says why
(docs/nightly.md, "The rule")."""

from __future__ import annotations

from perfgate.documents.compare import (
    INCONCLUSIVE,
    INVALID,
    PASS,
    REGRESSED,
    AccuracyComparison,
)
from perfgate.documents.nightly import Detection, Night
from perfgate.documents.spec import ChangeRule


def decide_night(
    night: Night, detection: Detection, rule: ChangeRule, answers: AccuracyComparison | None
) -> tuple[str, str]:
    """(verdict, reason): an accuracy drop counts the night it is seen; a change point beyond
    its tolerance counts once it has persisted ``rule.min_nights``; until then it, or tonight's
    own regression, is inconclusive."""
    if answers is not None and answers.verdict == REGRESSED:
        return REGRESSED, (
            f"accuracy {answers.candidate:.1%} against the baseline's {answers.baseline:.1%} "
            f"on the same {answers.n_questions} questions ({answers.diff:+.1%}): a drop beyond "
            f"{answers.max_drop:.1%}, which counts the night it is seen"
        )
    if detection.regressed:
        c = detection.regressed[0]
        return REGRESSED, (
            f"{c.metric} changed by {c.step:+.1%} from night {c.night + 1} ({c.first_date}) on, "
            f"for {c.nights_after} nights: beyond its tolerance, and it persists"
        )
    need = rule.min_nights
    if detection.pending:
        c = detection.pending[0]
        return INCONCLUSIVE, (
            f"{c.metric} changed by {c.step:+.1%} from night {c.night + 1} ({c.first_date}) on: "
            f"beyond its tolerance for {c.nights_after} of the {need} nights it must persist"
        )
    worse = [m for m, x in night.metrics.items() if x.verdict == REGRESSED]
    if worse:
        return INCONCLUSIVE, (
            f"tonight {', '.join(worse)} regressed against the reference; a change counts once "
            f"it persists for {need} nights"
        )
    if night.verdict == INVALID:
        return INVALID, "tonight's comparison was invalid (a metric could not be measured)"
    # (invalid answers made tonight's verdict invalid: the line above)
    if answers is not None and answers.verdict == INCONCLUSIVE:
        return INCONCLUSIVE, (
            f"accuracy {answers.candidate:.1%} against the baseline's {answers.baseline:.1%}: "
            f"{answers.verdict} (the answers cannot rule out a drop beyond "
            f"{answers.max_drop:.1%})"
        )
    return PASS, "no change point beyond a tolerance persists"
