"""Stage 5: System 1 vs System 2 vs distilled System 1 on held-out inputs, plus how the
distilled model changed on tasks it was not distilled on. ``evaluate(cfg)`` is `s2d eval`.

Base-model jobs (System 1, System 2, broader tasks) share one engine; distilled-model jobs
share another. Results stream into ``eval/base`` and ``eval/distilled`` and resume by id; a
Ray Data job scores them into ``eval/scored/``, and a worker computes the report's figures
from those compact rows (the driver holds none).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import pyarrow as pa

from s2d_ray import console
from s2d_ray.config import RunConfig, content
from s2d_ray.errors import S2DError
from s2d_ray.evaluation.metrics import (label_summary, one_label_warning, paired_balanced_delta, paired_bootstrap_delta,
                                        summarize, swap_inconsistency)
from s2d_ray.evaluation.report import LABELS, format_report, write_report
from s2d_ray.inputs import read_inputs
from s2d_ray.datasets import ShardSink, files_digest, read_results
from s2d_ray.outputs import OutputDir, manifest_files, new_run_id, read_manifest, run_files, write_manifest
from s2d_ray.programs import Sample, program_fingerprint, program_template
from s2d_ray.programs.filters import majority_vote
from s2d_ray.runtime import LIGHT_CPUS, init_ray, write_options
from s2d_ray.stage import StageSpec, run_stage
from s2d_ray.tasks import TaskSpec, generator_fingerprint, task_spec
from s2d_ray.training import TRAIN_INFO


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
    """Every job's test inputs, tagged with the job."""
    parts = []
    for job in specs:
        if job.startswith("broader:"):
            ds = read_inputs(f"task:{job.split(':', 1)[1]}", cfg.eval.n_broader, cfg.data.seed, "test")
        else:
            ds = read_inputs(cfg.data.test, cfg.data.n_test, cfg.data.seed, "test")
        parts.append(ds.map_batches(_tag, fn_kwargs={"job": job}, batch_format="pyarrow", num_cpus=LIGHT_CPUS))
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


def _gold(r: dict[str, Any]) -> dict[str, Any]:
    """What a task scorer reads of a scored row: its input, answer and metadata (aliases, wrong)."""
    return {**r["meta_d"], "input": r["input"], "answer": r["answer"]}


def _majority_row(r: dict[str, Any], k: int, task: TaskSpec) -> dict[str, Any] | None:
    """The majority answer of a row's first ``k`` samples (a tie: the first most common) scored,
    with those samples' generated tokens; None if the row has fewer than ``k`` samples."""
    if r["status"] == "rejected" or len(r["samples"]) < k:
        return None
    first = r["samples"][:k]
    answer, _, _ = majority_vote([Sample(s["answer"]) for s in first], task.answers)
    correct = None if r["answer"] is None else (answer is not None and task.is_correct(answer, _gold(r)))
    return {"status": r["status"], "correct": correct, "generated_tokens": sum(s["tokens"] for s in first)}


def _majority_at(rows: list[dict[str, Any]], k: int, task: TaskSpec) -> dict[str, Any]:
    """Majority@k accuracy of result rows, and the mean generated tokens of those k samples."""
    return summarize([m for m in (_majority_row(r, k, task) for r in rows) if m is not None])


SCORED_SCHEMA = pa.schema([("job", pa.string()), ("key", pa.string()), ("status", pa.string()), ("correct", pa.bool_()),
                           ("verdict", pa.string()), ("gold", pa.string()), ("predicted", pa.string()),
                           ("generated_tokens", pa.int64()), ("meta", pa.string()), ("majority", pa.string())])


def score_rows(batch: pa.Table, specs: dict[str, dict[str, Any]], keep: list[str], ks: list[int]) -> pa.Table:
    """Ray Data map_batches over evaluation results: each row scored by its job's task, kept
    compact (its key, correctness, verdict, tokens, the metadata ``keep`` names, majority@k)."""
    jobs = {job: StageSpec(**s) for job, s in specs.items()}
    tasks = {job: spec.task_spec() for job, spec in jobs.items()}
    out = []
    for r in batch.to_pylist():
        spec, task = jobs[r["job"]], tasks[r["job"]]
        r["meta_d"] = json.loads(r["meta"] or "{}")
        correct = verdict = gold = predicted = None
        majority: dict[str, Any] = {}
        closed = task is not None and task.answers.closed_set is not None
        if r["status"] != "rejected":
            text = r["samples"][0]["text"] if spec.method == "direct" else (r["target"] or "")
            verdict = (task.extract(text) if task else None) if spec.method == "direct" else r["target"]
            if r["answer"] is not None and task is not None:
                correct = bool(task.is_correct(text, _gold(r)))
            if closed:  # the label the system gave, and the one it should have
                predicted = task.extract(verdict) if verdict else None
                gold = task.extract(r["answer"]) if r["answer"] is not None else None
            if task is not None and (spec.n_samples > 1):
                majority = {str(k): _majority_row(r, k, task) for k in ks}
        out.append({"job": r["job"], "key": r["id"].split("/", 1)[1] if r["id"] else None, "status": r["status"],
                    "correct": correct, "verdict": verdict, "gold": gold, "predicted": predicted,
                    "generated_tokens": r["generated_tokens"],
                    "meta": json.dumps({c: r["meta_d"][c] for c in keep if r["meta_d"].get(c) is not None}),
                    "majority": json.dumps(majority)})
    return pa.Table.from_pylist(out, schema=SCORED_SCHEMA)


