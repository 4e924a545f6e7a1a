"""A task spec: how a task's prompts ask for an answer, how answers are read and voted on, and
how evaluation scores them. Built-in tasks are specs plus a generator; a user's task is a spec
written in the config (``task:``), used the same way by every stage."""

from __future__ import annotations

import re
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from s2d_ray.answers import (
    PAIRWISE, AnswerKind, AnswerSpec, canonical_number, contains_phrase, extract_label, extract_number, normalize,
)

Scoring = Literal["exact", "numeric", "label", "contains"]

DEFAULT_FORMATS: dict[str, str] = {
    "short": "Give just the final answer, as briefly as possible.",
    "yes_no": "Answer with just yes or no.",
    "letters": "Answer with just the letters, nothing else.",
    "number": "Give the final answer as a number only, without units.",
    "regex": "",
    "text": "",
}


# What the last line of a reasoning step holds (System 2 programs that reason first): naming the
# answer's shape without "just", which made the model skip its reasoning (issue: CoT on a label
# task averaged 3 generated tokens when the line said "Answer with just one of: ...").
FINAL_LINES: dict[str, str] = {
    "short": "The answer itself is a short phrase.",
    "yes_no": "The answer is yes or no.",
    "letters": "The answer is the letters, nothing else.",
    "number": "The answer is a number, without units.",
    "regex": "",
    "text": "",
}


class TaskSpec(BaseModel):
    """What a task's answers look like (the config's ``task:`` section, or a built-in task's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("custom", description="Task name shown in reports.")
    answer: AnswerKind = Field(
        "short",
        description="Answer kind: short (a phrase), yes_no, letters, choice (one of `labels`, default A/B/tie), "
        "number (numeric: units and thousands separators ignored), label (closed set `labels` with aliases; "
        "anything else is no answer), regex (group 1 of `pattern`), text (free form: USC picks a response).",
    )
    labels: list[str] | dict[str, list[str]] | None = Field(
        None, description="label/choice: the allowed answers, or a mapping label -> aliases that count as it.")
    pattern: str | None = Field(None, description="regex: a pattern with a group that captures the answer.")
    format: str | None = Field(None, description="Instruction appended to System 1 prompts and to the answering "
                               "steps of System 2 programs (default: one per answer kind).")
    final_line: str | None = Field(
        None, description="What the final 'Answer:' line of a reasoning step holds, after the model has reasoned "
        "(default: one per answer kind, e.g. 'The answer is one of: A, B.'); unlike `format` it never asks "
        "for just the answer, so the model still reasons.")
    system_prompt: str | None = Field(None, description="System message of every prompt (System 1 and System 2).")
    scoring: Scoring | None = Field(
        None,
        description="How evaluation compares an output with `answer` (and `aliases`, `|`-separated): exact (after "
        "normalisation), numeric, label, contains (the answer is named, and the row's `wrong` is not). "
        "Default: numeric for number, label for label/choice, exact otherwise.",
    )

    @model_validator(mode="after")
    def _check(self) -> "TaskSpec":
        if self.answer == "label" and not self.labels:
            raise ValueError("answer label needs a non-empty `labels` list (or label -> aliases mapping)")
        if self.labels is not None:
            if not self.labels:
                raise ValueError("labels: the label set is empty")
            if any(not str(label).strip() for label in self.label_map):
                raise ValueError("labels: a label is empty")
        if self.answer == "regex":
            if not self.pattern:
                raise ValueError("answer regex needs `pattern`")
            try:
                compiled = re.compile(self.pattern)
            except re.error as e:
                raise ValueError(f"pattern: invalid regular expression ({e})") from None
            if compiled.groups < 1:
                raise ValueError("pattern: needs a group that captures the answer, e.g. 'Total: (\\d+)'")
        if self.scoring == "label" and not self.labels:
            raise ValueError("scoring label needs `labels`")
        return self

    @property
    def label_map(self) -> dict[str, tuple[str, ...]]:
        if not self.labels:
            return {}
        if isinstance(self.labels, dict):
            return {str(k): tuple(v or ()) for k, v in self.labels.items()}
        return {str(label): () for label in self.labels}

    @cached_property
    def answers(self) -> AnswerSpec:
        return AnswerSpec(self.answer, tuple(self.label_map.items()), self.pattern)

    @property
    def instruction(self) -> str:
        """The format instruction appended to prompts."""
        if self.format is not None:
            return self.format
        if self.answer in ("label", "choice"):
            return f"Answer with just one of: {self._one_of}."
        return DEFAULT_FORMATS[self.answer]

    @property
    def final_instruction(self) -> str:
        """What a reasoning step's last line holds (``final_line``, or one per answer kind)."""
        if self.final_line is not None:
            return self.final_line
        if self.answer in ("label", "choice"):
            return f"The answer is one of: {self._one_of}."
        return FINAL_LINES[self.answer]

    @property
    def _one_of(self) -> str:
        """label/choice: the allowed answers as prompts list them."""
        return ", ".join(self.label_map or PAIRWISE)

    @property
    def scorer(self) -> Scoring:
        if self.scoring:
            return self.scoring
        return {"number": "numeric", "label": "label", "choice": "label"}.get(self.answer, "exact")

    def extract(self, text: str) -> str | None:
        return self.answers.extract(text)

    def vote_key(self, answer: str | None) -> str | None:
        return self.answers.vote_key(answer)

    def is_correct(self, text: str, row: dict[str, Any]) -> bool:
        """Whether model output ``text`` answers ``row`` (its ``answer``, ``aliases``, ``wrong``)."""
        golds = [str(row["answer"]), *[a for a in str(row.get("aliases") or "").split("|") if a]]
        pred = self.extract(text)
        scorer = self.scorer
        if scorer == "numeric":
            got = canonical_number(pred) if pred is not None else None
            got = got if got is not None else extract_number(text)
            return got is not None and got in {canonical_number(g) for g in golds}
        if scorer == "label":
            labels = self.label_map or {g: () for g in golds}
            got = extract_label(pred, labels) if pred is not None else None
            return got is not None and got in {extract_label(g, labels) or g for g in golds}
        if pred is not None and normalize(pred) in {normalize(g) for g in golds}:
            return True
        if scorer == "exact":
            return False
        # contains: the text names a gold answer (3+ characters, not in the question) and not
        # the row's `wrong` answer, e.g. "The capital of France is Paris." for "Paris".
        question = str(row.get("input") or "")
        distinctive = [g for g in golds if len(normalize(g)) >= 3 and not contains_phrase(question, g)]
        wrong = row.get("wrong")
        return any(contains_phrase(text, g) for g in distinctive) and not (wrong and contains_phrase(text, str(wrong)))
