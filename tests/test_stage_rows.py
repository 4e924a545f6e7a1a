"""The per-row runner of sampling and evaluation (s2d_ray.stage.rows) on a fake async engine:
rows leave as they finish, a failing row, a dead engine, jobs sharing a batch, busy time."""

from __future__ import annotations

import asyncio
import json

import pytest

from fakes import Script
from s2d_ray.errors import EngineDead
from s2d_ray.stage.rows import BusyClock, stream_rows
from s2d_ray.stage.spec import StageSpec

TASK = {"name": "qa", "answer": "short"}


def _spec(method: str = "rar2", filter: str | None = "majority", n: int = 2, **kw) -> StageSpec:
    return StageSpec(model="m", method=method, n_samples=n, temperature=0.7, top_p=1.0, max_tokens=16, task=TASK,
                     filter=filter, min_agreement=0.5, config_hash="h", **kw)


def _row(i: int, text: str | None = None, job: str | None = None, reject: str | None = None) -> dict:
    return {"id": f"r{i}", "input": text or f"What is {i} plus {i}?", "answer": str(2 * i), "meta": json.dumps({"k": i}),
            "source": f"in.jsonl:{i}", "reject_reason": reject, "job": job}


async def _collect(rows, specs, engine, clock=None, max_model_len=1000, order=None):
    """Result rows in input order; ``order`` (if given) records the input index of each row as it left."""
    programs = {name: s.program() for name, s in specs.items()}
    out = {}
    async for done in stream_rows(rows, specs, programs, engine, lambda text: len(text.split()), max_model_len, clock):
        for index, res in done:
            out[index] = res
            if order is not None:
                order.append(index)
    assert sorted(out) == list(range(len(rows)))  # every row leaves exactly once
    return [out[i] for i in range(len(rows))]


def _run(rows, specs, engine, clock=None, max_model_len=1000, order=None):
    return asyncio.run(_collect(rows, specs, engine, clock, max_model_len, order))


def _reply(prompt, i, call):
    if "Given the above question" in prompt:  # rar2's rephrase step
        return "Rephrased: what is the sum?"
    return f"Answer: {len(prompt) % 3}"


def test_rows_leave_as_they_finish_and_a_slow_one_holds_back_none():
    # the first row's calls are slowest: the others leave before it, each with its own index
    engine = Script(_reply, delay=lambda p: 0.05 if "0 plus 0" in p else 0.0)
    rows = [_row(i) for i in range(4)]
    order: list[int] = []
    out = _run(rows, {"sample": _spec()}, engine, order=order)
    assert order[-1] == 0 and sorted(order) == [0, 1, 2, 3]
    assert [r["id"] for r in out] == ["r0", "r1", "r2", "r3"]
    assert all(r["status"] in ("kept", "dropped") and len(r["samples"]) == 2 for r in out)
    assert all(r["generated_tokens"] > 0 and r["latency_s"] > 0 for r in out)
    assert out[0]["latency_s"] > max(r["latency_s"] for r in out[1:])
    assert out[0]["meta"] == json.dumps({"k": 0}) and out[0]["config_hash"] == "h"


def test_a_failing_row_is_rejected_alone_with_its_error():
    def reply(prompt, i, call):
        if "POISON" in prompt:
            raise RuntimeError("engine refused the prompt")
        return _reply(prompt, i, call)

    out = _run([_row(0), _row(1, "What is POISON plus 1?"), _row(2)], {"sample": _spec()}, Script(reply))
    assert [r["status"] for r in out][1] == "rejected"
    assert out[1]["reason"] == "RuntimeError: engine refused the prompt" and out[1]["samples"] == []
    assert out[0]["status"] != "rejected" and out[2]["status"] != "rejected"


def test_a_dead_engine_fails_the_whole_batch():
    def reply(prompt, i, call):
        if "2 plus 2" in prompt:
            raise EngineDead("vLLM engine died")
        return _reply(prompt, i, call)

    with pytest.raises(EngineDead):
        _run([_row(i) for i in range(4)], {"sample": _spec()}, Script(reply))


def test_prechecked_rows_never_reach_the_engine():
    engine = Script(_reply)
    rows = [_row(0, reject="invalid JSON"), _row(1, "word " * 50), _row(2)]
    order: list[int] = []
    out = _run(rows, {"sample": _spec()}, engine, max_model_len=40, order=order)
    assert order == [0, 1, 2]  # refused rows leave first, before any engine call returns
    assert out[0]["status"] == "rejected" and out[0]["reason"] == "invalid JSON"
    assert out[1]["status"] == "rejected" and out[1]["reason"].startswith("input too long: ")
    assert out[2]["status"] != "rejected"
    assert all("word word" not in c.messages[-1]["content"] for c in engine.calls)
    assert out[0]["busy_s"] is None and out[2]["busy_s"] >= 0


def test_jobs_share_a_batch_each_with_its_own_program():
    """Evaluation: System 1 (direct, one call) and System 2 rows in one batch, all concurrent."""
    specs = {"system1": _spec("direct", filter=None, n=1), "system2": _spec("rar1", filter=None, n=3)}
    engine = Script(lambda p, i, c: "Answer: 4")
    out = _run([_row(1, job="system1"), _row(2, job="system2")], specs, engine)
    assert [r["method"] for r in out] == ["direct", "rar1"]
    assert [r["status"] for r in out] == ["answered", "answered"] and out[1]["target"] == "4"
    assert len(engine.rounds) == 1 and [c.n for c in engine.calls] == [1, 3]  # both rows' first calls at once


def test_busy_clock_counts_overlapping_rows_once():
    clock = BusyClock()

    async def batch(delays):
        specs = {"sample": _spec("rar1", n=1)}
        engine = Script(lambda p, i, c: "Answer: 1", delay=lambda p: delays[int(p.split()[2])])
        return await _collect([_row(i) for i in range(len(delays))], specs, engine, clock)

    async def both():
        return await asyncio.gather(batch([0.2, 0.1]), batch([0.15]))

    a, b = asyncio.run(both())
    shares = [r["busy_s"] for r in a + b]
    # three rows ran in parallel for ~0.2 s: the shares add up to that, not to the 0.45 s of row time
    assert sum(shares) == pytest.approx(0.2, abs=0.05)
    assert sum(r["latency_s"] for r in a + b) == pytest.approx(0.45, abs=0.05)
