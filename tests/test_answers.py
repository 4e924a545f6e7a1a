"""Answer extraction from messy, real-looking model output (s2d_ray.answers)."""

from __future__ import annotations

import pytest

from s2d_ray.answers import (
    AnswerSpec,
    canonical_number,
    contains_phrase,
    extract_choice,
    extract_letters,
    extract_yes_no,
    final_answer_span,
    normalize,
)

REASONING_YES = (
    "Let's think step by step.\n"
    "The coin starts heads up.\n"
    "Ada flips it: tails. Bill flips it: heads. Is that right? No wait, let me recount.\n"
    "Two flips in total, so it is heads up again.\n"
    "\n"
    "Answer: yes"
)


# --------------------------------------------------------------------------- short answers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer: Paris.", "Paris"),
        ("The answer is **Canberra**", "Canberra"),
        ("The answer is **Canberra**.", "Canberra"),
        ("**Canberra** is the capital of Australia.", "Canberra"),
        ("Final answer: Ottawa", "Ottawa"),
        ("The final answer is: Answer: Paris", "Paris"),
        ("Answer: it's Paris", "Paris"),
        ("Answer: \"Lisbon\"", "Lisbon"),
        ("   Paris   \n", "Paris"),
        ("\n\n  Madrid.\nBecause Spain's government sits there.", "Madrid"),
        ("I first thought Lyon.\nAnswer: Lyon\nOn reflection...\nAnswer: Paris", "Paris"),
        (r"so the result is $\boxed{42}$ as required. Answer: 41", "42"),
        ("Answer: The Eiffel Tower", "The Eiffel Tower"),
    ],
)
def test_short_answers(text, expected):
    assert AnswerSpec("short").extract(text) == expected
    assert final_answer_span(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t \n", None])
def test_empty_or_none_text_gives_none_for_every_kind(text):
    for kind in ("short", "yes_no", "letters", "choice", "number", "text"):
        assert AnswerSpec(kind).extract(text) is None, kind


def test_span_that_cleans_to_nothing_is_none():
    assert final_answer_span("Answer: ...") is None
    assert final_answer_span(r"\boxed{}") is None
    assert final_answer_span('"**"') is None


def test_default_kind_is_short():
    assert AnswerSpec().extract("Answer: Rome.") == "Rome"


def test_answer_isnt_is_not_cut_inside_a_word():
    span = AnswerSpec("short").extract("The answer isn't Sydney; it's Canberra.")
    assert span is not None
    assert not span.lower().startswith("n't")


# --------------------------------------------------------------------------- yes / no


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (REASONING_YES, "yes"),
        ("Answer: no.", "no"),
        ("Answer: NO", "no"),
        ("No.", "no"),
        ("Yes, it is still heads up.", "yes"),
        ("  \n\n  Answer:   yes  \n", "yes"),
        ("Let me see.\nThe coin was flipped once so it is tails.\nSo the answer is no", "no"),
        # The answer span has no yes/no: the last yes/no word of the text counts.
        ("Answer: heads up\nIn other words yes, well... no, definitely no", "no"),
        ("The answer is: **Yes**", "yes"),
        ("I cannot tell.", None),
        # "no" must be a whole word: Noah and Nobody are not votes.
        ("Noah flips the coin. Nobody knows.", None),
    ],
)
def test_yes_no(text, expected):
    assert extract_yes_no(text) == expected
    assert AnswerSpec("yes_no").extract(text) == expected


def test_yes_no_prefers_the_marked_answer_over_earlier_words():
    text = "Is it heads up? At first I said no.\nAnswer: yes"
    assert extract_yes_no(text) == "yes"


# --------------------------------------------------------------------------- letters


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\boxed{nk}", "nk"),
        ("n-k-l", "nkl"),
        ("N-K-L", "nkl"),
        ("Answer: \"nkl\"", "nkl"),
        ("Answer: \"N-K-L\"", "nkl"),
        ("The letters are 'nk'.", "nk"),
        ("`nkl`", "nkl"),
        ("So the letters are n, k and l.\nAnswer: n, k, l", "nkl"),
        ("The answer is: N K L", "nkl"),
        ("The last letters are n and k, so the answer is nk.", "nk"),
        ("  Answer: NK.  \n", "nk"),
        ("Elon -> n, Musk -> k.\nAnswer: the letters n and k give nk", "nk"),
    ],
)
def test_letters(text, expected):
    assert extract_letters(text) == expected
    assert AnswerSpec("letters").extract(text) == expected


def test_letters_without_any_letter_is_none():
    assert extract_letters("Answer: 42") is None
    assert extract_letters("") is None


# --------------------------------------------------------------------------- choice


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),
        ("Answer: b", "B"),
        ("Final answer: B", "B"),
        ("Verdict: tie", "tie"),
        ("Both are fine. Verdict: TIE", "tie"),
        ("I think A is better.\nAnswer: B", "B"),
        ("Comparing both: Response A is clearer.\nFinal answer: A", "A"),
        ("Response B is better overall.", "B"),
        # Nothing in the span: the last option mentioned anywhere.
        ("Hmm.\nResponse A has errors; so I prefer Response B", "B"),
        ("No preference at all.", None),
        # Whole words only: "AB" is not a vote for A or B.
        ("AB testing", None),
    ],
)
def test_choice(text, expected):
    assert extract_choice(text) == expected
    assert AnswerSpec("choice").extract(text) == expected


