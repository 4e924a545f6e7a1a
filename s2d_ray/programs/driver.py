"""Run one program (or filter) generator against an async engine.

Each step's calls are sent at once and the next step starts as soon as they have all returned,
independently of any other row: callers run one ``run_program`` coroutine per row, so rows at
different steps share the engine's continuous batching. The sampling actor, evaluation and the
server all drive programs through this function; tests drive it with a fake ``complete``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Generator

from s2d_ray.programs.base import Call, Completion

Complete = Callable[[Call], Awaitable[list[Completion]]]


async def run_program(run: Generator[list[Call], list[list[Completion]], Any], complete: Complete) -> Any:
    """Drive ``run`` to its return value; an error of one of its calls is raised here."""
    try:
        calls = next(run)
        while True:
            outs = await asyncio.gather(*(complete(c) for c in calls))
            calls = run.send(list(outs))
    except StopIteration as stop:
        return stop.value
    finally:
        run.close()
