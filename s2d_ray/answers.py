"""The one place that parses answers out of model output.

Every program, filter, task scorer and the adaptive server call these functions, so a
sample's vote, a distillation target and an evaluation score all read text the same way.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

AnswerKind = Literal["short", "yes_no", "letters", "choice"]

_ANSWER_MARKERS = re.compile(
    r"(?:final answer|answer|verdict)\s*(?:is\b|:)\s*[:\-]?\s*(.+)", re.IGNORECASE
)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_LEADING_FILLER = re.compile(
    r"^(?:the answer is|the correct answer is|it is|it's|that would be|answer)\b\s*[:\-]?\s*",
    re.IGNORECASE,
)
_ARTICLES = {"the", "a", "an"}


def normalize(text: str) -> str:
    """Lowercase, strip accents, punctuation, articles and extra whitespace."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    words = re.sub(r"[^\w\s]", " ", text).split()
    # "the Pacific" == "Pacific", but a lone "a"/"an" is an answer (a verdict, two letters).
    return " ".join([w for w in words if w not in _ARTICLES] or words)


def contains_phrase(haystack: str, phrase: str) -> bool:
    """Whether normalized ``phrase`` occurs in normalized ``haystack`` as whole words."""
    h, p = normalize(haystack), normalize(phrase)
    return bool(p) and re.search(rf"(?:^|\s){re.escape(p)}(?:\s|$)", h) is not None


def _clean(span: str) -> str:
    span = span.strip().splitlines()[0] if span.strip() else ""
    span = _LEADING_FILLER.sub("", span.strip())
    return span.strip(" \t\"'`*.,;:!()[]").strip()


def final_answer_span(text: str) -> str | None:
    """The span a model marked as its final answer, or its first non-empty line."""
    if not text or not text.strip():
        return None
    if boxed := _BOXED.findall(text):
        return _clean(boxed[-1]) or None
    if markers := _ANSWER_MARKERS.findall(text):
        return _clean(markers[-1]) or None
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if bold := _BOLD.findall(lines[0]):
        return _clean(bold[0]) or None
    return _clean(lines[0]) or None


def extract_yes_no(text: str) -> str | None:
    """``yes``/``no`` from the answer span, else the last yes/no word in the text."""
    span = final_answer_span(text) or ""
    words = re.findall(r"\b(yes|no)\b", span.lower())
    if words:
        return words[0]
    words = re.findall(r"\b(yes|no)\b", (text or "").lower())
    return words[-1] if words else None


def extract_letters(text: str) -> str | None:
    """A letter string (last-letter concatenation), e.g. from ``Answer: "nkl"`` or ``n-k-l``."""
    span = final_answer_span(text)
    if span is None:
        return None
    quoted = re.findall(r"[\"'`]([A-Za-z][A-Za-z \-,]*)[\"'`]", span)
    if quoted:
        span = quoted[-1]
    tokens = re.findall(r"[A-Za-z]+", span)
    if not tokens:
        return None
    if all(len(t) == 1 for t in tokens):  # "n k l", "N-K-L"
        return "".join(tokens).lower()
    return tokens[-1].lower() if len(tokens) > 1 and len(tokens[-1]) > 1 else tokens[0].lower()


def extract_choice(text: str, options: tuple[str, ...] = ("A", "B", "tie")) -> str | None:
    """One of ``options`` from the answer span, else the last one mentioned. Single-letter
    options match only in upper case (so the article "a" is not option A); words match in any case."""
    alternatives = [re.escape(o) if len(o) == 1 else f"(?i:{re.escape(o)})" for o in options]
    pattern = re.compile(r"\b(" + "|".join(alternatives) + r")\b")
    canonical = {o.lower(): o for o in options}
    span = final_answer_span(text) or ""
    if span.lower() in canonical:  # the whole answer is an option: "b", "Tie"
        return canonical[span.lower()]
    for source, pick in ((span, 0), (text or "", -1)):
        found = pattern.findall(source)
        if found:
            return canonical[found[pick].lower()]
    return None


def extract_answer(text: str, kind: AnswerKind = "short") -> str | None:
    """Extract the final answer of ``kind`` from raw model output (None if there is none)."""
    if kind == "yes_no":
        return extract_yes_no(text)
    if kind == "letters":
        return extract_letters(text)
    if kind == "choice":
        return extract_choice(text)
    return final_answer_span(text)


def vote_key(answer: str | None) -> str | None:
    """The key under which answers are counted as the same vote."""
    if answer is None:
        return None
    key = normalize(answer)
    return key or None