def _by_job(rows: list[dict[str, Any]], job: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["job"] == job]


def _outcomes(rows: list[dict[str, Any]]) -> dict[str, bool]:
    return {r["key"]: bool(r["correct"]) for r in rows if r["correct"] is not None}


def _delta(base_rows: list[dict[str, Any]], dist_rows: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Base vs distilled accuracy on the same inputs, with the paired-bootstrap delta."""
    a, b = _outcomes(base_rows), _outcomes(dist_rows)
    delta, ci, n = paired_bootstrap_delta(a, b, seed=seed)
    return {"base": sum(a.values()) / len(a) if a else None, "distilled": sum(b.values()) / len(b) if b else None,
            "delta": delta, "delta_ci95": list(ci), "n": n}


def figures(out: OutputDir, files: dict[str, list[str]], cfg: RunConfig) -> dict[str, Any]:
    """The report's figures from the scored files (``files``: stage -> its scored files). Run
    as a Ray task: the rows are read by a worker, the driver gets the figures."""
    import pyarrow.parquet as pq

    def rows_of(stage: str) -> list[dict[str, Any]]:
        rows = [r for f in files.get(stage, []) for r in pq.read_table(f, filesystem=out.fs).to_pylist()]
        for r in rows:
            r["meta_d"] = json.loads(r["meta"])
        return rows

    base, dist = rows_of("base"), rows_of("distilled")
    jobs = {"distilled": _by_job(dist, "distilled")}
    if cfg.eval.base:
        jobs = {"system1": _by_job(base, "system1"), "system2": _by_job(base, "system2"), **jobs}
    majority_at: dict[str, Any] = {}
    if cfg.eval.majority_at and cfg.task_spec is not None:
        sampled = {"system1": _by_job(base, "system1@k"), "system2": jobs.get("system2", []),
                   "distilled": _by_job(dist, "distilled@k")}
        majority_at = {name: {str(k): summarize([m for r in rows if (m := json.loads(r["majority"]).get(str(k)))])
                              for k in cfg.eval.majority_at} for name, rows in sampled.items() if rows}
    systems = {name: summarize(rows) for name, rows in jobs.items()}
    for name, rows in jobs.items():  # pairwise judging: verdicts of both orders of a pair
        if (swap := swap_inconsistency(rows)) is not None:
            systems[name]["swap_inconsistent"] = swap
    closed = cfg.task_spec.answers.closed_set if cfg.task_spec is not None else None
    balanced_delta = None
    if closed:  # per-label truth: what a constant answer or a skewed test set would hide
        for name, rows in jobs.items():
            if (labels := label_summary(rows, closed, seed=cfg.data.seed)) is not None:
                systems[name]["labels"] = labels
                systems[name]["balanced_accuracy"] = labels["balanced_accuracy"]
                systems[name]["balanced_accuracy_ci95"] = labels["balanced_accuracy_ci95"]
        if "system1" in jobs:
            pairs = {name: {r["key"]: (r["gold"], bool(r["correct"])) for r in jobs[name]
                            if r["correct"] is not None and r["gold"] is not None} for name in ("system1", "distilled")}
            balanced_delta = paired_balanced_delta(pairs["system1"], pairs["distilled"], seed=cfg.data.seed)
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
    return {"systems": systems, "subsets": subsets, "broader": broader, "majority_at": majority_at,
            "balanced_delta": balanced_delta}


def warnings(report: dict[str, Any]) -> list[str]:
    """What a reader of the figures must not miss: a system that gives one answer to more than
    90% of the test inputs (its accuracy is that label's share of the test set), a distillation
    set whose kept targets are more than 90% one label."""
    out = []
    for name, m in report["systems"].items():
        if (labels := m.get("labels")) and (c := labels["constant"]):
            out.append(f"{LABELS[name]} answers {c['answer']!r} to {c['n']} of {labels['n']} test inputs ({c['share']:.0%}): "
                       f"its accuracy is that label's share of the test set (balanced accuracy "
                       f"{100 * labels['balanced_accuracy']:.1f}%, majority-class baseline "
                       f"{100 * labels['majority_baseline']['accuracy']:.1f}%)")
    kept = (report.get("distillation_set") or {}).get("kept_target_labels")
    if kept and (w := one_label_warning("the distillation set's kept targets", kept)):
        out.append(w + "; the distilled model learns mostly that label (sample.filter.balance caps a label's share)")
    return out


def score_stage(out: OutputDir, stage: str, specs: dict[str, StageSpec], cfg: RunConfig, config_hash: str) -> list[str]:
    """Score ``eval/STAGE`` into ``eval/scored/STAGE`` (a Ray Data job written by its workers;
    skipped while its manifest derives from exactly the current result files). Returns the
    scored files."""
    subdir, results = f"eval/scored/{stage}", out.files(f"eval/{stage}")
    digest = files_digest(results)
    manifest = read_manifest(out, subdir)
    if manifest and manifest.get("source_files") == digest and manifest.get("config_hash") == config_hash:
        return manifest_files(out, subdir)
    before, run_id = out.files(subdir), new_run_id()
    keep = sorted({*cfg.eval.group_by, "pair_id", "order"})
    columns = ["id", "job", "status", "input", "answer", "meta", "samples", "target", "generated_tokens"]
    if results:
        scored = read_results(out, results, columns).map_batches(
            score_rows, fn_kwargs={"specs": {j: asdict(s) for j, s in specs.items()}, "keep": keep,
                                   "ks": cfg.eval.majority_at}, batch_format="pyarrow", num_cpus=LIGHT_CPUS)
        scored.write_datasink(ShardSink(out, subdir, run_id), **write_options())
    new = run_files(out, subdir, run_id)
    write_manifest(out, subdir, config_hash=config_hash, parent=config_hash, source_files=digest,
                   files=[f.rsplit("/", 1)[-1] for f in new])
    for old in set(before) - set(new):
        out.fs.delete_file(old)
    return new


def _drop_replaced_model_results(out: OutputDir, model_hash: str) -> None:
    """``eval/distilled`` follows ``model/``: once training replaced the model (a new
    distillation set, e.g. another ``min_agreement``), results of the old one describe a model
    that no longer exists, so they are deleted and the new model is evaluated afresh. Results
    without a recorded model still meet ``check_config``'s refusal."""
    manifest = read_manifest(out, "eval/distilled")
    old = manifest.get("parent") if manifest else None
    if old is not None and old != model_hash:
        console.say(f"eval: {out.uri('eval/distilled')} holds results of the model trained for {old}; model/ is now "
                    f"trained for {model_hash}: deleting them and evaluating the new model")
        out.remove("eval/distilled")


def evaluate(cfg: RunConfig) -> dict[str, Any]:
    """Run all evaluation jobs (resumable) and write report.json/.md/.png."""
    import ray

    out = OutputDir(cfg.output_dir)
    if not out.exists("model", "config.json") or not out.exists("model", TRAIN_INFO):
        raise S2DError(f"eval: no trained model at {out.uri('model')}; run `s2d train` first")
    trained = out.read_json("model", TRAIN_INFO)
    init_ray(cfg.locations("output_dir", "data.test", "model"))
    task = _dump(cfg.task_spec)  # its format and system prompt are in every eval prompt
    programs = [program_fingerprint(m) for m in sorted({cfg.sample.method, cfg.sample.prompts_of})]
    broader = [f"task:{t}" for t in cfg.eval.broader_tasks]  # built-in tasks, as are task: inputs
    data = {**cfg.data.model_dump(), "generator": generator_fingerprint(cfg.data.test, *broader)}
    base_hash = cfg.stage_hash("eval", extra={"data": data, "sample": content(cfg.sample),
                                              "program": programs, "task": task, "system1": program_fingerprint("direct")})
    dist_hash = cfg.stage_hash("eval", extra={"data": data, "train": trained["config_hash"], "task": task,
                                              "system1": program_fingerprint("direct")})
    stages = {"distilled": _specs(cfg, out.uri("model"), dist_hash, system2=False)}
    _drop_replaced_model_results(out, trained["config_hash"])
    if cfg.eval.base:
        stages = {"base": _specs(cfg, cfg.model, base_hash, system2=True), **stages}
    stats, scored = {}, {}
    for name, specs in stages.items():
        config_hash = next(iter(specs.values())).config_hash
        parent = trained["config_hash"] if name == "distilled" else None
        title = "eval base model (System 1 + System 2)" if name == "base" else "eval distilled model"
        stats[name] = run_stage(_dataset(cfg, specs), specs, cfg.sample.actors, out, f"eval/{name}", parent,
                                title=title).as_dict()
        scored[name] = score_stage(out, name, specs, cfg, config_hash)
    figs = ray.get(ray.remote(figures).options(num_cpus=LIGHT_CPUS).remote(out, scored, cfg))
    report = {
        "task": cfg.task_name,
        "method": cfg.sample.method,
        "model": cfg.model,
        "output_dir": cfg.output_dir,
        "systems": figs["systems"],
        "headline": cfg.eval.headline,
        "subsets": figs["subsets"],
        "broader": figs["broader"],
        "majority_at": figs["majority_at"],
        "balanced_delta": figs["balanced_delta"],
        "stages": stats,
    }
    if out.exists("samples_summary.json"):
        report["distillation_set"] = {k: v for k, v in out.read_json("samples_summary.json").items() if k != "this_run"}
    report["warnings"] = warnings(report)
    report["training"] = {k: trained[k] for k in ("finetune", "zero_stage", "examples", "steps", "first_loss", "last_loss")}
    write_report(out, report)
    return report


__all__ = ["evaluate", "format_report"]
