"""Chain-of-Thought: think step by step, then a final answer in a parseable form."""

from __future__ import annotations

from typing import Any

from s2d_ray.programs.base import Program, ProgramRun, Sample, reason_then_answer


class CoT(Program):
    name = "cot"

    def run(self, row: dict[str, Any], n: int) -> ProgramRun:
        prompt = reason_then_answer(f"{row['input']}\n\nLet's think step by step.", self.final_format)
        (outs,) = yield [self.call(prompt, n=n)]
        return [Sample(self.extract(o.text), [o.text], o.tokens) for o in outs]
