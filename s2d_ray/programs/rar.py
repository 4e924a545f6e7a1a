"""Rephrase and Respond (Deng et al. 2023), 1-step and 2-step.

Both respond as Deng et al.'s prompts do, reasoning freely; the final answer is read from the
last line, which the prompt asks to write as ``Answer: <answer>``.
"""

from __future__ import annotations

from typing import Any

from s2d_ray.programs.base import Program, ProgramRun, Sample, reason_then_answer

ONE_STEP = "{input}\n\nRephrase and expand the question, and respond."
REPHRASE = (
    "{input}\n\nGiven the above question, rephrase and expand it to help you do better "
    "answering. Maintain all information in the original question. Output only the rephrased question."
)
ANSWER = "(original) {input}\n(rephrased) {rephrased}\n\nUse your answer for the rephrased question to answer the original question."


class RaR1(Program):
    name = "rar1"

    def run(self, row: dict[str, Any], n: int) -> ProgramRun:
        prompt = reason_then_answer(ONE_STEP.format(input=row["input"]), self.final_format)
        (outs,) = yield [self.call(prompt, n=n)]
        return [Sample(self.extract(o.text), [o.text], o.tokens) for o in outs]


class RaR2(Program):
    name = "rar2"

    def run(self, row: dict[str, Any], n: int) -> ProgramRun:
        (rephrasings,) = yield [self.call(REPHRASE.format(input=row["input"]), n=n)]
        answers = yield [
            self.call(reason_then_answer(ANSWER.format(input=row["input"], rephrased=r.text.strip()), self.final_format))
            for r in rephrasings
        ]
        return [
            Sample(self.extract(a[0].text), [r.text, a[0].text], r.tokens + a[0].tokens)
            for r, a in zip(rephrasings, answers)
        ]
