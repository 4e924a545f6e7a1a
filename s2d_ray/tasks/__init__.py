"""Built-in tasks (generators with ground truth) and the task spec every stage reads answers with."""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

from s2d_ray.errors import S2DError
from s2d_ray.tasks.base import Task
from s2d_ray.tasks.biased_qa import BiasedQA
from s2d_ray.tasks.pairwise import Pairwise
from s2d_ray.tasks.spec import TaskSpec
from s2d_ray.tasks.synthetic import CoinFlip, LastLetter
from s2d_ray.tasks.word_problems import WordProblems

TASKS: dict[str, type[Task]] = {t.name: t for t in (BiasedQA, LastLetter, CoinFlip, WordProblems, Pairwise)}


def parse_task_source(source: str) -> tuple[str, dict[str, Any]]:
    """``task:NAME``, ``NAME`` or ``NAME?k=3&variants=a,b`` -> (name, params). A comma makes a
    list; ``variants`` and ``categories`` are always lists."""
    spec = source.removeprefix("task:")
    name, _, query = spec.partition("?")
    params: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise S2DError(f"task source {source!r}: parameter {part!r} is not key=value")
        params[key] = value.split(",") if "," in value or key in ("variants", "categories", "templates") else value
    return name, params


def get_task(name: str) -> Task:
    """The built-in task called ``name`` (a ``NAME?k=v`` source names its task too)."""
    try:
        return TASKS[parse_task_source(name)[0]]()
    except KeyError:
        raise S2DError(f"unknown task {name!r}; built-in tasks: {', '.join(TASKS)}") from None


def generator_fingerprint(*sources: str) -> str | None:
    """A hash of the built-in task generators (this package's code and data) when any of
    ``sources`` is a ``task:`` source, so rows of a changed generator never resume onto those of
    the old one under the same ids; None for files."""
    if not any(src.startswith("task:") for src in sources):
        return None
    files = sorted((f for f in resources.files(__name__).iterdir() if f.name.endswith((".py", ".csv"))), key=lambda f: f.name)
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:12]


def task_spec(task: str | TaskSpec | dict[str, Any] | None) -> TaskSpec | None:
    """A task spec from a built-in name (or source), a spec, or its dict (as sent to workers)."""
    if task is None or isinstance(task, TaskSpec):
        return task
    if isinstance(task, dict):
        return TaskSpec(**task)
    return get_task(task).spec


__all__ = ["TASKS", "Task", "TaskSpec", "generator_fingerprint", "get_task", "parse_task_source", "task_spec"]
