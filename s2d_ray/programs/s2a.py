"""System 2 Attention (Weston & Sukhbaatar 2023): rewrite the input without the user's
opinions and irrelevant text, then answer the rewritten input only (each sample its own chain)."""

from __future__ import annotations

from typing import Any

from s2d_ray.programs.base import Program, ProgramRun, Sample, with_format

# Asking to "rewrite" made the small model solve unbiased questions in the rewrite ("What is
# 68 + 27?" -> "What is 95?"); asking to copy the question out kept it intact (measured).
REWRITE = (
    "The text below was written by a user. Copy out the question it asks, word for word, leaving out the "
    "user's opinions, guesses and beliefs about the answer. Do not answer, solve or simplify the question.\n\n"
    'Text by user: """{input}"""'
)


class S2A(Program):
    name = "s2a"

    def run(self, row: dict[str, Any], n: int) -> ProgramRun:
        (rewrites,) = yield [self.call(REWRITE.format(input=row["input"]), n=n)]
        answers = yield [self.call(with_format(r.text, self.step_format)) for r in rewrites]
        return [
            Sample(self.extract(a[0].text), [r.text, a[0].text], r.tokens + a[0].tokens)
            for r, a in zip(rewrites, answers)
        ]
