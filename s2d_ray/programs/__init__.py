"""System 2 programs, one small file each. Adding one: subclass Program, register it here."""

from __future__ import annotations

import hashlib
import inspect
import sys

from s2d_ray.answers import AnswerKind
from s2d_ray.errors import S2DError
from s2d_ray.programs.base import Call, Completion, Program, Sample
from s2d_ray.programs.bsm import BSM
from s2d_ray.programs.cot import CoT
from s2d_ray.programs.direct import Direct
from s2d_ray.programs.rar import RaR1, RaR2
from s2d_ray.programs.s2a import S2A

PROGRAMS: dict[str, type[Program]] = {p.name: p for p in (Direct, RaR1, RaR2, S2A, BSM, CoT)}


def get_program(name: str, answer_kind: AnswerKind = "short", answer_format: str = "") -> Program:
    """Instantiate the program called ``name`` for a task's answer kind and format."""
    try:
        return PROGRAMS[name](answer_kind, answer_format)
    except KeyError:
        raise S2DError(f"unknown method {name!r}; known: {', '.join(PROGRAMS)}") from None


def program_fingerprint(name: str) -> str:
    """A hash of a program's prompts and control flow (its module and the shared base), so a
    changed prompt changes the config hash and never resumes onto samples of the old one."""
    program = type(get_program(name))
    sources = (inspect.getsource(sys.modules[m]) for m in (program.__module__, Program.__module__))
    return hashlib.sha256("".join((name, *sources)).encode()).hexdigest()[:12]


__all__ = ["PROGRAMS", "Call", "Completion", "Program", "Sample", "get_program", "program_fingerprint"]
