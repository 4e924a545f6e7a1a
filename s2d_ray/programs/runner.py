"""Advance many program generators together: each round is one batched engine call."""

from __future__ import annotations

from typing import Any, Callable, Generator

from s2d_ray.programs.base import Call, Completion

Generate = Callable[[list[Call]], list[list[Completion]]]


def drive(runs: list[Generator[list[Call], list[list[Completion]], Any]], generate: Generate) -> list[Any]:
    """Run every generator to completion; a generator that raises yields its exception as result."""
    results: list[Any] = [None] * len(runs)
    pending: dict[int, list[Call]] = {}

    def advance(i: int, value: list[list[Completion]] | None) -> None:
        gen = runs[i]
        try:
            calls = next(gen) if value is None else gen.send(value)
            while not calls:  # a step with nothing to ask
                calls = gen.send([])
            pending[i] = calls
        except StopIteration as stop:
            results[i] = stop.value
        except Exception as e:  # noqa: BLE001 - a row's failure must not fail its batch
            results[i] = e

    for i in range(len(runs)):
        advance(i, None)
    while pending:
        order = list(pending.items())
        pending.clear()
        outs = generate([c for _, calls in order for c in calls])
        pos = 0
        for i, calls in order:
            advance(i, outs[pos : pos + len(calls)])
            pos += len(calls)
    return results
