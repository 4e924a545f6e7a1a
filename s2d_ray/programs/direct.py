"""System 1: answer the input directly (the baseline, and how a distilled model is used)."""

from __future__ import annotations

from typing import Any

from s2d_ray.programs.base import Program, ProgramRun, Sample


class Direct(Program):
    name = "direct"

    def run(self, row: dict[str, Any], n: int) -> ProgramRun:
        (outs,) = yield [self.call(self.system1_input(row), n=n)]
        return [Sample(self.extract(o.text), [o.text], o.tokens) for o in outs]
