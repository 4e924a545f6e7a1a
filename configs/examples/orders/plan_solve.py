"""A System 2 program in Python (sample.method: configs.examples.orders.plan_solve:PlanAndSolve):
plan the calculation, then carry it out, then give the number. Any Program subclass works the
same way: yield a list of calls per step, return one Sample per chain."""

from __future__ import annotations

from typing import Any

from s2d_ray.programs import Program, Sample
from s2d_ray.programs.base import ProgramRun

PLAN = ("{input}\n\nDo not solve it yet. List the calculations needed to answer this question, "
        "one per line, without doing them.")
SOLVE = ("{input}\n\nPlan:\n{plan}\n\nCarry out the plan step by step, then write the final answer on the "
         "last line as 'Answer: <number>'. {format}")


class PlanAndSolve(Program):
    name = "plan_solve"

    def run(self, row: dict[str, Any], n: int) -> ProgramRun:
        (plans,) = yield [self.call(PLAN.format(input=row["input"]), n=n)]
        solved = yield [self.call(SOLVE.format(input=row["input"], plan=p.text.strip(), format=self.step_format))
                        for p in plans]
        return [Sample(self.extract(s.text), [p.text, s.text], p.tokens + s.tokens) for p, (s,) in zip(plans, solved)]
