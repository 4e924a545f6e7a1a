"""Branch-Solve-Merge (Saha et al. 2023) for pairwise evaluation of two responses.

Rows carry the user question in ``input`` and the two responses as ``response_a`` and
``response_b`` columns. Each sample branches on the question alone into evaluation criteria
(as Saha et al.'s branch module does), then solves every criterion and merges into a verdict
(A, B or tie) in both orders of the responses with the same criteria: view ``original`` and view
``swapped`` (its verdict mapped back), so the ``perturbation`` filter keeps only
position-consistent verdicts. System 1 and the distilled model see the judging prompt
(``system1_input``) with the responses in the row's order.
"""

from __future__ import annotations

import re
from typing import Any

from s2d_ray.answers import extract_choice
from s2d_ray.programs.base import Program, ProgramRun, Sample
from s2d_ray.tasks.spec import TaskSpec

PAIR = "[User Question]\n{question}\n\n[Response A]\n{a}\n\n[Response B]\n{b}"
BRANCH = (
    "[User Question]\n{question}\n\nWe want to compare two responses to the user question above. "
    "Propose an evaluation plan: a numbered list of up to {k} criteria (such as correctness, "
    "relevance, helpfulness) that matter most for this question. Output only the list."
)
SOLVE = (
    "{pair}\n\nEvaluate both responses only on this criterion: {criterion}\n"
    "Briefly explain, then give each response a score from 1 to 10 as 'A: <score>, B: <score>'."
)
MERGE = (
    "{pair}\n\nEvaluations per criterion:\n{evaluations}\n\nBased on these evaluations, which "
    "response is better overall? Answer with just A, B or tie."
)
JUDGE = f"{PAIR}\n\nWhich response answers the user question better? Answer with just A, B or tie."
_SWAP = {"A": "B", "B": "A", "tie": "tie"}


def _criteria(text: str, k: int) -> list[str]:
    items = [m.strip() for m in re.findall(r"^\s*(?:\d+[.)]|[-*])\s*(.+)$", text, re.MULTILINE)]
    return (items or [text.strip() or "overall quality"])[:k]


class BSM(Program):
    name = "bsm"
    max_criteria = 3

    def __init__(self, task: TaskSpec | None = None) -> None:
        # Its own answer format whatever the task: a verdict A, B or tie.
        super().__init__(TaskSpec(name=task.name if task else "pairwise", answer="choice",
                                  system_prompt=task.system_prompt if task else None))

    @staticmethod
    def _responses(row: dict[str, Any]) -> tuple[str, str]:
        meta = row.get("meta") or {}
        a, b = meta.get("response_a"), meta.get("response_b")
        if not isinstance(a, str) or not isinstance(b, str):
            raise ValueError("bsm needs string fields response_a and response_b")
        return a, b

    def system1_input(self, row: dict[str, Any]) -> str:
        a, b = self._responses(row)
        return JUDGE.format(question=row["input"], a=a, b=b)

    def run(self, row: dict[str, Any], n: int) -> ProgramRun:
        a, b = self._responses(row)
        views = {"original": PAIR.format(question=row["input"], a=a, b=b),
                 "swapped": PAIR.format(question=row["input"], a=b, b=a)}
        (branches,) = yield [self.call(BRANCH.format(question=row["input"], k=self.max_criteria), n=n)]
        # Each plan's criteria are solved and merged in both orders: one chain per (plan, view).
        chains = [(view, pair, br, _criteria(br.text, self.max_criteria))
                  for br in branches for view, pair in views.items()]
        solve_calls = [self.call(SOLVE.format(pair=pair, criterion=c)) for _, pair, _, crit in chains for c in crit]
        solved = iter((yield solve_calls))
        merges, per_chain = [], []
        for _, pair, _, crit in chains:
            evals = [next(solved)[0] for _ in crit]
            per_chain.append(evals)
            text = "\n".join(f"- {c}: {e.text.strip()}" for c, e in zip(crit, evals))
            merges.append(self.call(MERGE.format(pair=pair, evaluations=text)))
        merged = yield merges
        samples = []
        for (view, _, br, _), evals, (m,) in zip(chains, per_chain, merged):
            verdict = extract_choice(m.text)
            if verdict is not None and view == "swapped":
                verdict = _SWAP[verdict]
            # The shared plan's tokens count once per plan (on its original-order chain).
            tokens = (br.tokens if view == "original" else 0) + sum(e.tokens for e in evals) + m.tokens
            samples.append(Sample(verdict, [br.text, *(e.text for e in evals), m.text], tokens, view))
        return samples
