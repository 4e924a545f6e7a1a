"""What a built-in task is: a seeded generator with ground truth, plus its task spec (how
answers are asked for, read and scored: the same mechanism as a user's task)."""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

from s2d_ray.tasks.spec import TaskSpec

Split = Literal["train", "test", "all"]
TRAIN_FRACTION = 0.6


def split_of(key: str) -> Literal["train", "test"]:
    """Deterministic train/test assignment of a unit (a fact, a name tuple) by its key."""
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "train" if bucket < TRAIN_FRACTION else "test"


class Task(ABC):
    """A built-in task. Rows are dicts with at least ``id``, ``input``, ``answer``."""

    name: str
    spec: ClassVar[TaskSpec]

    @abstractmethod
    def generate(self, n: int, seed: int, split: Split = "train", **params: Any) -> list[dict[str, Any]]:
        """``n`` rows of ``split``, deterministic in ``seed``; train and test never share a unit."""

    def extract(self, text: str) -> str | None:
        """The final answer in a model output, as the task spec reads it."""
        return self.spec.extract(text)

    def is_correct(self, text: str, row: dict[str, Any]) -> bool:
        """Whether model output ``text`` answers ``row`` correctly (the task spec's scoring)."""
        return self.spec.is_correct(text, row)


def choose(params: dict[str, Any], key: str, known: list[str], task: str) -> list[str]:
    """The values of list parameter ``key`` (a string is one value; default: all ``known``); a
    clear error naming ``task`` for an unknown one."""
    from s2d_ray.errors import S2DError

    chosen = params.get(key) or known
    chosen = [chosen] if isinstance(chosen, str) else list(chosen)
    unknown = set(chosen) - set(known)
    if unknown:
        raise S2DError(f"task {task}: unknown {key} {sorted(unknown)}; known: {known}")
    return chosen


def pick(rng: random.Random, pool: list[Any], n: int, what: str) -> list[Any]:
    """``n`` distinct items of ``pool`` in a seeded order; a clear error if there are too few."""
    from s2d_ray.errors import S2DError

    if n > len(pool):
        raise S2DError(f"task {what}: asked for {n} rows but only {len(pool)} distinct inputs exist in this split")
    order = list(pool)
    rng.shuffle(order)
    return order[:n]
