"""A System 2 program written as prompt templates in YAML, without Python:

    steps:                                  # run in order; each sample is one chain through them
      - name: rewrite
        prompt: "Copy out the question in this text, without the user's opinion: {input}"
      - name: answer
        prompt: "{rewrite}\n\n{format}"     # {format}: the task's answer instruction
        temperature: 0.0                    # optional per step: temperature, max_tokens, n
    columns: [context]                      # input columns the templates may name (optional)
    system1: "{input}\n\n{format}"          # what System 1 and the distilled model see (optional)

Templates see ``{input}``, ``{format}``, the declared ``columns`` and the outputs of earlier
steps by name. The first step is asked ``sample.n_samples`` times; a later step's ``n``
(default 1) branches each chain into that many. The last step's output is the response
whose final answer counts.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from s2d_ray.errors import S2DError, first_error
from s2d_ray.programs.base import Program, ProgramRun, Sample, with_format


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=r"^[A-Za-z_]\w*$", description="Name later templates use for this step's output.")
    prompt: str = Field(..., min_length=1, description="User message template.")
    n: int | None = Field(None, ge=1, le=64, description="Completions per chain (first step: sample.n_samples).")
    temperature: float | None = Field(None, ge=0, le=2, description="Override of sample.temperature.")
    max_tokens: int | None = Field(None, ge=1, description="Override of sample.max_tokens.")


class TemplateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[Step] = Field(..., min_length=1, description="Steps in order.")
    columns: list[str] = Field(default_factory=list, description="Input columns the templates may name.")
    system1: str | None = Field(None, description="Template of the System 1 input (default: input + format).")

    @model_validator(mode="after")
    def _names(self) -> "TemplateSpec":
        known = {"input", "format", *self.columns}
        for i, step in enumerate(self.steps):
            for field in _fields(step.prompt, f"steps[{i}].prompt"):
                if field not in known:
                    raise ValueError(f"steps[{i}] ({step.name}): template names {{{field}}}, which is not input, "
                                     f"format, a declared column or an earlier step ({', '.join(sorted(known))})")
            if step.name in known:
                raise ValueError(f"steps[{i}]: name {step.name!r} is already taken")
            known.add(step.name)
        for field in _fields(self.system1 or "", "system1"):
            if field not in {"input", "format", *self.columns}:
                raise ValueError(f"system1: template names {{{field}}}, which is not input, format or a declared column")
        return self


def _fields(template: str, where: str) -> list[str]:
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise ValueError(f"{where}: {e} (write literal braces as {{{{ and }}}})") from None


def read_template(path: str) -> str:
    """The text of a template program file (read on the driver; workers get the text)."""
    try:
        return Path(path).read_text()
    except OSError as e:
        raise S2DError(f"sample.method: cannot read program {path}: {e.strerror}") from None


def parse_template(text: str, path: str) -> TemplateSpec:
    """A template program from its YAML text; one-line errors naming the file and field."""
    try:
        return TemplateSpec.model_validate(yaml.safe_load(text) or {})
    except yaml.YAMLError as e:
        raise S2DError(f"sample.method: {path}: invalid YAML ({getattr(e, 'problem', e)})") from None
    except ValidationError as e:
        raise S2DError(f"sample.method: {path}: {first_error(e)}") from None


class TemplateProgram(Program):
    """A program whose steps are prompt templates (see the module docstring)."""

    def __init__(self, spec: TemplateSpec, name: str, task=None) -> None:
        super().__init__(task)
        self.spec, self.name = spec, name

    def _values(self, row: dict[str, Any]) -> dict[str, Any]:
        meta = row.get("meta") or {}
        missing = [c for c in self.spec.columns if meta.get(c) is None]
        if missing:
            raise ValueError(f"{self.name} needs input columns {missing}")
        return {"input": row["input"], "format": self.answer_format, **{c: meta[c] for c in self.spec.columns}}

    def system1_input(self, row: dict[str, Any]) -> str:
        if self.spec.system1 is None:
            return with_format(row["input"], self.answer_format)
        return self.spec.system1.format(**self._values(row)).strip()

    def run(self, row: dict[str, Any], n: int) -> ProgramRun:
        base = self._values(row)
        chains: list[tuple[dict[str, Any], list[str], int]] = [(base, [], 0)]  # (values, texts, tokens)
        for i, step in enumerate(self.spec.steps):
            k = step.n or (n if i == 0 else 1)
            kw = {"temperature": step.temperature, "max_tokens": step.max_tokens}
            if i == 0:  # one prompt, k completions sharing its prefix
                (outs,) = yield [self.call(step.prompt.format(**base), n=k, **kw)]
                chains = [({**base, step.name: o.text.strip()}, [o.text], o.tokens) for o in outs]
                continue
            results = yield [self.call(step.prompt.format(**values), n=k, **kw) for values, _, _ in chains]
            chains = [({**values, step.name: o.text.strip()}, [*texts, o.text], tokens + o.tokens)
                      for (values, texts, tokens), outs in zip(chains, results) for o in outs]
        return [Sample(self.extract(texts[-1]), texts, tokens) for _, texts, tokens in chains]
