"""Multi-step arithmetic word problems with numeric answers (GSM8k-like, built offline).

Each problem is a story template with two or three operations over seeded numbers; the
underlying item (template and numbers) decides its train/test split, so no problem leaks.
Chain-of-Thought is the paper's System 2 method here (10 samples, majority vote), and the
paper's negative result: on GSM8k CoT did not distil into System 1.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

from s2d_ray.errors import S2DError
from s2d_ray.tasks.base import Split, Task, choose, split_of
from s2d_ray.tasks.spec import TaskSpec
from s2d_ray.tasks.synthetic import FIRST_NAMES

Numbers = dict[str, int]


@dataclass(frozen=True)
class Template:
    name: str
    text: str
    draw: Callable[[random.Random], Numbers]
    solve: Callable[[Numbers], int]
    steps: int


def _draw(**ranges: tuple[int, int]) -> Callable[[random.Random], Numbers]:
    return lambda rng: {k: rng.randint(lo, hi) for k, (lo, hi) in ranges.items()}


TEMPLATES: tuple[Template, ...] = (
    Template("apples", "{name} has {a} apples. {name} buys {b} bags with {c} apples in each bag, then gives "
             "{d} apples to a friend. How many apples does {name} have now?",
             lambda rng: (lambda a, b, c: {"a": a, "b": b, "c": c, "d": rng.randint(1, min(20, a + b * c - 1))})(
                 rng.randint(3, 30), rng.randint(2, 9), rng.randint(3, 12)),
             lambda v: v["a"] + v["b"] * v["c"] - v["d"], 3),
    Template("change", "A notebook costs {p} dollars. {name} buys {q} notebooks and pays with a {bill} dollar "
             "bill. How many dollars of change does {name} get?",
             lambda rng: (lambda p, q: {"p": p, "q": q, "bill": 10 * (p * q // 10 + rng.randint(1, 5))})(
                 rng.randint(2, 9), rng.randint(2, 9)),
             lambda v: v["bill"] - v["p"] * v["q"], 2),
    Template("pages", "A book has {total} pages. {name} reads {a} pages a day for {d} days and then {b} pages "
             "more. How many pages are left to read?",
             lambda rng: (lambda a, d, b: {"a": a, "d": d, "b": b, "total": a * d + b + rng.randint(5, 120)})(
                 rng.randint(5, 25), rng.randint(2, 7), rng.randint(3, 30)),
             lambda v: v["total"] - v["a"] * v["d"] - v["b"], 3),
    Template("train", "A train travels at {s} km per hour for {h} hours, then at {t} km per hour for {g} hours. "
             "How many kilometres does it travel in total?",
             _draw(s=(40, 120), h=(2, 6), t=(30, 110), g=(2, 5)), lambda v: v["s"] * v["h"] + v["t"] * v["g"], 3),
    Template("savings", "{name} saves {a} dollars every week. After {w} weeks, {name} spends {b} dollars on a "
             "gift. How many dollars does {name} have left?",
             lambda rng: (lambda a, w: {"a": a, "w": w, "b": rng.randint(1, a * w - 1)})(
                 rng.randint(5, 40), rng.randint(3, 12)),
             lambda v: v["a"] * v["w"] - v["b"], 2),
    Template("chairs", "A hall has {r} rows of chairs with {c} chairs in each row. {t} people sit down and "
             "then {l} of them leave. How many chairs are empty now?",
             lambda rng: (lambda r, c: (lambda t: {"r": r, "c": c, "t": t, "l": rng.randint(0, t - 1)})(
                 rng.randint(1, r * c)))(rng.randint(3, 15), rng.randint(4, 20)),
             lambda v: v["r"] * v["c"] - v["t"] + v["l"], 3),
    Template("cookies", "{name} bakes {a} trays of {b} cookies each. {name} eats {e} cookies and shares the rest "
             "equally among {k} friends. How many cookies does each friend get?",
             lambda rng: (lambda k, share, e: {"k": k, "e": e, **_trays(k * share + e, rng)})(
                 rng.randint(2, 6), rng.randint(2, 10), rng.randint(1, 5)),
             lambda v: (v["a"] * v["b"] - v["e"]) // v["k"], 3),
    Template("garden", "A garden bed is {w} metres wide and {l} metres long. {name} plants {p} plants on every "
             "square metre except {x} square metres kept for a path. How many plants does {name} plant?",
             lambda rng: (lambda w, l: {"w": w, "l": l, "p": rng.randint(2, 9), "x": rng.randint(1, w * l - 1)})(
                 rng.randint(2, 9), rng.randint(3, 12)),
             lambda v: (v["w"] * v["l"] - v["x"]) * v["p"], 3),
)


def _trays(total: int, rng: random.Random) -> Numbers:
    """Trays x cookies per tray = ``total`` exactly (one tray of ``total`` if it is prime)."""
    divisors = [d for d in range(2, total) if total % d == 0 and total // d >= 2] or [1]
    a = rng.choice(divisors)
    return {"a": a, "b": total // a}


class WordProblems(Task):
    """'Ada has 12 apples. Ada buys 3 bags with 5 apples in each bag, then ...' -> 23."""

    name = "word_problems"
    spec = TaskSpec(name=name, answer="number")

    def generate(self, n: int, seed: int, split: Split = "train", **params: Any) -> list[dict[str, Any]]:
        """Params: ``templates`` (names, default all)."""
        chosen = choose(params, "templates", [t.name for t in TEMPLATES], self.name)
        templates = [t for t in TEMPLATES if t.name in chosen]
        rng = random.Random(f"{self.name}-{seed}")
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        attempts = 0
        while len(rows) < n:
            attempts += 1
            if attempts > 200 * n + 1000:
                raise S2DError(f"task {self.name}: cannot find {n} distinct problems in the {split} split")
            template = rng.choice(templates)
            values = template.draw(rng)
            name = rng.choice(FIRST_NAMES)
            key = f"{template.name}:" + ",".join(f"{k}={values[k]}" for k in sorted(values))
            if key in seen or (split != "all" and split_of(f"{self.name}:{key}") != split):
                continue
            seen.add(key)
            answer = template.solve(values)
            rows.append({
                "id": f"word_problems-{key.replace(':', '-').replace(',', '-').replace('=', '')}",
                "input": template.text.format(name=name, **values),
                "answer": str(answer),
                "template": template.name,
                "steps": template.steps,
                "split": split_of(f"{self.name}:{key}"),
            })
        return rows
