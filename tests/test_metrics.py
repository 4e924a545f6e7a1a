"""Accuracy intervals, paired bootstrap deltas and per-system summaries (s2d_ray.evaluation.metrics)."""

import pytest

from s2d_ray.evaluation.metrics import paired_bootstrap_delta, summarize, swap_inconsistency, wilson
from s2d_ray.evaluation.report import systems_table


@pytest.mark.parametrize(
    "correct,n,expected",
    [  # Wilson score intervals at z=1.96, worked out by hand
        (0, 10, (0.0, 0.277540)),
        (10, 10, (0.722460, 1.0)),
        (5, 10, (0.236590, 0.763410)),
        (1, 1, (0.206544, 1.0)),
    ],
)
def test_wilson_known_values(correct, n, expected):
    lo, hi = wilson(correct, n)
    assert lo == pytest.approx(expected[0], abs=1e-5)
    assert hi == pytest.approx(expected[1], abs=1e-5)


def test_wilson_no_observations():
    assert wilson(0, 0) == (0.0, 0.0)


@pytest.mark.parametrize("correct,n", [(0, 3), (1, 3), (7, 20), (99, 100), (50, 50), (60, 60), (0, 60)])
def test_wilson_contains_proportion_and_stays_in_unit_interval(correct, n):
    lo, hi = wilson(correct, n)
    assert 0.0 <= lo <= correct / n <= hi <= 1.0
    assert lo < hi


def test_wilson_narrows_with_more_data():
    lo10, hi10 = wilson(5, 10)
    lo1000, hi1000 = wilson(500, 1000)
    assert hi1000 - lo1000 < (hi10 - lo10) / 5


def test_bootstrap_only_shared_ids_count():
    a = {"x": True, "y": False, "only_a": False}
    b = {"x": True, "y": True, "only_b": False}
    delta, _, n = paired_bootstrap_delta(a, b, reps=200)
    assert n == 2
    assert delta == 0.5  # y: False -> True; x unchanged; unshared ids ignored


def test_bootstrap_identical_systems():
    a = {str(i): i % 3 == 0 for i in range(30)}
    assert paired_bootstrap_delta(a, dict(a), reps=500) == (0.0, (0.0, 0.0), 30)


def test_bootstrap_b_better_everywhere():
    a = {str(i): False for i in range(20)}
    b = {str(i): True for i in range(20)}
    assert paired_bootstrap_delta(a, b, reps=500) == (1.0, (1.0, 1.0), 20)


def test_bootstrap_mixed_case():
    a = {str(i): i < 10 for i in range(40)}  # 10/40 right
    b = {str(i): i < 25 for i in range(40)}  # 25/40 right, a superset of a's
    delta, (lo, hi), n = paired_bootstrap_delta(a, b, reps=2000, seed=3)
    assert n == 40
    assert delta == pytest.approx(15 / 40)
    assert lo < delta < hi
    assert 0.0 < lo and hi < 1.0  # diffs are 0 or 1 here, so the interval cannot reach either end
    assert paired_bootstrap_delta(a, b, reps=2000, seed=3) == (delta, (lo, hi), n)


def test_bootstrap_seed_changes_interval_only():
    a = {str(i): i % 2 == 0 for i in range(25)}
    b = {str(i): i % 3 == 0 for i in range(25)}
    d1, ci1, _ = paired_bootstrap_delta(a, b, reps=300, seed=1)
    d2, ci2, _ = paired_bootstrap_delta(a, b, reps=300, seed=2)
    assert d1 == d2
    assert ci1 != ci2


def test_bootstrap_no_shared_ids():
    assert paired_bootstrap_delta({"a": True}, {"b": True}) == (0.0, (0.0, 0.0), 0)


def _row(status="answered", correct=True, tokens=10, latency=1.0, busy=0.5):
    return {"status": status, "correct": correct, "generated_tokens": tokens, "latency_s": latency, "busy_s": busy}


def test_summarize():
    rows = [
        _row(correct=True, tokens=10, latency=1.0, busy=0.5),
        _row(correct=False, tokens=30, latency=3.0, busy=1.5),
        _row(correct=None, tokens=20, latency=2.0, busy=2.0),  # answered, no gold label
        _row(status="rejected", correct=None, tokens=0, latency=None, busy=None),
    ]
    s = summarize(rows)
    assert s["n"] == 2
    assert s["correct"] == 1
    assert s["accuracy"] == 0.5
    assert s["accuracy_ci95"] == list(wilson(1, 2))
    assert s["rejected"] == 1
    assert s["mean_generated_tokens"] == pytest.approx(20.0)  # over the 3 answered rows
    assert "tokens_per_s" not in s and "mean_latency_s" not in s  # rows of several systems share the engine


