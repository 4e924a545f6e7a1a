"""The shape of a System 2 program, independent of any engine or of Ray.

A program is a generator: it yields a list of ``Call`` (chat prompts, each wanting ``n``
completions), receives one list of ``Completion`` per call, and finally returns its
``Sample`` list. ``programs.driver.run_program`` drives one against an async engine (one
coroutine per row); tests can drive a program by hand.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generator

from s2d_ray.answers import AnswerSpec
from s2d_ray.tasks.spec import FINAL_LINES

if TYPE_CHECKING:
    from s2d_ray.tasks.spec import TaskSpec

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Call:
    """One prompt to the engine, wanting ``n`` completions (sharing the prompt's KV cache)."""

    messages: Messages
    n: int = 1
    temperature: float | None = None  # None: the program's configured temperature
    max_tokens: int | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: int
    error: str | None = None


@dataclass
class Sample:
    """One chain of a System 2 program: its steps' text and the final answer it reached."""

    answer: str | None
    reasoning: list[str] = field(default_factory=list)
    tokens: int = 0
    view: str = "original"

    def as_row(self) -> dict[str, Any]:
        return {"view": self.view, "text": "\n\n---\n\n".join(self.reasoning), "answer": self.answer, "tokens": self.tokens}


ProgramRun = Generator[list[Call], list[list[Completion]], list[Sample]]


def user(text: str) -> Messages:
    return [{"role": "user", "content": text}]


def with_format(text: str, answer_format: str) -> str:
    """A question followed by the task's answer-format instruction."""
    return f"{text.rstrip()}\n\n{answer_format}".strip()


def reason_then_answer(text: str, final_line: str) -> str:
    """A reasoning step's prompt: reason first, the final answer on the last line (``final_line``
    says what it holds, never "answer with just", which made the model skip the reasoning)."""
    return (
        f"{text.rstrip()}\n\nFirst write out your reasoning, step by step. After your reasoning, write the final "
        f"answer on the last line as 'Answer: <answer>'. {final_line}"
    ).strip()


class Program(ABC):
    """A System 2 method. Subclasses set ``name`` and implement ``run``; ``self.call`` builds
    an engine call with the task's system prompt, ``self.extract`` reads a final answer."""

    name: str

    def __init__(self, task: "TaskSpec | None" = None) -> None:
        self.task = task
        self.answers = task.answers if task else AnswerSpec()
        self.answer_format = task.instruction if task else ""  # "" for free-form user data
        self.step_format = self.answer_format or "Give just the final answer, as briefly as possible."
        self.final_format = task.final_instruction if task else FINAL_LINES["short"]  # reasoning steps
        self.system_prompt = task.system_prompt if task else None

    def extract(self, text: str) -> str | None:
        return self.answers.extract(text)

    def call(self, text: str, n: int = 1, **kw: Any) -> Call:
        """A call asking ``text`` as the user (after the task's system prompt, if any)."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return Call([*system, *user(text)], n=n, **kw)

    def system1_input(self, row: dict[str, Any]) -> str:
        """The text a System 1 model sees for this row (the distillation set's ``input``)."""
        return with_format(row["input"], self.answer_format)

    @abstractmethod
    def run(self, row: dict[str, Any], n: int) -> ProgramRun:
        """Produce ``n`` samples for ``row`` (keys: input, meta)."""
