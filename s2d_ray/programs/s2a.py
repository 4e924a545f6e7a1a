"""System 2 Attention (Weston & Sukhbaatar 2023): rewrite the input without the user's
opinions and irrelevant text, then answer the rewritten input only (each sample its own chain)."""

from __future__ import annotations

from typing import Any

from s2d_ray.programs.base import Call, Program, ProgramRun, Sample, user, with_format

REWRITE = (
    "Rewrite the following text by a user so that it keeps only the actual question, "
    "removing the user's opinions, guesses, beliefs and anything irrelevant to answering it. "
    "Output only the rewritten question.\n\nText by user: {input}"
)


class S2A(Program):
    name = "s2a"

    def run(self, row: dict[str, Any], n: int) -> ProgramRun:
        (rewrites,) = yield [Call(user(REWRITE.format(input=row["input"])), n=n)]
        answers = yield [Call(user(with_format(r.text, self.step_format))) for r in rewrites]
        return [
            Sample(self.extract(a[0].text), [r.text, a[0].text], r.tokens + a[0].tokens)
            for r, a in zip(rewrites, answers)
        ]
