"""Self-consistency filters: which inputs (and which final answer) enter the distillation set.

Filters are generators like programs, so one that needs the model (universal
self-consistency) asks the engine through the same driver (``programs.driver``). The others
(``ENGINE_FREE``) decide from the samples alone: they are applied again to samples/ whenever
distill/ is built (``decide``), so changing one of them rebuilds distill/ without sampling again.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Generator

from s2d_ray.answers import AnswerSpec
from s2d_ray.programs.base import Call, Completion, Sample, user


@dataclass(frozen=True)
class Decision:
    kept: bool
    target: str | None
    agreement: float | None  # None: answers that cannot be compared (free text)
    reason: str | None = None


FilterRun = Generator[list[Call], list[list[Completion]], Decision]


def majority_vote(samples: list[Sample], answers: AnswerSpec = AnswerSpec()) -> tuple[str | None, float, bool]:
    """(answer, agreement, tie): the most common answer, the fraction of all samples giving
    it, and whether another answer has as many votes. Unparseable samples count against."""
    keys = [answers.vote_key(s.answer) for s in samples]
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None, 0.0, False
    (top, votes), *rest = counts.most_common()
    tie = bool(rest) and rest[0][1] == votes
    answer = next(s.answer for s, k in zip(samples, keys) if k == top)
    return answer, votes / len(samples), tie


def _majority(samples: list[Sample], min_agreement: float, answers: AnswerSpec) -> Decision:
    answer, agreement, tie = majority_vote(samples, answers)
    if answer is None:
        return Decision(False, None, 0.0, "no parseable answer")
    if tie:
        return Decision(False, None, agreement, "tie between answers")
    if agreement < min_agreement:
        return Decision(False, answer, agreement, f"agreement {agreement:.2f} < {min_agreement}")
    return Decision(True, answer, agreement)


def majority(samples: list[Sample], min_agreement: float, question: str, answers: AnswerSpec) -> FilterRun:
    """Majority vote with a minimum agreement; ties and no-majority are dropped."""
    yield from ()
    return _majority(samples, min_agreement, answers)


def no_filter(samples: list[Sample], min_agreement: float, question: str, answers: AnswerSpec) -> FilterRun:
    """No consistency check (the paper's baseline): the first sample with an answer is the
    target; its agreement with the others is recorded, not enforced."""
    yield from ()
    first = next((s.answer for s in samples if s.answer), None)
    if first is None:
        return Decision(False, None, 0.0, "no parseable answer")
    key = answers.vote_key(first)
    agreement = sum(answers.vote_key(s.answer) == key for s in samples) / len(samples) if key else None
    return Decision(True, first, agreement)


USC_PROMPT = (
    "I have generated the following responses to the question: {question}\n\n{responses}\n\n"
    "Evaluate these responses. Select the most consistent response based on majority consensus. "
    'Start your answer with "The most consistent response is Response X" (without quotes).'
)


def usc(samples: list[Sample], min_agreement: float, question: str, answers: AnswerSpec) -> FilterRun:
    """Universal self-consistency (Chen et al. 2023): the model reads the full final responses
    and picks the most consistent one. Its answer is the target (for free text: the response
    itself); the agreement gate applies only where answers can be compared."""
    candidates = [s for s in samples if s.answer]
    if not candidates:
        return Decision(False, None, 0.0, "no parseable answer")
    listing = "\n\n".join(f"Response {i}: {s.reasoning[-1].strip() if s.reasoning else s.answer}"
                           for i, s in enumerate(candidates))
    ((pick,),) = yield [Call(user(USC_PROMPT.format(question=question, responses=listing)), temperature=0.0)]
    m = re.search(r"Response\s*(\d+)", pick.text)
    if m is None or int(m.group(1)) >= len(candidates):
        return Decision(False, None, 0.0, "usc: no valid choice")
    chosen = candidates[int(m.group(1))].answer
    if not answers.comparable:
        return Decision(True, chosen, None)
    agreement = sum(answers.vote_key(s.answer) == answers.vote_key(chosen) for s in samples) / len(samples)
    if agreement < min_agreement:
        return Decision(False, chosen, agreement, f"agreement {agreement:.2f} < {min_agreement}")
    return Decision(True, chosen, agreement)


def perturbation(samples: list[Sample], min_agreement: float, question: str, answers: AnswerSpec) -> FilterRun:
    """Majority within each input view (e.g. responses swapped); all views must agree."""
    yield from ()
    views: dict[str, list[Sample]] = {}
    for s in samples:
        views.setdefault(s.view, []).append(s)
    decisions = {v: _majority(group, min_agreement, answers) for v, group in views.items()}
    for view, d in decisions.items():
        if not d.kept:
            return Decision(False, d.target, d.agreement, f"view {view}: {d.reason}")
    targets = {answers.vote_key(d.target) for d in decisions.values()}
    agreement = min(d.agreement for d in decisions.values())
    first = next(iter(decisions.values())).target
    if len(targets) > 1:
        return Decision(False, first, agreement, "views disagree")
    return Decision(True, first, agreement)


FILTERS = {"majority": majority, "usc": usc, "perturbation": perturbation, "none": no_filter}
ENGINE_FREE = frozenset({"majority", "perturbation", "none"})  # usc asks the model: decided while sampling


def decide(kind: str, samples: list[Sample], min_agreement: float, question: str, answers: AnswerSpec) -> Decision:
    """The decision of an engine-free filter (``ENGINE_FREE``) on one input's samples."""
    run = FILTERS[kind](samples, min_agreement, question, answers)
    try:
        next(run)
    except StopIteration as done:
        return done.value
    raise ValueError(f"sample.filter.kind {kind!r} asks the engine: it is decided while sampling, not from stored samples")
