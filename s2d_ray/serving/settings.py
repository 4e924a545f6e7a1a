"""Serving configuration: what `s2d serve --config` and serve/config.yaml's `args` hold."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from s2d_ray.config import EngineConfig, check_engine_placement
from s2d_ray.errors import S2DError
from s2d_ray.programs import Program, get_program
from s2d_ray.recipe import PromptRecipe
from s2d_ray.serving.protocol import Mode
from s2d_ray.tasks import TaskSpec, task_spec


class ServeSettings(BaseModel):
    """Serving configuration (serve/config.yaml `args`, or `s2d serve --config`)."""

    model_config = ConfigDict(extra="forbid")

    model_dir: str = Field(..., description="Model to serve: a run's model/ dir, built-in name, HF id or URI (s3://, gs://, ...).")
    model_name: str | None = Field(None, description="Name clients put in `model` (default: derived from model_dir).")
    api_key: str | None = Field(None, description="Require `Authorization: Bearer KEY` (default: $S2D_API_KEY, else open).")
    adapters: dict[str, str] = Field(default_factory=dict, description="LoRA adapters on the same base model: name -> dir or URI.")
    mode: Mode = Field("system1", description="Default answering mode: system1 | system2 | auto.")
    adaptive_threshold: float = Field(0.8, ge=0, le=1, description="auto: below this System 1 confidence, System 2 answers.")
    system2_method: str | None = Field(
        None, description="System 2 program for system2/auto modes (as sample.method); default: the program the "
                          "model's prompt recipe distilled, else s2a.")
    task: str | TaskSpec | None = Field(
        None, description="Task spec (or built-in task name) whose answers are parsed and voted on, as in the run config; "
                          "default: the model's prompt recipe's task.")
    system2_samples: int = Field(4, ge=1, le=32, description="Samples of the System 2 program (majority vote).")
    system2_max_tokens: int = Field(128, ge=1, description="Max tokens per System 2 program step.")
    system2_temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature of the System 2 program's steps.")
    system2_top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling of the System 2 program's steps.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="vLLM engine settings.")
    min_replicas: int = Field(1, ge=0, description="Autoscaling lower bound.")
    max_replicas: int = Field(1, ge=1, description="Autoscaling upper bound.")
    target_ongoing_requests: float = Field(8, gt=0, description="Autoscaler target per replica.")
    max_ongoing_requests: int = Field(32, ge=1, description="Requests a replica accepts at once.")
    max_queued_requests: int = Field(64, ge=-1, description="Requests queued per caller before 503 (-1: unbounded).")
    num_cpus: float = Field(1, ge=0, description="CPUs per replica.")
    cpu_threads: int | None = Field(None, ge=1, description="Compute threads of a CPU replica's engine (OMP_NUM_THREADS); default: num_cpus, as Ray sets.")
    num_gpus: float = Field(0, ge=0, description="GPUs per replica (tensor_parallel_size on GPU clusters).")

    @model_validator(mode="after")
    def _placement(self) -> "ServeSettings":
        check_engine_placement("", self.num_gpus, self.engine.tensor_parallel_size)
        self.program()  # an unknown system2_method or task fails when the app is built, not at a request
        return self

    def program(self, recipe: PromptRecipe | None = None) -> Program:
        """The System 2 program: ``system2_method`` on ``task``, each defaulting to what the
        served model's prompt recipe distilled (a recipe of System 1 prompts alone: s2a)."""
        distilled = recipe.method if recipe and recipe.method != "direct" else None
        method = self.system2_method or distilled or "s2a"
        task = task_spec(self.task) if self.task is not None else (recipe.task if recipe else None)
        try:
            return get_program(method, task, recipe.template if recipe and method == recipe.method else None)
        except S2DError as e:
            raise ValueError(str(e).replace("sample.method", "system2_method")) from None

    @property
    def served_name(self) -> str:
        if self.model_name:
            return self.model_name
        path = Path(self.model_dir.rstrip("/"))
        return path.parent.name if path.name == "model" and path.parent.name else path.name
