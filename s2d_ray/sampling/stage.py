"""The per-batch logic of sampling and evaluation: run a program (and a filter) on rows.

``process_rows`` knows nothing of Ray; ``ProgramStage`` is the Ray Data actor UDF that owns
one engine and calls it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pyarrow as pa

from s2d_ray.answers import AnswerSpec
from s2d_ray.config import EngineConfig
from s2d_ray.outputs import RESULT_SCHEMA
from s2d_ray.programs import Program, get_program
from s2d_ray.programs.base import Call, user
from s2d_ray.programs.runner import Generate, drive
from s2d_ray.sampling.filters import FILTERS, Decision, majority_vote
from s2d_ray.tasks.spec import TaskSpec


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
    template: str | None = None  # a template program's YAML text (method is its file)
    filter: str | None = "majority"  # None: evaluation (majority answer, nothing dropped)
    min_agreement: float = 0.0
    config_hash: str = ""

    def task_spec(self) -> TaskSpec | None:
        return TaskSpec(**self.task) if self.task else None

    def program(self) -> Program:
        return get_program(self.method, self.task_spec(), self.template)


def _evaluate_vote(samples: list, answers: AnswerSpec) -> Decision:
    """Evaluation's System 2 answer: the majority (free text: the first response)."""
    if answers.comparable:
        answer, agreement, _ = majority_vote(samples, answers)
    else:
        answer, agreement = next((s.answer for s in samples if s.answer), None), None
    return Decision(answer is not None, answer, agreement, None if answer else "no parseable answer")


def process_rows(
    rows: list[dict[str, Any]],
    spec: StageSpec,
    program: Program,
    generate: Generate,
    prompt_tokens: Callable[[str], int],
    max_model_len: int,
) -> list[dict[str, Any]]:
    """Result rows (RESULT_SCHEMA) for validated input rows."""
    start = time.perf_counter()
    out: list[dict[str, Any]] = []
    runs, live = [], []
    for row in rows:
        res = {
            "id": row["id"], "job": row.get("job"), "input": row["input"], "system1_input": None, "answer": row.get("answer"),
            "meta": row.get("meta") or "{}", "source": row.get("source"), "status": "rejected",
            "reason": row.get("reject_reason"), "target": None, "agreement": None, "method": spec.method,
            "model": spec.model, "n_samples": spec.n_samples, "config_hash": spec.config_hash,
            "generated_tokens": 0, "latency_s": None, "batch_rows": None, "samples": [],
        }
        out.append(res)
        if res["reason"]:
            continue
        item = {"id": row["id"], "input": row["input"], "answer": row.get("answer"), "meta": json.loads(res["meta"])}
        try:
            res["system1_input"] = program.system1_input(item)
        except ValueError as e:
            res["reason"] = f"{spec.method}: {e}"
            continue
        n_prompt = prompt_tokens(res["system1_input"])
        if n_prompt + spec.max_tokens > max_model_len:
            res["reason"] = f"input too long: {n_prompt} prompt tokens + max_tokens {spec.max_tokens} > max_model_len {max_model_len}"
            continue
        runs.append(_chain(program, spec, item))
        live.append(res)
    for res, result in zip(live, drive(runs, generate)):
        if isinstance(result, BaseException):
            res["reason"] = f"{type(result).__name__}: {result}"
            continue
        samples, decision = result
        res["samples"] = [s.as_row() for s in samples]
        res["generated_tokens"] = sum(s.tokens for s in samples)
        res["target"], res["agreement"], res["reason"] = decision.target, decision.agreement, decision.reason
        res["status"] = ("kept" if decision.kept else "dropped") if spec.filter else "answered"
    elapsed = time.perf_counter() - start
    for res in live:
        res["latency_s"], res["batch_rows"] = elapsed, len(live)
    return out


def _chain(program: Program, spec: StageSpec, item: dict[str, Any]):
    samples = yield from program.run(item, spec.n_samples)
    if spec.filter is None:
        return samples, _evaluate_vote(samples, program.answers)
    decision = yield from FILTERS[spec.filter](samples, spec.min_agreement, item["input"], program.answers)
    return samples, decision


class ProgramStage:
    """Ray Data actor: one vLLM engine; runs each row's job (a StageSpec) on its batch.

    ``specs`` maps job names to specs that share the model and engine settings, so one
    engine start serves e.g. System 1 and System 2 evaluation; rows name their job in the
    ``job`` column (rows without one use the only spec)."""

    def __init__(self, specs: dict[str, dict[str, Any]]) -> None:
        from s2d_ray.sampling.engine import Engine

        self.specs = {name: StageSpec(**s) for name, s in specs.items()}
        first = next(iter(self.specs.values()))
        cfg = EngineConfig(**first.engine)
        self.engine = Engine(first.model, cfg, first.temperature, first.top_p, first.max_tokens)
        self.programs = {name: s.program() for name, s in self.specs.items()}
        self.max_model_len = cfg.max_model_len

    def _prompt_tokens(self, text: str) -> int:
        return len(self.engine.prompt_ids(Call(user(text))))

    def __call__(self, batch: pa.Table) -> pa.Table:
        default = next(iter(self.specs))
        groups: dict[str, list[dict[str, Any]]] = {}
        for row in batch.to_pylist():
            groups.setdefault(row.get("job") or default, []).append(row)
        rows: list[dict[str, Any]] = []
        for job, group in groups.items():
            spec = self.specs[job]
            self.engine.temperature, self.engine.top_p, self.engine.max_tokens = spec.temperature, spec.top_p, spec.max_tokens
            start = time.perf_counter()
            done = process_rows(group, spec, self.programs[job], self.engine.generate, self._prompt_tokens, self.max_model_len)
            elapsed = time.perf_counter() - start
            tokens = sum(r["generated_tokens"] for r in done)
            print(f"[s2d] {job}: {len(done)} rows, {tokens} tokens in {elapsed:.1f}s ({tokens / max(elapsed, 1e-9):.0f} tok/s)", flush=True)
            rows += done
        return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
