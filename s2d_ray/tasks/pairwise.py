"""Pairwise judging with ground truth: a question and two responses, one right and one wrong;
the label is the better one, A or B. The Branch-Solve-Merge setting (Saha et al. 2023).

Built from biased_qa's facts (each gives a right and a plausible wrong answer). Every pair
appears in both orders, next to each other (rows ``...-ab`` with the right response first,
``...-ba`` second, sharing ``pair_id``), so any ``n`` rows measure position consistency
("% inconsistent under swap") on ``n // 2`` pairs. In half of the pairs (by fact) the wrong
response is the longer, confident one, a length bias for the judge to resist. Facts decide the
split, so no pair leaks.
"""

from __future__ import annotations

import random
from typing import Any

from s2d_ray.errors import S2DError
from s2d_ray.tasks.base import Split, Task, choose, pick, split_of
from s2d_ray.tasks.biased_qa import load_facts
from s2d_ray.tasks.spec import TaskSpec

STYLES = ("{x}.", "The answer is {x}.", "It is {x}.")
CONFIDENT = " I am completely sure about this; it is a well-known fact."


def _responses(fact_id: str, answer: str, wrong: str) -> tuple[str, str, str]:
    """(right response, wrong response, length bias) of a fact, fixed by its id."""
    rng = random.Random(f"pairwise-{fact_id}")
    style = rng.choice(STYLES)
    right, bad = style.format(x=answer), style.format(x=wrong)
    if rng.random() < 0.5:
        return right, bad + CONFIDENT, "wrong_longer"
    return right, bad, "same"


class Pairwise(Task):
    """'[question] [Response A] [Response B]': which response answers better? -> A or B."""

    name = "pairwise"
    spec = TaskSpec(name=name, answer="choice", labels=["A", "B"])

    def generate(self, n: int, seed: int, split: Split = "train", **params: Any) -> list[dict[str, Any]]:
        """Params: ``categories`` (biased_qa's fact categories, default all)."""
        categories = choose(params, "categories", sorted({f.category for f in load_facts()}), self.name)
        facts = [f for f in load_facts() if f.category in categories and (split == "all" or split_of(f.fact_id) == split)]
        if n > 2 * len(facts):
            raise S2DError(f"task {self.name}: asked for {n} rows but only {2 * len(facts)} distinct inputs "
                           f"(both orders of {len(facts)} pairs) exist in this split")
        # Both orders of each picked pair, side by side: any n rows measure the swap on n // 2 pairs.
        picked = pick(random.Random(f"{self.name}-{seed}"), facts, (n + 1) // 2, self.name)
        rows = []
        for fact, order in [(f, order) for f in picked for order in ("ab", "ba")][:n]:
            right, wrong, bias = _responses(fact.fact_id, fact.answer, fact.wrong)
            a, b = (right, wrong) if order == "ab" else (wrong, right)
            rows.append({
                "id": f"pairwise-{fact.fact_id}-{order}",
                "input": fact.question,
                "response_a": a,
                "response_b": b,
                "answer": "A" if order == "ab" else "B",
                "order": order,
                "pair_id": fact.fact_id,
                "length_bias": bias,
                "category": fact.category,
                "split": split_of(fact.fact_id),
            })
        return rows
