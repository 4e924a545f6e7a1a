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
        for i, outs in _round(order, generate):
            if isinstance(outs, Exception):
                results[i] = outs
            else:
                advance(i, outs)
    return results


def _round(order: list[tuple[int, list[Call]]], generate: Generate) -> list[tuple[int, Any]]:
    """One batched engine call for all pending runs. If it raises, each run is retried alone
    so that only the runs whose own calls fail get the error; if every run fails alone, the
    engine (not a row) is at fault and the error propagates (Ray retries the batch)."""
    try:
        outs = generate([c for _, calls in order for c in calls])
    except Exception:
        if len(order) == 1:
            raise
        alone: list[tuple[int, Any]] = []
        for i, calls in order:
            try:
                alone.append((i, generate(calls)))
            except Exception as e:  # noqa: BLE001 - isolate the failing row
                alone.append((i, e))
        if all(isinstance(o, Exception) for _, o in alone):
            raise
        return alone
    split, pos = [], 0
    for i, calls in order:
        split.append((i, outs[pos : pos + len(calls)]))
        pos += len(calls)
    return split
