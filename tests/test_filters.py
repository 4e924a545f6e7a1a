"""Self-consistency filters (s2d_ray.programs.filters): majority, perturbation, usc."""

from __future__ import annotations

import pytest

from s2d_ray.programs.base import Call, Completion, Sample
from fakes import drive
from s2d_ray.answers import AnswerSpec
from s2d_ray.programs.filters import FILTERS, Decision, majority, majority_vote, no_filter, perturbation, usc

ANSWERS = AnswerSpec()

QUESTION = "What is the capital of France?"


def S(answer, view="original"):
    return Sample(answer, [f"... {answer}"], 3, view)


def run_filter(run, generate=None):
    """Drive a filter generator; filters that need no model must not call ``generate``."""

    def refuse(calls):
        raise AssertionError(f"filter asked the model: {calls}")

    (result,) = drive([run], generate or refuse)
    if isinstance(result, BaseException):
        raise result
    assert isinstance(result, Decision)
    return result


def test_registry():
    assert FILTERS == {"majority": majority, "usc": usc, "perturbation": perturbation, "none": no_filter}


# --------------------------------------------------------------------------- majority


def test_majority_clear_majority_is_kept():
    samples = [S("Paris"), S("Paris"), S("Lyon"), S("Paris")]
    d = run_filter(majority(samples, 0.6, QUESTION, ANSWERS))
    assert d == Decision(True, "Paris", 0.75, None)


def test_majority_normalises_votes():
    samples = [S("Paris."), S("paris"), S("The Paris!"), S("Lyon")]
    d = run_filter(majority(samples, 0.6, QUESTION, ANSWERS))
    assert d.kept
    assert d.agreement == 0.75
    assert d.target == "Paris."  # the first spelling of the winning vote is the target


def test_majority_below_min_agreement_is_dropped_with_reason():
    samples = [S("Paris"), S("Paris"), S("Lyon"), S("Marseille"), S(None)]
    d = run_filter(majority(samples, 0.6, QUESTION, ANSWERS))
    assert not d.kept
    assert d.target == "Paris"
    assert d.agreement == pytest.approx(0.4)
    assert d.reason == "agreement 0.40 < 0.6"


def test_majority_exactly_at_threshold_is_kept():
    d = run_filter(majority([S("a1"), S("a1"), S("b2"), S("c3"), S("a1")], 0.6, QUESTION, ANSWERS))
    assert d.kept and d.agreement == pytest.approx(0.6)


def test_majority_unparseable_samples_count_against():
    # 2 of 4 say Paris, 2 have no answer: agreement is 2/4, not 2/2.
    d = run_filter(majority([S("Paris"), S(None), S("Paris"), S("")], 0.6, QUESTION, ANSWERS))
    assert not d.kept
    assert d.agreement == 0.5
    assert d.reason == "agreement 0.50 < 0.6"


def test_majority_tie_is_dropped():
    d = run_filter(majority([S("Paris"), S("Lyon"), S("lyon."), S("PARIS")], 0.0, QUESTION, ANSWERS))
    assert not d.kept
    assert d.target is None
    assert d.agreement == 0.5
    assert d.reason == "tie between answers"


def test_majority_no_parseable_answer_is_dropped():
    d = run_filter(majority([S(None), S(""), S("..."), S(None)], 0.0, QUESTION, ANSWERS))
    assert d == Decision(False, None, 0.0, "no parseable answer")


def test_majority_single_sample():
    assert run_filter(majority([S("Paris")], 1.0, QUESTION, ANSWERS)) == Decision(True, "Paris", 1.0, None)


def test_majority_vote_helper():
    assert majority_vote([S("x"), S("X."), S("y")]) == ("x", pytest.approx(2 / 3), False)
    assert majority_vote([S("x"), S("y")])[2] is True
    assert majority_vote([S(None)]) == (None, 0.0, False)


# --------------------------------------------------------------------------- perturbation


def test_perturbation_views_agree_is_kept():
    samples = [S("B"), S("B"), S("tie"), S("B", "swapped"), S("b", "swapped"), S("B", "swapped")]
    d = run_filter(perturbation(samples, 0.6, QUESTION, ANSWERS))
    assert d.kept
    assert d.target == "B"
    assert d.agreement == pytest.approx(2 / 3)  # the weakest view's agreement
    assert d.reason is None


def test_perturbation_views_disagree_is_dropped():
    samples = [S("B"), S("B"), S("tie", "swapped"), S("tie", "swapped")]
    d = run_filter(perturbation(samples, 0.6, QUESTION, ANSWERS))
    assert not d.kept
    assert d.reason == "views disagree"
    assert d.agreement == 1.0


