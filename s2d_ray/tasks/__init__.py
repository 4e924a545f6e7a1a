"""Built-in tasks: generators with ground truth, answer extraction and scoring."""

from __future__ import annotations

from s2d_ray.errors import S2DError
from s2d_ray.tasks.base import Task
from s2d_ray.tasks.biased_qa import BiasedQA
from s2d_ray.tasks.synthetic import CoinFlip, LastLetter

TASKS: dict[str, type[Task]] = {t.name: t for t in (BiasedQA, LastLetter, CoinFlip)}


def get_task(name: str) -> Task:
    """The built-in task called ``name`` (a ``NAME?k=v`` source names its task too)."""
    from s2d_ray.inputs import parse_task_source

    try:
        return TASKS[parse_task_source(name)[0]]()
    except KeyError:
        raise S2DError(f"unknown task {name!r}; built-in tasks: {', '.join(TASKS)}") from None


__all__ = ["TASKS", "Task", "get_task"]
