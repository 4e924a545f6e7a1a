"""Paraphrased views (``sample.paraphrase``): the model rewords a kept input, and a rewording
enters the distillation set, with the input's target, only where it keeps the input's facts.

The prompt sees the raw input only (no system prompt, no format line, never the target). A
rewording is dropped (``check_rewrite``) when it

- changes the numbers: the multiset of numbers in it differs from the input's (one lost,
  changed or added, e.g. the question answered: "What is 59 + 63?" -> "What is 122?");
- drops a name: a capitalized word of the input that does not start a sentence (a name,
  a place, an entity: "France", "Marie Curie") is missing from it, case kept;
- is no rewording: empty, the input itself (same words in the same order, case and
  punctuation aside), or over three times the input's length (a reply, not a rewording).

Not checked: operators and words ("plus" for "+", "sum" for "difference"); the numbers rule
catches a question that was answered or altered in its figures, not one reworded into another
question with the same figures.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from s2d_ray.programs.base import Program, ProgramRun, Sample

REWORD = (
    "Reword the text below, written by a user, so that it says exactly the same thing in different words. Keep "
    "every number, name and fact exactly as they are. If the user states an opinion, a guess or a belief, keep "
    "it with the same content, but word it differently and you may move it (before or after the question). Do not "
    "answer, solve or simplify anything. Write only the reworded text.\n\n"
    'Text: """{input}"""'
)

NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")
_SENTENCE_START = re.compile(r"(?:^|[.?!:;]\s+|[\"'(\[]\s*|\n\s*)$")
_PREFIX = re.compile(r"^\s*(?:(?:here is |here's )?(?:the )?reworded(?: text)?\s*:?|rewording\s*:|text\s*:)\s*", re.I)
MAX_LENGTH_RATIO = 3


def numbers(text: str) -> Counter:
    """The numbers in ``text`` (thousands separators and decimals kept as written)."""
    return Counter(m.group().rstrip(".,").replace(",", "") for m in NUMBER.finditer(text))


def names(text: str) -> set[str]:
    """Capitalized words that do not start a sentence (and are not "I"): names and entities."""
    out = set()
    for m in _WORD.finditer(text):
        word = m.group().split("'")[0]
        if word[:1].isupper() and word != "I" and not _SENTENCE_START.search(text[:m.start()]):
            out.add(word)
    return out


def clean(text: str) -> str:
    """The rewording a completion holds: a leading "Reworded text:" and surrounding quotes removed."""
    text = _PREFIX.sub("", text.strip()).strip()
    for q in ('"""', '"', "'", "\u201c"):
        if text.startswith(q):
            end = "\u201d" if q == "\u201c" else q
            if text.endswith(end) and len(text) > 2 * len(q):
                text = text[len(q):-len(end)].strip()
            break
    return text


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def check_rewrite(original: str, rewrite: str) -> str | None:
    """Why ``rewrite`` is not a faithful rewording of ``original`` (None: it is)."""
    if not rewrite.strip():
        return "empty"
    if _words(rewrite) == _words(original):
        return "a copy of the input"
    if len(rewrite) > MAX_LENGTH_RATIO * max(len(original), 20):
        return f"over {MAX_LENGTH_RATIO}x the input's length"
    a, b = numbers(original), numbers(rewrite)
    if a != b:
        lost, added = sorted((a - b).elements()), sorted((b - a).elements())
        parts = [f"lost {', '.join(lost)}"] * bool(lost) + [f"added {', '.join(added)}"] * bool(added)
        return f"numbers changed: {'; '.join(parts)}"
    missing = sorted(n for n in names(original) if not re.search(rf"\b{re.escape(n)}\b", rewrite))
    if missing:
        return f"names dropped: {', '.join(missing)}"
    return None


class Paraphrase(Program):
    """``n`` rewordings of a row's input in one call; each sample's ``answer`` is the accepted
    rewording (None where dropped) and its ``view`` says ``accepted`` or why it was dropped.
    Run with filter ``none``: a row is kept when one rewording is accepted."""

    name = "paraphrase"

    def run(self, row: dict[str, Any], n: int) -> ProgramRun:
        (outs,) = yield [self.call(REWORD.format(input=row["input"]), n=n)]
        samples = []
        for out in outs:
            text = clean(out.text)
            reason = check_rewrite(row["input"], text)
            samples.append(Sample(None if reason else text, [out.text], out.tokens,
                                  view="accepted" if reason is None else f"dropped: {reason}"))
        return samples
