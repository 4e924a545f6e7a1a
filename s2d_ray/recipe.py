"""The prompt recipe a distilled model carries: how its training prompts were built from a raw
input, so a server (or any client) asks it exactly what evaluation measured.

Training writes ``s2d_prompt.json`` into ``model/`` and ``adapter/``. The recipe names the task
(its spec: system prompt, format line, answer kind and labels) and the program whose System 1
prompts the distillation set trained on; ``messages`` rebuilds a prompt with that program's own
``system1_input`` and ``call`` (the one prompt builder), never a copy of it. ``system_prompt``,
``format_line`` and ``answers`` restate what the task holds, for a reader of the file; the
recipe checks that they still agree with the task when it is read.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from s2d_ray.programs import Program, program_template, system1_program
from s2d_ray.tasks import TaskSpec

RECIPE_FILE = "s2d_prompt.json"


class PromptRecipe(BaseModel):
    """``s2d_prompt.json``: the prompt a distilled model was trained and evaluated on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = Field(..., description="Program whose System 1 prompts the model trained on (sample.method or system1_of).")
    template: str | None = Field(None, description="That program's template YAML text, for template programs.")
    task: TaskSpec | None = Field(None, description="The task spec (None: free-form user data, the default format line).")
    system_prompt: str | None = Field(None, description="The system message of every prompt (from the task).")
    format_line: str = Field(..., description="The task's format line, after the input in System 1 prompts (a program "
                                              "may word its own, as BSM's judging prompt does).")
    answers: dict[str, Any] = Field(..., description="How answers are read: kind, labels (closed sets), pattern (regex).")
    max_tokens: int = Field(..., ge=1, description="Tokens evaluation allowed a System 1 answer (eval.max_tokens).")

    @model_validator(mode="after")
    def _agrees(self) -> "PromptRecipe":
        derived = describe(self.program)
        stated = {"system_prompt": self.system_prompt, "format_line": self.format_line, "answers": self.answers}
        if stated != derived:
            bad = next(k for k in derived if stated[k] != derived[k])
            raise ValueError(f"{bad}: {stated[bad]!r} is not what the recipe's task gives ({derived[bad]!r})")
        return self

    @cached_property
    def program(self) -> Program:
        """The System 1 program of the recipe (its prompts are the distillation set's); built
        once per recipe, not per request."""
        return system1_program(self.method, self.task, self.template)

    def messages(self, text: str, fields: dict[str, Any] | None = None) -> list[dict[str, str]]:
        """The chat messages the model trained on for raw input ``text`` (``fields``: the other
        input fields the program reads, e.g. BSM's response_a/response_b). A program's refusal
        of the fields raises ValueError."""
        program = self.program
        return program.call(program.system1_input({"input": text, "meta": dict(fields or {})})).messages


def describe(program: Program) -> dict[str, Any]:
    """What a program's System 1 prompt says, for the recipe file's reader."""
    a = program.answers
    return {"system_prompt": program.system_prompt, "format_line": program.answer_format or "",
            "answers": {"kind": a.kind, "labels": [label for label, _ in a.labels], "pattern": a.pattern}}


def read_recipe(model_dir: str) -> PromptRecipe | None:
    """The recipe in a local model or adapter directory (None: it carries none, e.g. a hub model)."""
    import os

    from pydantic import ValidationError

    from s2d_ray.errors import S2DError, first_error

    path = os.path.join(model_dir, RECIPE_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return PromptRecipe.model_validate_json(f.read())
    except ValidationError as e:
        raise S2DError(f"{path}: {first_error(e)}; retrain (`s2d train`) or delete the file to serve raw prompts") from None


def recipe_of(cfg: Any) -> PromptRecipe:
    """The recipe of a run config (``RunConfig``): its task and the program it distils."""
    method = cfg.sample.prompts_of
    program = system1_program(method, cfg.task_spec, program_template(method))
    return PromptRecipe(method=method, template=program_template(method), task=cfg.task_spec,
                        max_tokens=cfg.eval.max_tokens, **describe(program))


__all__ = ["RECIPE_FILE", "PromptRecipe", "read_recipe", "recipe_of"]
