"""System 2 programs driven by a scripted async engine (control flow and parsing, no model)."""

from __future__ import annotations

import re

import pytest

from s2d_ray.errors import S2DError
from s2d_ray.programs import PROGRAMS, Call, Completion, Sample, get_program
from fakes import Script, drive
from s2d_ray.tasks import TaskSpec, get_task

QA = get_task("biased_qa")
QUESTION = "I think the answer is Sydney, but I'm really not sure. What is the capital of Australia?"
ROW = {"id": "r1", "input": QUESTION, "answer": "Canberra", "meta": {}}


def run_one(program, row, n, generate):
    (result,) = drive([program.run(row, n)], generate)
    if isinstance(result, BaseException):
        raise result
    return result


def test_editing_a_prompt_changes_the_fingerprint_and_the_sampling_config_hash(tmp_path, monkeypatch):
    """A program's prompts are part of the sampling config hash: after an edit, a run never
    resumes onto samples of the old prompt."""
    import linecache
    import sys
    from pathlib import Path

    from s2d_ray.config import load_config
    from s2d_ray.programs import program_fingerprint, s2a
    from s2d_ray.stage import sample_spec

    prints = {name: program_fingerprint(name) for name in PROGRAMS}
    assert len(set(prints.values())) == len(PROGRAMS) and prints["s2a"] == program_fingerprint("s2a")
    module = tmp_path / "my_s2a.py"  # a copy of a real program, as the user's own
    module.write_text(Path(s2a.__file__).read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_config(None, ["sample.method=my_s2a:S2A"])
    before, before_hash = program_fingerprint("my_s2a:S2A"), sample_spec(cfg).config_hash
    assert before == program_fingerprint("my_s2a:S2A") and sample_spec(cfg).config_hash == before_hash
    module.write_text(module.read_text().replace("word for word", "verbatim"))
    sys.modules.pop("my_s2a")
    linecache.checkcache()  # as a new process would read the edited file
    assert program_fingerprint("my_s2a:S2A") != before
    assert sample_spec(cfg).config_hash != before_hash


def test_registry():
    assert set(PROGRAMS) == {"direct", "rar1", "rar2", "s2a", "cot", "bsm"}
    for name in PROGRAMS:
        assert get_program(name).name == name
    with pytest.raises(S2DError, match="unknown method 'tot'"):
        get_program("tot")


# --------------------------------------------------------------------------- direct


def test_direct_one_call_with_n():
    program = get_program("direct", QA.spec)
    answers = ["Canberra.", "Answer: Sydney", "**Canberra**", "   "]
    gen = Script(lambda p, i, c: answers[i])
    samples = run_one(program, ROW, 4, gen)
    assert len(gen.rounds) == 1
    (call,) = gen.rounds[0]
    assert call.n == 4
    prompt = call.messages[0]["content"]
    assert prompt == program.system1_input(ROW)
    assert prompt.startswith(QUESTION) and prompt.endswith(QA.spec.instruction)
    assert [s.answer for s in samples] == ["Canberra", "Sydney", "Canberra", None]
    assert all(isinstance(s, Sample) and s.view == "original" for s in samples)
    assert samples[1].reasoning == ["Answer: Sydney"]
    assert samples[1].tokens == 2


def test_system1_input_without_task_format_is_the_raw_input():
    assert get_program("direct").system1_input({"input": "Hello there.  "}) == "Hello there."


# --------------------------------------------------------------------------- cot, rar1


@pytest.mark.parametrize(
    ("name", "marker"),
    [("cot", "Let's think step by step."), ("rar1", "Rephrase and expand the question, and respond.")],
)
def test_single_step_reasoning_programs(name, marker):
    program = get_program(name, TaskSpec(answer="yes_no", format="Answer with just yes or no."))
    row = {"input": "A coin is heads up. Ada flips the coin. Is the coin still heads up?", "meta": {}}
    outs = [
        "Ada flips once, so it is tails.\nAnswer: no",
        "One flip.\nSo the final answer is: No.",
        "It is heads up? yes... no wait.\nAnswer: yes",
    ]
    gen = Script(lambda p, i, c: outs[i])
    samples = run_one(program, row, 3, gen)
    assert len(gen.rounds) == 1 and len(gen.rounds[0]) == 1
    call = gen.rounds[0][0]
    assert call.n == 3
    prompt = call.messages[0]["content"]
    assert row["input"] in prompt and marker in prompt
    # The reasoning step names the answer's shape (final_line), not the System 1 format ("just ...").
    assert "'Answer: <answer>'. The answer is yes or no." in prompt and "just" not in prompt
    assert [s.answer for s in samples] == ["no", "no", "yes"]
    assert [s.reasoning for s in samples] == [[o] for o in outs]


def test_cot_letters():
    program = get_program("cot", TaskSpec(answer="letters", format=""))
    gen = Script(lambda p, i, c: 'Elon -> n, Musk -> k.\nAnswer: "nk"')
    samples = run_one(program, {"input": 'Take the last letters of "Elon Musk".', "meta": {}}, 2, gen)
    assert [s.answer for s in samples] == ["nk", "nk"]
    # The reasoning step's last line names the kind's shape; "just" would make the model skip reasoning.
    assert gen.prompts(0)[0].endswith("'Answer: <answer>'. The answer is the letters, nothing else.")


# --------------------------------------------------------------------------- rar2


def test_rar2_rephrase_then_answer_each():
    program = get_program("rar2", QA.spec)

    def reply(prompt, i, call):
        if "rephrase and expand it" in prompt:
            return f"Which city is the capital of Australia? (version {i})"
        m = re.search(r"\(version (\d)\)", prompt)
        return ["Sydney is the largest city, but the capital is Canberra.\nAnswer: Canberra",
                "The rephrased question asks for the seat of government.\nAnswer: Canberra.",
                "Many people think so.\nAnswer: Sydney"][int(m.group(1))]

    gen = Script(reply)
    samples = run_one(program, ROW, 3, gen)
    assert len(gen.rounds) == 2
    (first,) = gen.rounds[0]
    assert first.n == 3 and QUESTION in first.messages[0]["content"]
    second = gen.rounds[1]
    assert len(second) == 3 and all(c.n == 1 for c in second)
    for i, c in enumerate(second):
        prompt = c.messages[0]["content"]
        assert f"(original) {QUESTION}" in prompt
        assert f"(rephrased) Which city is the capital of Australia? (version {i})" in prompt
        # Deng et al.'s respond step reasons freely; the answer is asked for on the last line.
        assert "Use your answer for the rephrased question to answer the original question." in prompt
        assert "'Answer: <answer>'" in prompt and prompt.endswith(QA.spec.final_instruction)
    assert [s.answer for s in samples] == ["Canberra", "Canberra", "Sydney"]
    assert samples[2].reasoning == ["Which city is the capital of Australia? (version 2)", "Many people think so.\nAnswer: Sydney"]
    assert samples[2].tokens == len("Which city is the capital of Australia? (version 2)".split()) + 6


# --------------------------------------------------------------------------- s2a


def test_s2a_rewrite_n_then_n_single_answers():
    program = get_program("s2a", QA.spec)
    rewrites = [f"What is the capital of Australia? [{i}]" for i in range(5)]
    finals = ["Canberra", "Canberra.", "The answer is **Canberra**", "Sydney", ""]

    def reply(prompt, i, call):
        if prompt.startswith("The text below was written by a user"):
            return rewrites[i]
        j = int(re.search(r"\[(\d)\]", prompt).group(1))
        assert i == 0
        return finals[j]

    gen = Script(reply)
    samples = run_one(program, ROW, 5, gen)
    # Step 1: one call with n=N; step 2: N calls with n=1.
    assert [len(r) for r in gen.rounds] == [1, 5]
    assert gen.rounds[0][0].n == 5
    assert f'Text by user: """{QUESTION}"""' in gen.prompts(0)[0]
    assert all(c.n == 1 for c in gen.rounds[1])
    for i, prompt in enumerate(gen.prompts(1)):
        # The answer step sees only the rewritten question, not the user's opinion.
        assert prompt.startswith(rewrites[i])
        assert "Sydney" not in prompt
        assert prompt.endswith(QA.spec.instruction)
    assert [s.answer for s in samples] == ["Canberra", "Canberra", "Canberra", "Sydney", None]
    assert [s.reasoning[0] for s in samples] == rewrites
    assert samples[0].tokens == len(rewrites[0].split()) + 1


def test_s2a_asks_n_rewrites_in_one_call_then_one_answer_per_rewrite():
    program = get_program("s2a", QA.spec)
    rows = [{"input": f"Question {k}?", "meta": {}} for k in range(3)]
    gen = Script(lambda p, i, c: f"rewrite {i}" if p.startswith("The text below") else "Answer: x")
    results = drive([program.run(r, 4) for r in rows], gen)
    rewrites = [c for c in gen.calls if c.messages[-1]["content"].startswith("The text below")]
    assert [c.n for c in rewrites] == [4, 4, 4] and gen.rounds[0] == rewrites  # every row's first step at once
    answers = [c for c in gen.calls if c not in rewrites]
    assert len(answers) == 12 and all(c.n == 1 for c in answers)
    assert all(len(r) == 4 and all(s.answer == "x" for s in r) for r in results)


# --------------------------------------------------------------------------- bsm

RESP_GOOD = "The capital of Australia is Canberra."
RESP_BAD = "Sydney, obviously."
BSM_ROW = {"input": "What is the capital of Australia?", "meta": {"response_a": RESP_GOOD, "response_b": RESP_BAD}}


def _bsm_reply(merge_verdict):
    """Branch: 2 criteria; solve: scores; merge: ``merge_verdict(prompt)``."""

    def reply(prompt, i, call):
        if "Propose an evaluation plan" in prompt:
            return "1. correctness\n2. helpfulness"
        if "Evaluate both responses only on this criterion" in prompt:
            return "A: 9, B: 2"
        assert "which response is better overall?" in prompt
        return merge_verdict(prompt)

    return reply


def _good_is_in_slot_a(prompt: str) -> bool:
    return f"[Response A]\n{RESP_GOOD}" in prompt


def test_bsm_runs_both_views_and_maps_swapped_verdicts_back():
    program = get_program("bsm")
    assert program.answers.kind == "choice"
    # A consistent judge: always prefers the good response, wherever it is shown.
    gen = Script(_bsm_reply(lambda p: "A" if _good_is_in_slot_a(p) else "Response B is better."))
    n = 3
    samples = run_one(program, BSM_ROW, n, gen)

    assert [len(r) for r in gen.rounds] == [1, n * 2 * 2, n * 2]
    (branch,) = gen.rounds[0]
    # Saha et al.: the plan comes from the question alone, never from the responses.
    assert branch.n == n and BSM_ROW["input"] in branch.messages[0]["content"]
    assert RESP_GOOD not in branch.messages[0]["content"] and RESP_BAD not in branch.messages[0]["content"]
    solve = gen.prompts(1)
    # Every plan's criteria are solved in both orders: the same criteria for each view.
    for criterion in ("correctness", "helpfulness"):
        asked = [p for p in solve if f"criterion: {criterion}" in p]
        assert len(asked) == 2 * n
        assert sum(_good_is_in_slot_a(p) for p in asked) == n
        assert sum(f"[Response A]\n{RESP_BAD}" in p and f"[Response B]\n{RESP_GOOD}" in p for p in asked) == n
    for merge in gen.prompts(2):
        assert "- correctness: A: 9, B: 2" in merge and "- helpfulness: A: 9, B: 2" in merge

    assert [s.view for s in samples] == ["original", "swapped"] * n
    assert [s.answer for s in samples] == ["A"] * (2 * n)
    s = samples[-1]
    assert len(s.reasoning) == 1 + 2 + 1  # branch, two solves, merge
    assert s.reasoning[-1] == "Response B is better."
    plan = len("1. correctness\n2. helpfulness".split())
    assert s.tokens == 2 * 4 + 4 and samples[-2].tokens == plan + 2 * 4 + 1  # the plan counted once


def test_bsm_position_biased_judge_gives_inconsistent_verdicts():
    gen = Script(_bsm_reply(lambda p: "A"))  # always the first slot
    samples = run_one(get_program("bsm"), BSM_ROW, 2, gen)
    assert {s.view: s.answer for s in samples} == {"original": "A", "swapped": "B"}


def test_bsm_tie_and_unparseable_verdicts():
    verdicts = iter(["tie", "I cannot decide.", "Verdict: tie", "hmm"])
    gen = Script(_bsm_reply(lambda p: next(verdicts)))
    samples = run_one(get_program("bsm"), BSM_ROW, 2, gen)
    assert [s.answer for s in samples] == ["tie", None, "tie", None]  # plan 0 (both views), plan 1


def test_bsm_criteria_parsing_caps_and_falls_back():
    def reply(prompt, i, call):
        if "Propose an evaluation plan" in prompt:
            return (["1) accuracy\n2) clarity\n- depth\n* tone\n5. style", "Just check accuracy."][i])
        if "criterion:" in prompt:
            return "A: 5, B: 5"
        return "tie"

    gen = Script(reply)
    run_one(get_program("bsm"), BSM_ROW, 2, gen)
    crit = [re.search(r"criterion: (.*)\n", p).group(1) for p in gen.prompts(1)]
    # Plan 0 has 3 (capped) list items, plan 1 its whole text as one criterion; each in both views.
    assert crit == ["accuracy", "clarity", "depth"] * 2 + ["Just check accuracy."] * 2


def test_bsm_needs_both_responses():
    program = get_program("bsm")
    bad = {"input": "q", "meta": {"response_a": "x"}}
    with pytest.raises(ValueError, match="response_a and response_b"):
        program.system1_input(bad)
    gen = Script(lambda p, i, c: "A")
    (result,) = drive([program.run(bad, 2)], gen)
    assert isinstance(result, ValueError)
    assert gen.rounds == []


def test_system1_program_answers_the_distilled_programs_prompt():
    """Evaluation's System 1 / distilled jobs: the prompt the distillation set trained on (BSM:
    the judging prompt with both responses), not the bare input."""
    from s2d_ray.programs import system1_program
    from s2d_ray.tasks import get_task

    spec = get_task("pairwise").spec
    program = system1_program("bsm", spec)
    gen = Script(lambda p, i, c: "Response B is better.\nAnswer: B")
    (sample,) = run_one(program, BSM_ROW, 1, gen)
    (prompt,) = gen.prompts(0)
    assert prompt == get_program("bsm", spec).system1_input(BSM_ROW) == program.system1_input(BSM_ROW)
    assert RESP_GOOD in prompt and RESP_BAD in prompt
    assert sample.answer == "B"
    assert get_program("direct", spec).system1_input(BSM_ROW).startswith(BSM_ROW["input"])


def test_bsm_system1_input():
    text = get_program("bsm").system1_input(BSM_ROW)
    assert text.startswith("[User Question]\nWhat is the capital of Australia?")
    assert f"[Response A]\n{RESP_GOOD}" in text and f"[Response B]\n{RESP_BAD}" in text
    assert text.endswith("Answer with just A, B or tie.")


# --------------------------------------------------------------------------- the async driver


def _steps(k, tag):
    """A generator with ``k`` single-call steps; returns the texts it received."""
    seen = []
    for j in range(k):
        (outs,) = yield [Call([{"role": "user", "content": f"{tag}-{j}"}])]
        seen.append(outs[0].text)
    return seen


def _fails_at_start():
    raise RuntimeError("bad row")
    yield  # pragma: no cover


def _fails_later():
    yield [Call([{"role": "user", "content": "late-0"}])]
    raise KeyError("missing field")


def _asks_nothing_first():
    got = yield []
    assert got == []
    (outs,) = yield [Call([{"role": "user", "content": "after-empty"}])]
    return outs[0].text


def test_drive_isolates_row_failures():
    gen = Script(lambda p, i, c: f"echo:{p}")
    runs = [_steps(3, "a"), _fails_at_start(), _steps(1, "b"), _fails_later(), _asks_nothing_first()]
    results = drive(runs, gen)
    assert results[0] == ["echo:a-0", "echo:a-1", "echo:a-2"]
    assert isinstance(results[1], RuntimeError) and str(results[1]) == "bad row"
    assert results[2] == ["echo:b-0"]
    assert isinstance(results[3], KeyError)
    assert results[4] == "echo:after-empty"
    # Every row's first step is in flight at once.
    assert sorted(gen.prompts(0)) == ["a-0", "after-empty", "b-0", "late-0"]


def test_rows_do_not_wait_for_each_other_between_steps():
    """A row's next step starts as soon as its own step returned: the fast row finishes all its
    steps while the slow row's first step is still running (no lock-step rounds)."""
    gen = Script(lambda p, i, c: p, delay=lambda p: 0.2 if p.startswith("slow") else 0.001)
    results = drive([_steps(1, "slow"), _steps(3, "fast")], gen)
    assert results == [["slow-0"], ["fast-0", "fast-1", "fast-2"]]
    assert [c.messages[-1]["content"] for c in gen.calls] == ["slow-0", "fast-0", "fast-1", "fast-2"]


def test_a_steps_calls_are_sent_together_and_answered_in_order():
    """The calls of one step are all in flight before any returns; outputs come back in call order
    whatever order they finish in."""
    def two_calls():
        outs = yield [Call([{"role": "user", "content": "late"}]), Call([{"role": "user", "content": "early"}])]
        return [o[0].text for o in outs]

    gen = Script(lambda p, i, c: p.upper(), delay=lambda p: 0.05 if p == "late" else 0.0)
    (result,) = drive([two_calls()], gen)
    assert result == ["LATE", "EARLY"]
    assert [sorted(c.messages[-1]["content"] for c in r) for r in gen.rounds] == [["early", "late"]]


def test_drive_with_a_program_raising_mid_run():
    program = get_program("s2a", TaskSpec(format=""))

    def reply(prompt, i, call):
        return "rewrite" if prompt.startswith("The text below") else "Answer: ok"

    class Boom(Exception):
        pass

    def broken_row():
        yield [Call([{"role": "user", "content": "x"}], n=2)]
        raise Boom("parse failed")

    results = drive([program.run({"input": "q1"}, 2), broken_row(), program.run({"input": "q2"}, 2)], Script(reply))
    assert [s.answer for s in results[0]] == ["ok", "ok"]
    assert isinstance(results[1], Boom)
    assert [s.answer for s in results[2]] == ["ok", "ok"]


def test_an_engine_error_fails_only_the_row_whose_call_raised():
    def reply(prompt, i, call):
        if "bad" in prompt:
            raise RuntimeError(f"engine rejected {prompt}")
        return f"echo:{prompt}"

    results = drive([_steps(2, "a"), _steps(2, "bad"), _steps(1, "c")], Script(reply))
    assert results[0] == ["echo:a-0", "echo:a-1"] and results[2] == ["echo:c-0"]
    assert isinstance(results[1], RuntimeError) and "engine rejected bad-0" in str(results[1])


def test_drive_nothing_to_do():
    assert drive([], Script(lambda p, i, c: "x")) == []


KINDS = [dict(answer="short"), dict(answer="yes_no"), dict(answer="letters"), dict(answer="number"),
         dict(answer="label", labels=["plausible", "implausible"]), dict(answer="choice"),
         dict(answer="regex", pattern=r"Total: (\d+)"), dict(answer="text")]


@pytest.mark.parametrize("kind", KINDS, ids=[k["answer"] for k in KINDS])
@pytest.mark.parametrize("method", ["cot", "rar1", "rar2"])
def test_reasoning_steps_ask_for_reasoning_on_every_answer_kind(method, kind):
    """A reasoning step names what its last line holds, never "answer with just ..." (which made
    CoT answer a label task in 3 tokens); System 1 keeps the terse line."""
    from s2d_ray.programs import get_program, system1_program
    from s2d_ray.programs.base import Completion
    from s2d_ray.tasks.spec import TaskSpec

    task = TaskSpec(**kind)
    run = get_program(method, task).run({"input": "Is it plausible that a cat reads?", "meta": {}}, 2)
    calls = next(run)
    if method == "rar2":  # the rephrase step, then the reasoning step
        calls = run.send([[Completion("Can a cat read?", 4)] * c.n for c in calls])
    prompt = calls[0].messages[-1]["content"]
    assert "just" not in prompt.lower(), prompt
    assert "After your reasoning, write the final answer on the last line as 'Answer: <answer>'." in prompt
    if kind["answer"] == "label":
        assert prompt.endswith("The answer is one of: plausible, implausible.")
    system1 = system1_program(method, task).system1_input({"input": "Is it plausible that a cat reads?", "meta": {}})
    assert system1.endswith(task.instruction)
