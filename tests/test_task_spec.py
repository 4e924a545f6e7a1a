"""A user's own task: the task spec (answer kinds, scoring, format, system prompt), their own
System 2 program (import path or YAML templates), the paper's baselines as config, and the
errors a spec that cannot work gives. Fast: programs run on a scripted fake engine."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from s2d_ray.config import load_config
from s2d_ray.errors import S2DError
from s2d_ray.programs import Call, Completion, Sample, get_program, program_fingerprint
from fakes import Script, drive
from s2d_ray.programs.filters import no_filter, usc
from s2d_ray.tasks import TaskSpec, get_task

ROOT = Path(__file__).resolve().parents[1]
TICKETS = {"name": "tickets", "answer": "label", "labels": {"Billing": ["invoice", "refund"], "Technical": ["bug"], "Account": []},
           "system_prompt": "You are a support triage assistant."}


def _drive(run, reply):
    """Drive one run on a fake engine; (its result, the calls of each of its steps)."""
    engine = Script(lambda prompt, i, call: reply(call, i))
    (result,) = drive([run], engine)
    if isinstance(result, BaseException):
        raise result
    return result, engine.rounds


# --------------------------------------------------------------------------- the spec


def test_builtin_tasks_are_task_specs():
    assert get_task("biased_qa").spec.scorer == "contains"
    assert get_task("coin_flip").spec.instruction == "Answer with just yes or no."
    assert get_task("last_letter").spec.answer == "letters"


def test_label_spec_formats_prompts_and_scores_by_label():
    spec = TaskSpec(**TICKETS)
    assert spec.instruction == "Answer with just one of: Billing, Technical, Account."
    assert spec.is_correct("Category: refund", {"answer": "Billing"})
    assert not spec.is_correct("Shipping", {"answer": "Billing"})
    program = get_program("direct", spec)
    call = program.call(program.system1_input({"input": "I was charged twice."}))
    assert call.messages[0] == {"role": "system", "content": "You are a support triage assistant."}
    assert call.messages[1]["content"].endswith(spec.instruction)


def test_numeric_scoring_ignores_units_and_formatting():
    spec = TaskSpec(answer="number")
    assert spec.scorer == "numeric"
    assert spec.is_correct("So she pays $1,800.00 in total.", {"answer": "1800"})
    assert spec.is_correct("Answer: 18 dollars", {"answer": "18.0"})
    assert not spec.is_correct("Answer: 17", {"answer": "18"})


def test_exact_and_contains_scoring_use_aliases_and_wrong():
    exact = TaskSpec(scoring="exact")
    assert exact.is_correct("Answer: NYC", {"answer": "New York", "aliases": "NYC|New York City"})
    contains = TaskSpec(scoring="contains")
    row = {"input": "Which city?", "answer": "Paris", "wrong": "Lyon"}
    assert contains.is_correct("It is certainly Paris.", row)
    assert not contains.is_correct("Paris or Lyon.", row)


@pytest.mark.parametrize("override,message", [
    ("task={answer: label, labels: []}", r"config: task: answer label needs a non-empty `labels`"),
    ("task={answer: choice, labels: {}}", r"config: task.labels: the label set is empty"),
    ("task={answer: regex, pattern: 'Total: \\d+'}", r"config: task.pattern: needs a group"),
    ("task={answer: regex, pattern: '(unclosed'}", r"config: task.pattern: invalid regular expression"),
    ("task={answer: number, colour: red}", r"config: task.colour: unknown key"),
    ("task=no_such_task", r"config: task: unknown task 'no_such_task'"),
    ("sample.method=no_such_module_xyz:Program", r"config: sample.method: cannot import 'no_such_module_xyz'"),
    ("sample.method=s2d_ray.tasks:TaskSpec", r"config: sample.method: s2d_ray.tasks:TaskSpec is not a Program subclass"),
    ("sample.method=tot", r"config: sample.method: unknown method 'tot'"),
])
def test_specs_that_cannot_work_are_one_line_errors(override, message):
    with pytest.raises(S2DError, match=message):
        load_config(None, [override])


def test_cli_exits_2_naming_the_field(tmp_path):
    res = subprocess.run([str(Path(sys.executable).parent / "s2d"), "sample", str(ROOT / "configs" / "smoke.yaml"),
                          "--set", "task={answer: label, labels: []}"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["s2d: config: task: answer label needs a non-empty `labels` list (or label -> aliases mapping)"]


def test_free_text_answers_need_a_filter_that_does_not_vote():
    with pytest.raises(S2DError, match="free-text answers cannot be compared; use usc"):
        load_config(None, ["task={answer: text}", "sample.filter.kind=majority"])
    assert load_config(None, ["task={answer: text}", "sample.filter.kind=usc"]).task_spec.answer == "text"


def test_file_inputs_are_read_whole_unless_a_count_is_set():
    cfg = load_config(None)
    assert cfg.data.n_train is None and cfg.data.n_test is None


# --------------------------------------------------------------------------- the user's programs

TEMPLATE = """\
steps:
  - name: facts
    prompt: "List the facts in this message, without opinions: {input}"
  - name: verdict
    prompt: "Facts: {facts}\\nCustomer tier: {tier}\\n{format}"
    n: 2