def test_summarize_rejected_rows_do_not_count():
    rows = [_row(correct=True, tokens=8, busy=2.0), _row(status="rejected", correct=False, tokens=100, latency=50.0, busy=10.0)]
    s = summarize(rows)
    assert (s["n"], s["correct"], s["rejected"]) == (1, 1, 1)
    assert s["mean_generated_tokens"] == pytest.approx(8.0)


def test_summarize_nothing_labelled_or_answered():
    s = summarize([_row(correct=None, busy=0.0)])
    assert s["n"] == 0 and s["accuracy"] is None and s["accuracy_ci95"] is None
    empty = summarize([_row(status="rejected", correct=None)])
    assert empty["mean_generated_tokens"] is None and empty["rejected"] == 1


def _judged(pair: str, order: str, verdict: str | None, status: str = "answered") -> dict:
    return {"status": status, "verdict": verdict, "meta_d": {"pair_id": pair, "order": order}}


def test_swap_inconsistency_counts_pairs_whose_verdicts_do_not_name_the_same_response():
    rows = [
        _judged("p1", "ab", "A"), _judged("p1", "ba", "B"),      # the same response both times: consistent
        _judged("p2", "ab", "A"), _judged("p2", "ba", "A"),      # always the first slot: inconsistent
        _judged("p3", "ab", "tie"), _judged("p3", "ba", "tie"),  # a tie both ways: consistent
        _judged("p4", "ab", None), _judged("p4", "ba", "B"),     # no verdict: inconsistent
        _judged("p5", "ab", "B"),                                # one order only: not a pair
        _judged("p6", "ab", "A"), _judged("p6", "ba", "B", status="rejected"),
        {"status": "answered", "verdict": "A", "meta_d": {}},    # not a pairwise row
    ]
    got = swap_inconsistency(rows)
    assert got == {"pairs": 4, "inconsistent": 2, "fraction": 0.5, "ci95": list(wilson(2, 4))}
    assert swap_inconsistency([{"status": "answered", "verdict": "A", "meta_d": {}}]) is None


def test_systems_table_shows_swap_inconsistency_only_for_pairwise_reports():
    base = {"accuracy": 0.5, "accuracy_ci95": [0.2, 0.8], "n": 8, "mean_generated_tokens": 3.0}
    plain = systems_table({"system1": base})
    assert "swap" not in plain[0]
    table = systems_table({"system1": {**base, "swap_inconsistent": {"pairs": 4, "fraction": 0.25}},
                           "system2": base})
    assert table[0].endswith("inconsistent under swap |")
    assert table[2].endswith("| 25.0% of 4 pairs |") and table[3].endswith("| - |")


def test_majority_at_k_votes_over_the_first_k_samples():
    from s2d_ray.evaluation import _majority_at
    from s2d_ray.evaluation.report import format_report
    from s2d_ray.tasks import get_task

    task = get_task("word_problems").spec

    def row(answers, gold="12", status="answered"):
        return {"status": status, "answer": gold, "input": "q", "meta_d": {},
                "samples": [{"answer": a, "tokens": 10} for a in answers]}

    rows = [row(["12", "13", "13", "13", "12"]),   # k=1 right, k=3 and k=5 wrong (13 wins)
            row(["7", "12", "12", "12", "12"]),    # k=1 wrong, later right
            row([None, None, "12", "12", "12"]),   # no answer at k=1; unparsed samples do not vote
            row(["12"] * 5, status="rejected"),    # not counted
            row(["12", "12"])]                     # too few samples for k=3 or 5: left out there
    one, three, five = (_majority_at(rows, k, task) for k in (1, 3, 5))
    assert (one["n"], one["correct"]) == (4, 2) and one["mean_generated_tokens"] == 10
    assert (three["n"], three["correct"]) == (3, 2) and three["mean_generated_tokens"] == 30
    assert (five["n"], five["correct"]) == (3, 2)
    report = {"method": "cot", "task": "word_problems", "model": "m", "systems": {},
              "majority_at": {"system2": {"1": one, "5": five}, "distilled": {"1": one, "5": five}}}
    text = format_report(report)
    assert "| system | k=1 | k=5 |" in text
    assert "| Distilled System 1 | 50.0% [15.0, 85.0], 10.0 tok | 66.7% [20.8, 93.9], 50.0 tok |" in text
