"""Stage 5: System 1 vs System 2 vs distilled System 1 on held-out inputs, plus how the
distilled model changed on tasks it was not distilled on. ``evaluate(cfg)`` is `s2d eval`.

Base-model jobs (System 1, System 2, broader tasks) share one engine; distilled-model jobs
share another. Results stream into ``eval/base`` and ``eval/distilled`` and resume by id.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from s2d_ray.config import RunConfig
from s2d_ray.errors import S2DError
from s2d_ray.evaluation.metrics import paired_bootstrap_delta, summarize, swap_inconsistency
from s2d_ray.evaluation.report import format_report, write_report
from s2d_ray.inputs import read_inputs
from s2d_ray.outputs import OutputDir
from s2d_ray.programs import Sample, program_fingerprint, program_template
from s2d_ray.programs.filters import majority_vote
from s2d_ray.runtime import init_ray
from s2d_ray.stage import StageSpec, run_stage
from s2d_ray.tasks import TaskSpec, generator_fingerprint, task_spec


def _tag(batch: pa.Table, job: str) -> pa.Table:
    """Mark rows with their job; ids get the job as prefix so results of jobs never collide."""
    ids = pa.array([f"{job}/{i}" if i is not None else None for i in batch["id"].to_pylist()], pa.string())
    batch = batch.set_column(batch.schema.get_field_index("id"), "id", ids)
    return batch.set_column(batch.schema.get_field_index("job"), "job", pa.array([job] * batch.num_rows, pa.string()))


def _dump(task: TaskSpec | None) -> dict[str, Any] | None:
    return task.model_dump() if task else None


def _specs(cfg: RunConfig, model: str, config_hash: str, system2: bool) -> dict[str, StageSpec]:
    e, s = cfg.eval, cfg.sample
    task = _dump(cfg.task_spec)
    direct = dict(model=model, method="direct", n_samples=1, temperature=0.0, top_p=1.0, max_tokens=e.max_tokens,
                  engine=s.engine.model_dump(), filter=None, config_hash=config_hash)
    # System 1 and the distilled model answer the prompts the distillation set trained on.
    name = "system1" if system2 else "distilled"
    prompts = dict(system1_of=s.prompts_of, template=program_template(s.prompts_of))
    specs = {name: StageSpec(**direct, task=task, **prompts)}
    k = max(e.majority_at, default=0)
    if k:  # majority@k: k samples of System 1 at the sampling temperature
        sampled = {**direct, "n_samples": k, "temperature": s.temperature, "top_p": s.top_p}
        specs[f"{name}@k"] = StageSpec(**sampled, task=task, **prompts)
    if system2:
        specs["system2"] = StageSpec(
            model=model, method=s.method, n_samples=max(e.system2_samples or s.n_samples, k), temperature=s.temperature,
            top_p=s.top_p, max_tokens=s.max_tokens, engine=s.engine.model_dump(), task=task,
            template=program_template(s.prompts_of), system1_of=s.system1_of, filter=None, config_hash=config_hash)
    for t in e.broader_tasks if e.base else []:
        specs[f"broader:{t}"] = StageSpec(**direct, task=_dump(task_spec(t)))
    return specs


def _dataset(cfg: RunConfig, specs: dict[str, StageSpec]):
    parts = []
    for job in specs:
        if job.startswith("broader:"):
            ds = read_inputs(f"task:{job.split(':', 1)[1]}", cfg.eval.n_broader, cfg.data.seed, "test")
        else:
            ds = read_inputs(cfg.data.test, cfg.data.n_test, cfg.data.seed, "test")
        parts.append(ds.map_batches(_tag, fn_kwargs={"job": job}, batch_format="pyarrow"))
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


def _score(rows: list[dict[str, Any]], specs: dict[str, StageSpec]) -> list[dict[str, Any]]:
    tasks = {job: spec.task_spec() for job, spec in specs.items()}
    for r in rows:
        spec, task = specs[r["job"]], tasks[r["job"]]
        r["correct"], r["verdict"] = None, None
        r["meta_d"] = json.loads(r["meta"] or "{}")
        if r["status"] == "rejected":
            continue
        text = r["samples"][0]["text"] if spec.method == "direct" else (r["target"] or "")
        r["verdict"] = (task.extract(text) if task else None) if spec.method == "direct" else r["target"]
        if r["answer"] is not None and task is not None:
            r["correct"] = task.is_correct(text, _gold(r))
    return rows


def _gold(r: dict[str, Any]) -> dict[str, Any]:
    """What a task scorer reads of a scored row: its input, answer and metadata (aliases, wrong)."""
    return {**r["meta_d"], "input": r["input"], "answer": r["answer"]}


def _majority_at(rows: list[dict[str, Any]], k: int, task: TaskSpec) -> dict[str, Any]:
    """Accuracy of the majority answer of each row's first ``k`` samples (a tie: the first most
    common), and the mean generated tokens of those samples."""
    scored = []
    for r in rows:
        if r["status"] == "rejected" or len(r["samples"]) < k:
            continue
        first = r["samples"][:k]
        answer, _, _ = majority_vote([Sample(s["answer"]) for s in first], task.answers)
        correct = None if r["answer"] is None else (answer is not None and task.is_correct(answer, _gold(r)))
        scored.append({"status": r["status"], "correct": correct, "generated_tokens": sum(s["tokens"] for s in first)})
    return summarize(scored)


def _by_job(rows: list[dict[str, Any]], job: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["job"] == job]


def _outcomes(rows: list[dict[str, Any]]) -> dict[str, bool]:
    return {r["id"].split("/", 1)[1]: bool(r["correct"]) for r in rows if r["correct"] is not None}


def _delta(base_rows: list[dict[str, Any]], dist_rows: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Base vs distilled accuracy on the same inputs, with the paired-bootstrap delta."""
    a, b = _outcomes(base_rows), _outcomes(dist_rows)
    delta, ci, n = paired_bootstrap_delta(a, b, seed=seed)
    return {"base": sum(a.values()) / len(a) if a else None, "distilled": sum(b.values()) / len(b) if b else None,
            "delta": delta, "delta_ci95": list(ci), "n": n}