def test_choice_with_custom_options_keeps_their_spelling():
    assert extract_choice("answer: YES", options=("Yes", "No")) == "Yes"
    assert extract_choice("maybe", options=("Yes", "No")) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Neither is better; it is a tie", "tie"),
        ("After weighing a few criteria, Response B is better.", "B"),
    ],
)
def test_choice_does_not_read_the_article_a_as_option_a(text, expected):
    assert extract_choice(text) == expected


# --------------------------------------------------------------------------- normalize & friends


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Paris.", "paris"),
        ("  PARIS  ", "paris"),
        ("São Paulo", "sao paulo"),
        ("Zürich", "zurich"),
        ("Ångström", "angstrom"),
        ("The Hague", "hague"),
        ("An apple a day", "apple day"),
        ("  The Café  de Flore! ", "cafe de flore"),
        ("Samuel F. B. Morse", "samuel f b morse"),
        ("Theory", "theory"),  # articles are whole words only
        ("...", ""),
    ],
)
def test_normalize(text, expected):
    assert normalize(text) == expected


def test_contains_phrase_whole_words():
    assert contains_phrase("I visited Paris.", "paris")
    assert contains_phrase("The capital is Zürich!", "zurich")
    assert contains_phrase("New York City is big", "york city")
    assert contains_phrase("It is the Netherlands", "Netherlands")
    assert not contains_phrase("Parisian food is good", "Paris")
    assert not contains_phrase("Sydneysiders love it", "Sydney")
    assert not contains_phrase("Romeo and Juliet", "Rome")
    # An empty (or all-punctuation, or article-only) phrase never matches.
    assert not contains_phrase("anything", "")
    assert not contains_phrase("anything", "...")
    assert not contains_phrase("the answer", "the")


def test_vote_key():
    assert AnswerSpec().vote_key("Paris.") == AnswerSpec().vote_key("paris") == AnswerSpec().vote_key("  The PARIS!") == "paris"
    assert AnswerSpec().vote_key("Paris") != AnswerSpec().vote_key("Lyon")
    assert AnswerSpec().vote_key(None) is None
    assert AnswerSpec().vote_key("") is None
    assert AnswerSpec().vote_key("...") is None


@pytest.mark.parametrize("answer", ["A", "a", "an"])
def test_vote_key_keeps_single_letter_and_article_like_answers(answer):
    assert AnswerSpec().vote_key(answer) == answer.lower()


# --------------------------------------------------------------------------- number


@pytest.mark.parametrize("text,expected", [
    ("18 dollars", "18"),
    ("The total comes to $1,800.00.", "1800"),
    ("Answer: 18.0", "18"),
    ("She pays 3 * 6 = 18 dollars in all.\nAnswer: 18", "18"),
    ("**Answer:** 1 234 567 apples", "1234567"),
    ("-0.50", "-0.5"),
    ("The answer is −7 degrees.", "-7"),
    ("First 12 eggs, then 7 more, so 19.", "19"),  # no marker: the last number of the span
    ("I am not sure.", None),
    ("Answer: twelve", None),
])
def test_number_answers_are_canonical(text, expected):
    assert AnswerSpec("number").extract(text) == expected


def test_number_votes_ignore_units_and_separators():
    spec = AnswerSpec("number")
    keys = {spec.vote_key(spec.extract(t)) for t in ("18 dollars", "18.0", "Answer: $18", "It costs 18.")}
    assert keys == {"18"}
    assert canonical_number("1,800") == canonical_number("1800.00") == "1800"
    assert canonical_number("1,80") is None  # a comma before two digits is not a thousands separator


# --------------------------------------------------------------------------- label

TICKETS = AnswerSpec("label", (("Billing", ("invoice", "payment", "refund")), ("Technical", ("bug",)), ("Account", ())))


@pytest.mark.parametrize("text,expected", [
    ("Billing", "Billing"),
    ("billing issue", "Billing"),  # a label inside a longer span
    ("**Technical**", "Technical"),
    ("Category: Refund request", "Billing"),  # an alias counts as its label
    ("The ticket is about the user's account.\nAnswer: Account", "Account"),
    ("Shipping", None),  # outside the set: no answer, not a vote
    ("Answer: Billing or Technical", None),  # several labels: ambiguous
    ("This is not billing. Answer: Shipping", None),  # the marked answer is out of the set
])
def test_label_answers_from_a_closed_set(text, expected):
    assert TICKETS.extract(text) == expected


def test_out_of_set_label_answers_are_not_votes():
    from s2d_ray.programs.base import Sample
    from s2d_ray.programs.filters import majority_vote

    samples = [Sample(TICKETS.extract(t)) for t in ("Billing", "billing issue", "Shipping", "Delivery", "Returns")]
    answer, agreement, tie = majority_vote(samples, TICKETS)
    assert (answer, agreement, tie) == ("Billing", 2 / 5, False)  # "Billing issue" and "Billing" are one vote


# --------------------------------------------------------------------------- regex and text


def test_regex_answers_take_the_group_of_the_last_match():
    spec = AnswerSpec("regex", pattern=r"Order #(\d+)")
    assert spec.extract("Order #12 was replaced by Order #345.") == "345"
    assert spec.extract("no order here") is None
    named = AnswerSpec("regex", pattern=r"(?P<code>[A-Z]{3})-(?P<answer>\d{4})")
    assert named.extract("Ticket ABC-0042 closed") == "0042"


def test_text_answers_are_the_response_and_never_votes():
    spec = AnswerSpec("text")
    assert spec.extract("Answer: Dear customer, your refund is on its way.") == "Dear customer, your refund is on its way."
    assert not spec.comparable and spec.vote_key("anything") is None
