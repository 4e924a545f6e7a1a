"""Run programs (and filters) on input rows, one coroutine per row. No Ray, no vLLM here: the
engine comes in as ``complete``, so the same code runs in the Ray Data actor and in tests."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator, Awaitable, Callable

from s2d_ray.answers import AnswerSpec
from s2d_ray.engine import Sampling
from s2d_ray.errors import EngineDead
from s2d_ray.programs import Program
from s2d_ray.programs.base import Call, Completion
from s2d_ray.programs.driver import run_program
from s2d_ray.programs.filters import FILTERS, Decision, majority_vote
from s2d_ray.stage.spec import StageSpec

Complete = Callable[[Call, Sampling], Awaitable[list[Completion]]]


class BusyClock:
    """Seconds during which at least one row was running (the engine was busy), shared by the
    batches one actor runs at once; ``take()`` hands out the time not yet handed out."""

    def __init__(self) -> None:
        self.running, self.since, self.total, self.taken = 0, 0.0, 0.0, 0.0

    def enter(self) -> None:
        if self.running == 0:
            self.since = time.perf_counter()
        self.running += 1

    def exit(self) -> None:
        self.running -= 1
        if self.running == 0:
            self.total += time.perf_counter() - self.since

    def take(self) -> float:
        now = self.total + (time.perf_counter() - self.since if self.running else 0.0)
        share, self.taken = now - self.taken, now
        return share


def _evaluate_vote(samples: list, answers: AnswerSpec) -> Decision:
    """Evaluation's System 2 answer: the majority (free text: the first response)."""
    if answers.comparable:
        answer, agreement, _ = majority_vote(samples, answers)
    else:
        answer, agreement = next((s.answer for s in samples if s.answer), None), None
    return Decision(answer is not None, answer, agreement, None if answer else "no parseable answer")


def _chain(program: Program, spec: StageSpec, item: dict[str, Any]):
    samples = yield from program.run(item, spec.n_samples)
    if spec.filter is None:
        return samples, _evaluate_vote(samples, program.answers)
    decision = yield from FILTERS[spec.filter](samples, spec.min_agreement, item["input"], program.answers)
    return samples, decision


def _result(row: dict[str, Any], spec: StageSpec) -> dict[str, Any]:
    return {
        "id": row["id"], "job": row.get("job"), "input": row["input"], "system1_input": None, "answer": row.get("answer"),
        "meta": row.get("meta") or "{}", "source": row.get("source"), "status": "rejected",
        "reason": row.get("reject_reason"), "target": None, "agreement": None, "method": spec.method,
        "model": spec.model, "n_samples": spec.n_samples, "config_hash": spec.config_hash,
        "generated_tokens": 0, "latency_s": None, "busy_s": None, "samples": [],
    }


async def _run_row(index: int, res: dict[str, Any], spec: StageSpec, program: Program, item: dict[str, Any],
                   complete: Complete, clock: BusyClock) -> tuple[int, dict[str, Any]]:
    """One row's program and filter; its own failure is recorded on it, an engine's death raised."""
    clock.enter()
    start = time.perf_counter()
    try:
        samples, decision = await run_program(_chain(program, spec, item), lambda call: complete(call, spec.sampling))
    except EngineDead:
        raise
    except Exception as e:  # noqa: BLE001 - a row's failure must not fail its batch
        res["reason"] = f"{type(e).__name__}: {e}"
        return index, res
    finally:
        res["latency_s"] = time.perf_counter() - start
        clock.exit()
    res["samples"] = [s.as_row() for s in samples]
    res["generated_tokens"] = sum(s.tokens for s in samples)
    res["target"], res["agreement"], res["reason"] = decision.target, decision.agreement, decision.reason
    res["status"] = ("kept" if decision.kept else "dropped") if spec.filter else "answered"
    return index, res


async def stream_rows(
    rows: list[dict[str, Any]],
    specs: dict[str, StageSpec],
    programs: dict[str, Program],
    complete: Complete,
    prompt_tokens: Callable[[str], int],
    max_model_len: int,
    clock: BusyClock | None = None,
) -> AsyncIterator[list[tuple[int, dict[str, Any]]]]:
    """Lists of ``(index in rows, result row)`` (RESULT_SCHEMA) for validated input rows: each
    list the rows done since the last (rows refused before the engine first), as ray.data.llm's
    vLLM stage yields rows by index. Each row names its job (spec) in ``job``; rows without one
    use the first spec. All rows run concurrently. A finished row's ``busy_s`` is its share of
    the engine's busy time not yet handed out, so the rows of a stage add up to its busy time."""
    clock = clock or BusyClock()
    default = next(iter(specs))
    runs: set[asyncio.Future] = set()
    refused: list[tuple[int, dict[str, Any]]] = []
    for index, row in enumerate(rows):
        job = row.get("job") or default
        spec, program = specs[job], programs[job]
        res = _result(row, spec)
        if not res["reason"]:
            item = {"id": row["id"], "input": row["input"], "answer": row.get("answer"), "meta": json.loads(res["meta"])}
            try:
                res["system1_input"] = program.system1_input(item)
            except ValueError as e:
                res["reason"] = f"{spec.method}: {e}"
        if not res["reason"]:
            n_prompt = prompt_tokens(res["system1_input"])
            if n_prompt + spec.max_tokens > max_model_len:
                res["reason"] = f"input too long: {n_prompt} prompt tokens + max_tokens {spec.max_tokens} > max_model_len {max_model_len}"
        if res["reason"]:
            refused.append((index, res))
            continue
        runs.add(asyncio.ensure_future(_run_row(index, res, spec, program, item, complete, clock)))
    if refused:
        yield refused
    try:
        while runs:
            finished, runs = await asyncio.wait(runs, return_when=asyncio.FIRST_COMPLETED)
            done = [task.result() for task in finished]  # an engine's death is raised here
            share = clock.take() / len(done)
            for _, res in done:
                res["busy_s"] = share
            yield done
    finally:
        for task in runs:
            task.cancel()