def evaluate(cfg: RunConfig) -> dict[str, Any]:
    """Run all evaluation jobs (resumable) and write report.json/.md/.png."""
    from s2d_ray.training import train_hash

    out = OutputDir(cfg.output_dir)
    if not out.exists("model", "config.json"):
        raise S2DError(f"eval: no trained model at {out.uri('model')}; run `s2d train` first")
    init_ray(cfg.locations("output_dir", "data.test", "model"))
    task = _dump(cfg.task_spec)  # its format and system prompt are in every eval prompt
    programs = [program_fingerprint(m) for m in sorted({cfg.sample.method, cfg.sample.prompts_of})]
    broader = [f"task:{t}" for t in cfg.eval.broader_tasks]  # built-in tasks, as are task: inputs
    data = {**cfg.data.model_dump(), "generator": generator_fingerprint(cfg.data.test, *broader)}
    base_hash = cfg.stage_hash("eval", extra={"data": data, "sample": cfg.sample.model_dump(exclude={"actors"}),
                                              "program": programs, "task": task, "system1": program_fingerprint("direct")})
    dist_hash = cfg.stage_hash("eval", extra={"data": data, "train": train_hash(cfg), "task": task,
                                              "system1": program_fingerprint("direct")})
    stages = {"distilled": _specs(cfg, out.uri("model"), dist_hash, system2=False)}
    if cfg.eval.base:
        stages = {"base": _specs(cfg, cfg.model, base_hash, system2=True), **stages}
    stats, scored = {}, {}
    for name, specs in stages.items():
        stats[name] = run_stage(_dataset(cfg, specs), specs, cfg.sample.actors, out, f"eval/{name}").as_dict()
        scored[name] = _score(out.read_tables(f"eval/{name}").to_pylist(), specs)
    base, dist = scored.get("base", []), scored["distilled"]

    jobs = {"distilled": _by_job(dist, "distilled")}
    if cfg.eval.base:
        jobs = {"system1": _by_job(base, "system1"), "system2": _by_job(base, "system2"), **jobs}
    majority_at: dict[str, Any] = {}
    if cfg.eval.majority_at and cfg.task_spec is not None:
        sampled = {"system1": _by_job(base, "system1@k"), "system2": jobs.get("system2", []),
                   "distilled": _by_job(dist, "distilled@k")}
        sampled = {name: rows for name, rows in sampled.items() if rows}
        majority_at = {name: {str(k): _majority_at(rows, k, cfg.task_spec) for k in cfg.eval.majority_at}
                       for name, rows in sampled.items()}
    systems = {name: summarize(rows) for name, rows in jobs.items()}
    for name, rows in jobs.items():  # pairwise judging: verdicts of both orders of a pair
        if (swap := swap_inconsistency(rows)) is not None:
            systems[name]["swap_inconsistent"] = swap
    subsets: dict[str, Any] = {}
    for column in cfg.eval.group_by:  # e.g. variant: one subset per value, each with its delta
        for value in sorted({str(r["meta_d"][column]) for r in jobs["distilled"] if r["meta_d"].get(column) is not None}):
            part = {name: [r for r in rows if str(r["meta_d"].get(column)) == value] for name, rows in jobs.items()}
            subsets[f"{column}={value}"] = {name: summarize(rows) for name, rows in part.items()}
            if "system1" in part:
                subsets[f"{column}={value}"]["delta"] = _delta(part["system1"], part["distilled"], cfg.data.seed)
    broader: dict[str, Any] = {}
    for task in cfg.eval.broader_tasks if cfg.eval.base else []:
        job = f"broader:{task}"
        broader[task] = _delta(_by_job(base, job), _by_job(dist, job), cfg.data.seed)
    report = {
        "task": cfg.task_name,
        "method": cfg.sample.method,
        "model": cfg.model,
        "output_dir": cfg.output_dir,
        "systems": systems,
        "headline": cfg.eval.headline,
        "subsets": subsets,
        "broader": broader,
        "majority_at": majority_at,
        "stages": stats,
    }
    if out.exists("samples_summary.json"):
        report["distillation_set"] = {k: v for k, v in out.read_json("samples_summary.json").items() if k != "this_run"}
    if out.exists("model", "s2d_train.json"):
        info = out.read_json("model", "s2d_train.json")
        report["training"] = {k: info[k] for k in ("finetune", "zero_stage", "examples", "steps", "first_loss", "last_loss")}
    write_report(out, report)
    return report


__all__ = ["evaluate", "format_report"]
