"""Pairwise judging with ground truth: a question and two responses, one right and one wrong;
the label is the better one, A or B. The Branch-Solve-Merge setting (Saha et al. 2023).

Built from biased_qa's facts (each gives a right and a plausible wrong answer). Every pair
appears in both orders (rows ``...-ab`` with the right response first, ``...-ba`` second) and
both orders of a fact share ``pair_id``, so position consistency ("% inconsistent under swap")
can be measured. In half of the pairs (by fact) the wrong response is the longer, confident one,
a length bias for the judge to resist. Facts decide the split, so no pair leaks.
"""

from __future__ import annotations

import random
from typing import Any

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
        pool = [(f, order) for f in facts for order in ("ab", "ba")]
        rows = []
        for fact, order in pick(random.Random(f"{self.name}-{seed}"), pool, n, self.name):
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
