"""System 2 programs, one small file each, plus the user's own.

``sample.method`` names a built-in program, a ``module:Class`` import path (a ``Program``
subclass; importable from the working directory, and on a cluster from ``--working-dir``),
or a YAML file of prompt templates (``programs/template.py``).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import sys

from s2d_ray.errors import S2DError
from s2d_ray.programs.base import Call, Completion, Program, Sample
from s2d_ray.programs.bsm import BSM
from s2d_ray.programs.cot import CoT
from s2d_ray.programs.direct import Direct
from s2d_ray.programs.rar import RaR1, RaR2
from s2d_ray.programs.s2a import S2A
from s2d_ray.programs.template import TemplateProgram, parse_template, read_template
from s2d_ray.tasks.spec import TaskSpec

PROGRAMS: dict[str, type[Program]] = {p.name: p for p in (Direct, RaR1, RaR2, S2A, BSM, CoT)}
TEMPLATE_SUFFIXES = (".yaml", ".yml")


def _is_template(method: str) -> bool:
    return method.lower().endswith(TEMPLATE_SUFFIXES)


def _import_class(method: str) -> type[Program]:
    module_name, _, attr = method.partition(":")
    if os.getcwd() not in sys.path:  # `s2d` run from a project dir, like `python -m`
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise S2DError(f"sample.method: cannot import {module_name!r} ({e}); put it on PYTHONPATH or in the working directory") from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Program)):
        raise S2DError(f"sample.method: {method} is not a Program subclass (s2d_ray.programs.Program)")
    return cls


def _program_class(method: str) -> type[Program]:
    if method in PROGRAMS:
        return PROGRAMS[method]
    if ":" in method:
        return _import_class(method)
    raise S2DError(f"sample.method: unknown method {method!r}; built-in: {', '.join(PROGRAMS)}, "
                   "or module:Class, or a template .yaml")


def program_template(method: str) -> str | None:
    """The YAML text of a template program (None for other methods): read once on the driver
    and sent to the workers, whose working directory may not hold the file."""
    return read_template(method) if _is_template(method) else None


def get_program(method: str, task: TaskSpec | None = None, template: str | None = None) -> Program:
    """The program ``method`` (built-in name, ``module:Class`` or template YAML, whose text
    ``template`` is when given) for ``task``."""
    if _is_template(method):
        text = read_template(method) if template is None else template
        return TemplateProgram(parse_template(text, method), os.path.basename(method), task)
    program = _program_class(method)(task)
    if not getattr(program, "name", None):
        program.name = method
    return program


def system1_program(method: str, task: TaskSpec | None = None, template: str | None = None) -> Program:
    """System 1 on the prompts the distillation set of ``method`` trained on (its
    ``system1_input``): how System 1 and the distilled model are evaluated."""
    return Direct(task, source=get_program(method, task, template))


def program_fingerprint(method: str) -> str:
    """A hash of a program's prompts and control flow (its source, or template file, and the
    shared base), so a changed prompt changes the config hash and never resumes onto samples
    of the old one."""
    if _is_template(method):
        own = [read_template(method), inspect.getsource(sys.modules[TemplateProgram.__module__])]
    else:
        own = [inspect.getsource(sys.modules[_program_class(method).__module__])]
    base = inspect.getsource(sys.modules[Program.__module__])
    return hashlib.sha256("".join((method, *own, base)).encode()).hexdigest()[:12]


__all__ = ["PROGRAMS", "Call", "Completion", "Program", "Sample", "get_program", "program_fingerprint", "program_template",
           "system1_program"]