columns: [tier]
"""


def test_template_program_runs_its_steps_in_chains(tmp_path):
    path = tmp_path / "triage.yaml"
    path.write_text(TEMPLATE)
    program = get_program(str(path), TaskSpec(**TICKETS))
    row = {"input": "I was billed twice!!", "meta": {"tier": "gold"}}

    def reply(call, i):
        prompt = call.messages[-1]["content"]
        return f"fact {i}" if prompt.startswith("List") else ("Billing" if "fact 0" in prompt else "invoice")

    samples, rounds = _drive(program.run(row, 3), reply)
    assert [len(r) for r in rounds] == [1, 3]  # one prompt with n=3, then one call per chain
    assert rounds[0][0].n == 3 and all(c.n == 2 for c in rounds[1])
    assert rounds[1][0].messages[0]["role"] == "system"
    assert "Customer tier: gold" in rounds[1][0].messages[-1]["content"]
    assert rounds[1][0].messages[-1]["content"].endswith("Answer with just one of: Billing, Technical, Account.")
    assert len(samples) == 6 and {s.answer for s in samples} == {"Billing"}
    assert samples[0].reasoning == ["fact 0", "Billing"]
    with pytest.raises(ValueError, match=r"needs input columns \['tier'\]"):
        _drive(program.run({"input": "x", "meta": {}}, 1), reply)


@pytest.mark.parametrize("body,message", [
    ("steps:\n  - name: a\n    prompt: '{input} {b}'\n  - name: b\n    prompt: '{a}'\n", r"steps\[0\] \(a\): template names \{b\}"),
    ("steps:\n  - name: a\n    prompt: '{nope}'\n", r"template names \{nope\}"),
    ("steps: []\n", r"steps: List should have at least 1 item"),
    ("steps:\n  - name: input\n    prompt: 'x'\n", r"name 'input' is already taken"),
    ("steps:\n  - {name: a, prompt: 'x', temperature: 9}\n", r"steps.0.temperature"),
])
def test_bad_templates_are_one_line_errors_naming_the_field(tmp_path, body, message):
    path = tmp_path / "p.yaml"
    path.write_text(body)
    with pytest.raises(S2DError, match=rf"config: sample.method: {path}: .*{message}"):
        load_config(None, [f"sample.method={path}"])


def test_template_and_import_path_programs_are_part_of_the_config_hash(tmp_path, monkeypatch):
    path = tmp_path / "p.yaml"
    path.write_text(TEMPLATE)
    before = program_fingerprint(str(path))
    path.write_text(TEMPLATE.replace("without opinions", "without any opinion"))
    assert program_fingerprint(str(path)) != before
    (tmp_path / "myprog.py").write_text(textwrap.dedent("""
        from s2d_ray.programs import Program, Sample
        class Echo(Program):
            name = "echo"
            def run(self, row, n):
                (outs,) = yield [self.call(row["input"], n=n)]
                return [Sample(self.extract(o.text), [o.text], o.tokens) for o in outs]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    first = program_fingerprint("myprog:Echo")
    assert get_program("myprog:Echo").name == "echo" and len(first) == 12 and first != program_fingerprint("s2a")


# --------------------------------------------------------------------------- baselines and USC


def test_direct_and_no_filter_are_the_papers_baselines():
    cfg = load_config(None, ["sample.method=direct", "sample.filter.kind=none"])
    assert get_program(cfg.sample.method).name == "direct"
    spec = TaskSpec(answer="number")
    samples = [Sample(None), Sample("17"), Sample("18"), Sample("18.0")]
    d, _ = _drive(no_filter(samples, 0.9, "q", spec.answers), lambda c, i: "")
    assert (d.kept, d.target, d.agreement) == (True, "17", 0.25)  # kept whatever the agreement


def test_usc_on_free_text_keeps_the_selected_full_response():
    spec = TaskSpec(answer="text")
    replies = ["Dear customer, we refunded you.", "Hello, a refund is on the way.", "Please call us."]
    samples = [Sample(spec.extract(r), [f"draft {i}", r], 4) for i, r in enumerate(replies)]
    d, rounds = _drive(usc(samples, 0.9, "Write the reply", spec.answers),
                       lambda c, i: "The most consistent response is Response 1")
    prompt = rounds[0][0].messages[-1]["content"]
    assert "Response 1: Hello, a refund is on the way." in prompt and "draft" not in prompt
    assert (d.kept, d.target, d.agreement) == (True, "Hello, a refund is on the way.", None)  # no agreement gate
