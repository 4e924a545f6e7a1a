"""The one place that parses answers out of model output.

Every program, filter, task scorer and the adaptive server call these functions, so a
sample's vote, a distillation target and an evaluation score all read text the same way.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

AnswerKind = Literal["short", "yes_no", "letters", "choice", "number", "label", "regex", "text"]

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


PAIRWISE = ("A", "B", "tie")  # a choice task without labels: which response is better


def extract_choice(text: str, options: tuple[str, ...] = PAIRWISE) -> str | None:
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


_NUMBER = re.compile(r"(?<![\w.])[-\u2212]?\d(?:[\d,_\u202f\u00a0' ]*\d)?(?:\.\d+)?(?![\w])|(?<![\w.])[-\u2212]?\.\d+")


def canonical_number(text: str) -> str | None:
    """``"1,800"``, ``"1 800"``, ``"1800.0"`` -> ``"1800"``; ``"-0.50"`` -> ``"-0.5"``; None if not a number.
    Thousands separators (comma, space, apostrophe, underscore) go; a decimal point stays."""
    raw = text.strip().replace("\u2212", "-")
    raw = re.sub(r"(?<=\d)[,_\u202f\u00a0' ](?=\d{3}(?!\d))", "", raw)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    value = value.normalize()
    out = format(value, "f")
    return "0" if out in ("-0", "0") else out


def extract_number(text: str) -> str | None:
    """The final numeric answer, canonical: the last number in the answer span (``"18 dollars"``,
    ``"$1,800.00"``), else the last number in the text."""
    for source in (final_answer_span(text) or "", text or ""):
        found = [canonical_number(m) for m in _NUMBER.findall(source)]
        found = [f for f in found if f is not None]
        if found:
            return found[-1]
    return None


def extract_label(text: str, labels: dict[str, tuple[str, ...]]) -> str | None:
    """One of a closed label set (canonical name), matched by name or alias as whole words: the
    whole answer span, else the one label the span names. An answer outside the set, or one
    naming several labels, is no answer."""
    names = {normalize(alias): label for label, aliases in labels.items() for alias in (label, *aliases)}
    span = final_answer_span(text) or ""
    if normalize(span) in names:
        return names[normalize(span)]

    def named(source: str) -> list[tuple[int, str]]:
        """(position, label) of each non-overlapping label mention, longest alias first."""
        norm = f" {normalize(source)} "
        hits = []
        for alias, label in names.items():  # longest alias wins where aliases overlap
            for m in re.finditer(rf"(?<= ){re.escape(alias)}(?= )", norm):
                hits.append((m.start(), -len(alias), label))
        hits.sort()
        out, end = [], -1
        for start, neg_len, label in hits:
            if start >= end:
                out.append((start, label))
                end = start - neg_len
        return out

    if span:  # an answer that names no label, or several, is outside the set: no vote
        in_span = {label for _, label in named(span)}
        return in_span.pop() if len(in_span) == 1 else None
    return None


def extract_regex(text: str, pattern: str) -> str | None:
    """Group 1 (or the named group ``answer``) of the last match of ``pattern`` in the text."""
    matches = list(re.finditer(pattern, text or "", re.MULTILINE))
    if not matches:
        return None
    m = matches[-1]
    value = m.group("answer") if "answer" in m.re.groupindex else m.group(1)
    return value.strip() if value and value.strip() else None


def extract_text(text: str) -> str | None:
    """A free-form answer: the response itself, without an ``Answer:`` lead-in."""
    body = (text or "").strip()
    body = re.sub(r"^(?:final answer|answer)\s*:\s*", "", body, flags=re.IGNORECASE).strip()
    return body or None


@dataclass(frozen=True)
class AnswerSpec:
    """How one task's answers are read: the kind and its parameters (closed label set with
    aliases for ``label``/``choice``, a pattern for ``regex``)."""

    kind: AnswerKind = "short"
    labels: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (label, aliases) in order
    pattern: str | None = None

    @property
    def closed_set(self) -> tuple[str, ...] | None:
        """The answers a closed-set kind allows (yes_no, choice, label), in order; None otherwise."""
        if self.kind == "yes_no":
            return ("yes", "no")
        if self.kind == "choice":
            return tuple(label for label, _ in self.labels) or PAIRWISE
        if self.kind == "label":
            return tuple(label for label, _ in self.labels)
        return None

    @property
    def comparable(self) -> bool:
        """Whether two answers can be voted on (free text cannot: USC picks among responses)."""
        return self.kind != "text"

    def extract(self, text: str) -> str | None:
        """The final answer in raw model output (None if there is none)."""
        if self.kind == "yes_no":
            return extract_yes_no(text)
        if self.kind == "letters":
            return extract_letters(text)
        if self.kind == "choice":
            return extract_choice(text, self.closed_set)
        if self.kind == "number":
            return extract_number(text)
        if self.kind == "label":
            return extract_label(text, dict(self.labels))
        if self.kind == "regex":
            return extract_regex(text, self.pattern or "")
        if self.kind == "text":
            return extract_text(text)
        return final_answer_span(text)

    def vote_key(self, answer: str | None) -> str | None:
        """The key under which answers count as the same vote (None: not a vote)."""
        if answer is None or not self.comparable:
            return None
        if self.kind == "number":
            return canonical_number(answer)
        return normalize(answer) or None