def test_perturbation_a_view_without_majority_is_dropped_and_named():
    swapped = [S("B", "swapped"), S("B", "swapped"), S("tie", "swapped"), S(None, "swapped"), S(None, "swapped")]
    d = run_filter(perturbation([S("B"), S("B"), S("B"), *swapped], 0.6, QUESTION, ANSWERS))
    assert not d.kept
    assert d.target == "B"
    assert d.reason == "view swapped: agreement 0.40 < 0.6"


def test_perturbation_tie_in_a_view():
    samples = [S("B"), S("tie"), S("B", "swapped"), S("B", "swapped")]
    d = run_filter(perturbation(samples, 0.0, QUESTION, ANSWERS))
    assert not d.kept and d.reason == "view original: tie between answers"




def test_majority_counts_verdict_a():
    d = run_filter(majority([S("A"), S("A"), S("B")], 0.6, QUESTION, ANSWERS))
    assert d.kept and d.target == "A"


def test_perturbation_keeps_consistent_verdict_a():
    samples = [S("A"), S("A"), S("A", "swapped"), S("A", "swapped")]
    d = run_filter(perturbation(samples, 0.6, QUESTION, ANSWERS))
    assert d.kept and d.target == "A" and d.agreement == 1.0


def test_perturbation_drops_position_biased_a_vs_b():
    # What BSM produces for a judge that always picks the first slot: A, then B once swapped back.
    samples = [S("A"), S("A"), S("B", "swapped"), S("B", "swapped")]
    d = run_filter(perturbation(samples, 0.6, QUESTION, ANSWERS))
    assert not d.kept and d.reason == "views disagree"


def test_perturbation_single_view_is_plain_majority():
    d = run_filter(perturbation([S("Paris"), S("paris"), S("Lyon")], 0.6, QUESTION, ANSWERS))
    assert d.kept and d.target == "Paris"


# --------------------------------------------------------------------------- usc


class ScriptedJudge:
    def __init__(self, text):
        self.text = text
        self.calls: list[Call] = []

    def __call__(self, calls):
        self.calls.extend(calls)
        return [[Completion(self.text, tokens=8)] * c.n for c in calls]


def test_usc_picks_the_response_the_model_names():
    samples = [S("Paris is the capital."), S("It's Paris."), S(None), S("Lyon")]
    judge = ScriptedJudge("The most consistent response is Response 1, because it matches the others.")
    d = run_filter(usc(samples, 0.2, QUESTION, ANSWERS), judge)
    assert len(judge.calls) == 1
    (call,) = judge.calls
    assert call.n == 1 and call.temperature == 0.0
    prompt = call.messages[-1]["content"]
    assert QUESTION in prompt
    # Only samples with an answer are listed, numbered in order, each as its full final response
    # (the model judges consistency of responses, not of extracted spans).
    assert "Response 0: ... Paris is the capital." in prompt
    assert "Response 1: ... It's Paris." in prompt
    assert "Response 2: ... Lyon" in prompt
    assert "Response 3" not in prompt
    assert d.kept
    assert d.target == "It's Paris."
    # Agreement is over all samples by vote key: only the chosen sample itself matches.
    assert d.agreement == 0.25


def test_usc_agreement_below_threshold_is_dropped():
    samples = [S("Paris"), S("Lyon"), S("Lyon"), S("Nice")]
    d = run_filter(usc(samples, 0.6, QUESTION, ANSWERS), ScriptedJudge("The most consistent response is Response 1"))
    assert not d.kept
    assert d.target == "Lyon"
    assert d.agreement == 0.5
    assert d.reason == "agreement 0.50 < 0.6"


@pytest.mark.parametrize(
    "text",
    [
        "I like all of them equally!!",
        "",
        "The most consistent response is Response 7",  # out of range
        "The most consistent response is the first one.",
    ],
)
def test_usc_garbage_choice_is_dropped(text):
    samples = [S("Paris"), S("Paris"), S("Lyon")]
    judge = ScriptedJudge(text)
    d = run_filter(usc(samples, 0.0, QUESTION, ANSWERS), judge)
    assert len(judge.calls) == 1
    assert d == Decision(False, None, 0.0, "usc: no valid choice")


def test_usc_without_answers_does_not_ask_the_model():
    d = run_filter(usc([S(None), S("")], 0.0, QUESTION, ANSWERS))  # run_filter's default refuses model calls
    assert d == Decision(False, None, 0.0, "no parseable answer")


def test_filters_batch_through_the_driver():
    judge = ScriptedJudge("The most consistent response is Response 0")
    runs = [
        usc([S("Paris"), S("Paris")], 0.5, "q1", ANSWERS),
        majority([S("x"), S("x")], 0.5, "q2", ANSWERS),
        usc([S("Rome")], 0.5, "q3", ANSWERS),
    ]
    results = drive(runs, judge)
    assert len(judge.calls) == 2  # only the usc rows asked, in one batch
    assert [r.target for r in results] == ["Paris", "x", "Rome"]
    assert all(r.kept for r in results)
