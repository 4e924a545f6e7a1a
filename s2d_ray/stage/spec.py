"""What an engine actor runs: a program (and filter) with its sampling settings, as one
picklable ``StageSpec``. Sampling builds one from the run config; evaluation builds several."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from s2d_ray.config import RunConfig
from s2d_ray.engine import Sampling
from s2d_ray.programs import Program, get_program, program_fingerprint, program_template, system1_program
from s2d_ray.programs.filters import ENGINE_FREE
from s2d_ray.tasks import generator_fingerprint
from s2d_ray.tasks.spec import TaskSpec

if TYPE_CHECKING:
    from s2d_ray.datasets import Refilter


@dataclass
class StageSpec:
    """Everything an engine actor needs (picklable, sent to Ray workers)."""

    model: str
    method: str
    n_samples: int
    temperature: float
    top_p: float
    max_tokens: int
    engine: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] | None = None  # a TaskSpec's fields (how answers are asked for and read)
    template: str | None = None  # a template program's YAML text (method's or system1_of's file)
    system1_of: str | None = None  # method "direct": answer the System 1 prompts of this program
    filter: str | None = "majority"  # None: evaluation (majority answer, nothing dropped)
    min_agreement: float = 0.0
    config_hash: str = ""

    def task_spec(self) -> TaskSpec | None:
        return TaskSpec(**self.task) if self.task else None

    def program(self) -> Program:
        if self.system1_of:
            return system1_program(self.system1_of, self.task_spec(), self.template)
        return get_program(self.method, self.task_spec(), self.template)

    @property
    def sampling(self) -> Sampling:
        return Sampling(self.temperature, self.top_p, self.max_tokens)


def sample_spec(cfg: RunConfig) -> StageSpec:
    """The sampling stage's spec; its config hash is the lineage of the distillation set."""
    s = cfg.sample
    spec = cfg.task_spec
    payload = {"data": {**{k: getattr(cfg.data, k) for k in ("train", "n_train", "seed")},
                        "generator": generator_fingerprint(cfg.data.train)},
               "task": spec.model_dump() if spec else None, "program": program_fingerprint(s.method),
               **({"system1_of": program_fingerprint(s.system1_of)} if s.system1_of else {}),
               # an engine-free filter is applied to the samples when distill/ is built (refilter), not here
               **({} if s.filter.kind in ENGINE_FREE else {"filter": {"kind": s.filter.kind,
                                                                        "min_agreement": s.filter.min_agreement}})}
    return StageSpec(
        model=cfg.model,
        method=s.method,
        n_samples=s.n_samples,
        temperature=s.temperature,
        top_p=s.top_p,
        max_tokens=s.max_tokens,
        engine=s.engine.model_dump(),
        task=spec.model_dump() if spec else None,
        template=program_template(s.prompts_of),
        system1_of=s.system1_of,
        filter=s.filter.kind,
        min_agreement=s.filter.min_agreement,
        config_hash=cfg.stage_hash("sample", extra=payload),
    )


def refilter(spec: StageSpec) -> Refilter | None:
    """How samples/ rows are decided when distill/ is built: by the sampling spec's filter
    when it is engine-free (as sampled otherwise: usc asked the model while sampling)."""
    from s2d_ray.datasets import Refilter

    if spec.filter not in ENGINE_FREE:
        return None
    return Refilter(spec.filter, spec.min_agreement, spec.program().answers)
