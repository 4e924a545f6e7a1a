"""System 1: answer the input directly (the baseline, and how a distilled model is used)."""

from __future__ import annotations

from typing import Any

from s2d_ray.programs.base import Program, ProgramRun, Sample


class Direct(Program):
    """Answers ``system1_input(row)``: the task's input and format, or, given the distilled
    ``source`` program, exactly the prompt its distillation set trained on (BSM's judging prompt
    with both responses, a template program's ``system1``)."""

    name = "direct"

    def __init__(self, task=None, source: Program | None = None) -> None:
        super().__init__(task)
        self.source = source

    def system1_input(self, row: dict[str, Any]) -> str:
        return self.source.system1_input(row) if self.source else super().system1_input(row)

    def run(self, row: dict[str, Any], n: int) -> ProgramRun:
        (outs,) = yield [self.call(self.system1_input(row), n=n)]
        return [Sample(self.extract(o.text), [o.text], o.tokens) for o in outs]
