"""Broader performance on standard benchmarks through EleutherAI's lm-evaluation-harness
(``lm_eval``, a pinned dependency): how distillation changed the model on tasks it was not
distilled on. ``broader(cfg)`` is `s2d broader CONFIG`.

- The harness drives the evaluation; s2d-ray gives it a model: ``EngineLM``, an ``lm_eval`` LM
  over the project's own vLLM engine (log-likelihoods from vLLM's prompt logprobs, generation by
  the same engine), so CPU and GPU, LoRA-free merged models and engine settings are handled once.
- Each model (base, then distilled) is one Ray task holding one engine, placed as the engine
  actors are (``sample.actors.num_cpus``/``num_gpus``): the worker prepares the data, runs the
  harness and returns per-document scores; the driver pairs them.
- BIG-bench tasks (``bigbench:NAME``) come from the ``bigbench`` sdist on the package registry
  (its JSON task files; the package's code is never imported or run): fetched once into the cache
  by its pinned sha256, the chosen tasks turned into local harness tasks (``dataset_path: json``),
  their documents drawn with ``data.seed``. Any other name is a harness task as lm-eval knows it.
- Results: ``broader/<base|distilled>.json`` per model (skipped when present for the same model,
  tasks and settings), ``broader/report.{json,md,png}``, and, when the run has one, the same
  table in report.{json,md,png}.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

from s2d_ray import console
from s2d_ray.config import BroaderConfig, RunConfig, content
from s2d_ray.errors import S2DError
from s2d_ray.models import cache_dir

BIGBENCH = ("bigbench", "1.0.0", "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2")
PREFIX = "bigbench:"
SDIST_ENV = "S2D_BIGBENCH_SDIST"  # path of a bigbench sdist to read instead of the cached download
RESULTS_VERSION = 2  # what a model's broader/<which>.json holds (2: each document's chosen choice too)
CONCURRENT_REQUESTS = 256  # log-likelihood requests in flight on one engine (its batch fills from them)


# -- BIG-bench data -------------------------------------------------------------------------------
def _index_url() -> str:
    """The package index pip uses here (PIP_INDEX_URL, else PyPI)."""
    return os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")


def bigbench_sdist() -> Path:
    """The bigbench sdist in the cache, fetched once from the package index (PEP 691 JSON) and
    checked against its pinned sha256 (``S2D_BIGBENCH_SDIST`` names a copy to use instead). Fetched
    as a file: ``pip download`` would run its setup.py."""
    name, version, sha256 = BIGBENCH
    if given := os.environ.get(SDIST_ENV):  # a copy you already have (an air-gapped node); read as is
        return Path(given)
    path = cache_dir() / "data" / f"{name}-{version}.tar.gz"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    index = f"{_index_url()}/{name}/"
    try:
        req = urllib.request.Request(index, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            files = json.load(r)["files"]
        url = next(f["url"] for f in files if f["filename"] == path.name)
    except (OSError, ValueError, KeyError, StopIteration) as e:
        raise S2DError(f"broader: cannot find {path.name} on the package index {index} ({e}); put the file at {path} "
                       "(pip download bigbench==1.0.0 --no-deps --no-binary :all:) or set PIP_INDEX_URL") from None
    part = path.with_suffix(".part")
    digest = hashlib.sha256()
    console.say(f"broader: fetching {path.name} (358 MB, once) from {url}")
    with urllib.request.urlopen(url, timeout=600) as r, open(part, "wb") as f:
        while chunk := r.read(1 << 20):
            digest.update(chunk)
            f.write(chunk)
    if digest.hexdigest() != sha256:
        part.unlink()
        raise S2DError(f"broader: {url} has sha256 {digest.hexdigest()}, expected {sha256}; not used")
    part.rename(path)
    return path


def bigbench_prompt(task: dict[str, Any], example: dict[str, Any]) -> str:
    """A multiple-choice example as BIG-bench's JSON tasks lay it out (their defaults: "Q: ",
    choices appended as "  choice: X" lines, "A:"), ending before the answer's space."""
    text = task.get("task_prefix", "") + task.get("example_input_prefix", "\nQ: ") + example["input"]
    if task.get("append_choices_to_input", True):
        prefix = task.get("choice_prefix", "\n  choice: ")
        text += "".join(prefix + choice for choice in example["target_scores"])
    return (text + task.get("example_output_prefix", "\nA: ")).strip()


def harness_name(task: str) -> str:
    return "s2d_bb_" + task[len(PREFIX):].replace("/", "_")


def prepare_bigbench(tasks: list[str], n: int | None, seed: int) -> Path:
    """Local harness tasks for ``bigbench:`` names (a YAML and a JSONL each, in the cache, once
    per tasks/n/seed): multiple-choice examples with one right answer, ``n`` drawn with ``seed``."""
    sdist = bigbench_sdist()
    stat = sdist.stat()
    key = hashlib.sha256(json.dumps([sorted(tasks), n, seed, str(sdist.resolve()), stat.st_size, stat.st_mtime_ns])
                         .encode()).hexdigest()[:12]
    root = cache_dir() / "harness" / f"bigbench-{key}"
    if (root / "done").exists():
        return root
    wanted = {t[len(PREFIX):]: t for t in tasks}
    found: dict[str, dict[str, Any]] = {}
    with tarfile.open(sdist) as tf:
        for member in tf:
            rel = member.name.split("/benchmark_tasks/", 1)[-1].rsplit("/task.json", 1)[0]
            if member.name.endswith("/task.json") and rel in wanted:
                found[rel] = json.load(tf.extractfile(member))
    if missing := sorted(set(wanted) - set(found)):
        raise S2DError(f"broader: no BIG-bench JSON task {missing} in {BIGBENCH[0]}-{BIGBENCH[1]} (names as in "
                       "bigbench/benchmark_tasks/, e.g. bigbench:logical_deduction/three_objects)")
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    for rel, task in found.items():
        docs = []
        for ex in task["examples"]:
            scores = ex.get("target_scores") or {}
            best = max(scores.values(), default=0)
            if best > 0 and sum(v == best for v in scores.values()) == 1:
                docs.append({"input": bigbench_prompt(task, ex), "choices": list(scores),
                             "gold": list(scores.values()).index(best)})
        if not docs:
            raise S2DError(f"broader: {wanted[rel]} has no multiple-choice examples with one right answer; "
                           "only such BIG-bench tasks are supported")
        random.Random(seed).shuffle(docs)
        docs = docs[:n] if n else docs
        name = harness_name(wanted[rel])
        (root / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
        (root / f"{name}.yaml").write_text(yaml.safe_dump({
            "task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(root / f"{name}.jsonl")}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{input}}",
            "doc_to_choice": "{{choices}}", "doc_to_target": "{{gold}}",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}))
    (root / "done").write_text("")
    return root


# -- the model lm-eval drives ------------------------------------------------------------------
def engine_lm(engine: Any, loop: asyncio.AbstractEventLoop) -> Any:
    """An ``lm_eval`` LM over an ``s2d_ray.engine.Engine``: every request of a call runs
    concurrently on the engine (vLLM batches them; prefix caching shares a question's context
    across its choices)."""
    from lm_eval.api.model import LM

    from s2d_ray.engine import sampling_params

    gate = asyncio.Semaphore(CONCURRENT_REQUESTS)
    tok = engine.tokenizer

    async def loglikelihood(context: str, continuation: str) -> tuple[float, bool]:
        # As lm-eval's HF model: trailing spaces of the context belong to the continuation.
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        ctx = tok.encode(context, add_special_tokens=False) or [tok.eos_token_id]
        whole = tok.encode(context + continuation, add_special_tokens=False)
        cont = whole[len(ctx):] if whole[:len(ctx)] == ctx else tok.encode(continuation, add_special_tokens=False)
        ids = (ctx + cont)[-(engine.max_model_len - 1):]
        async with gate:
            out = await engine.generate(ids, sampling_params(max_tokens=1, prompt_logprobs=1))
        total, greedy = 0.0, True
        for tid, pos in zip(ids[len(ids) - len(cont):], out.prompt_logprobs[len(ids) - len(cont):]):
            total += pos[tid].logprob
            greedy &= pos[tid].logprob >= max(lp.logprob for lp in pos.values())
        return total, bool(greedy)

    async def generate(context: str, kwargs: dict[str, Any]) -> str:
        until = kwargs.get("until") or []
        ids = tok.encode(context, add_special_tokens=False)
        room = engine.room(ids)
        if room < 1:
            return ""
        params = sampling_params(max_tokens=min(int(kwargs.get("max_gen_toks", 256)), room),
                                 temperature=float(kwargs.get("temperature", 0.0)), stop=[until] if isinstance(until, str) else list(until))
        async with gate:
            out = await engine.generate(ids, params)
        return out.outputs[0].text

    async def gather(coros: list[Any]) -> list[Any]:
        return await asyncio.gather(*coros)

    def run(coros: list[Any]) -> list[Any]:
        return loop.run_until_complete(gather(coros))

    class EngineLM(LM):
        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return run([loglikelihood(*r.args) for r in requests])

        def generate_until(self, requests, disable_tqdm: bool = False):
            return run([generate(*r.args) for r in requests])

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise S2DError("broader: perplexity tasks (loglikelihood_rolling) are not supported; choose "
                           "multiple-choice or generation tasks")

    return EngineLM()


def evaluate_model(model: str, cfg: dict[str, Any], broader: dict[str, Any], seed: int) -> dict[str, Any]:
    """In a Ray worker: the harness over one model. Returns per task its metric, the score and
    each document's value ({doc_id: value})."""
    b = BroaderConfig.model_validate(broader)
    local = [t for t in b.tasks if t.startswith(PREFIX)]
    if len(local) == len(b.tasks):  # local JSON tasks only: no hub round trips (set before datasets loads)
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lm_eval
    from lm_eval.tasks import TaskManager

    from s2d_ray.config import EngineConfig
    from s2d_ray.engine import Engine

    include = prepare_bigbench(local, b.n_per_task, seed) if local else None
    names = [harness_name(t) if t.startswith(PREFIX) else t for t in b.tasks]
    loop = asyncio.new_event_loop()
    engine = Engine(model, EngineConfig.model_validate(cfg))
    try:
        result = lm_eval.simple_evaluate(
            model=engine_lm(engine, loop), tasks=names, num_fewshot=b.num_fewshot,
            limit=b.n_per_task,  # BIG-bench files hold n already
            task_manager=TaskManager(include_path=str(include) if include else None), log_samples=True,
            bootstrap_iters=0, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
    finally:
        engine.shutdown()
        loop.close()
    out = {}
    for task, name in zip(b.tasks, names):
        samples = result["samples"][name]
        samples = [x for x in samples if x["filter"] == samples[0]["filter"]]  # e.g. gsm8k: its first filter's
        metric = next(m for m in ("acc", "exact_match", *samples[0].get("metrics", [])) if m in samples[0])
        docs = {str(s["doc_id"]): float(s[metric]) for s in samples}
        out[task] = {"metric": metric, "score": sum(docs.values()) / len(docs), "docs": docs, "picks": _picks(samples)}
    return out


def _picks(samples: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Multiple-choice documents' ``[chosen choice, gold choice]`` (the choice ``acc`` scores:
    the highest log-likelihood); empty for other output types."""
    picks = {}
    for s in samples:
        resps, gold = s.get("filtered_resps") or [], s.get("target")
        if isinstance(gold, int) and resps and all(isinstance(r, (list, tuple)) for r in resps):
            lls = [float(r[0]) for r in resps]
            picks[str(s["doc_id"])] = [lls.index(max(lls)), gold]
    return picks


def _choice_shape(base: dict[str, list[int]], distilled: dict[str, list[int]]) -> dict[str, Any]:
    """What a multiple-choice score is made of: the best constant choice's score (from the gold
    choices alone) and each model's most frequent choice with its share; {} for other tasks."""
    from collections import Counter

    ids = sorted(set(base) & set(distilled))
    if not ids:
        return {}

    def top(picks: dict[str, list[int]], at: int) -> dict[str, Any]:
        choice, n = Counter(picks[i][at] for i in ids).most_common(1)[0]
        return {"choice": choice, "share": n / len(ids)}

    gold = top(base, 1)
    return {"constant_choice": {"choice": gold["choice"], "score": gold["share"]},
            "top_pick": {"base": top(base, 0), "distilled": top(distilled, 0)}}


# -- the job -----------------------------------------------------------------------------------------
def _paired(a: dict[str, float], b: dict[str, float], seed: int, reps: int = 2000) -> dict[str, Any]:
    """Base vs distilled on shared documents: scores and the paired-bootstrap delta (binary
    metrics through metrics.paired_bootstrap_delta; others by resampling documents)."""
    import numpy as np

    from s2d_ray.evaluation.metrics import paired_bootstrap_delta

    ids = sorted(set(a) & set(b))
    if all(a[i] in (0.0, 1.0) and b[i] in (0.0, 1.0) for i in ids):
        delta, ci, n = paired_bootstrap_delta({i: a[i] == 1.0 for i in ids}, {i: b[i] == 1.0 for i in ids}, reps, seed)
    else:
        diff = np.array([b[i] - a[i] for i in ids])
        means = np.sort(diff[np.random.default_rng(seed).integers(0, len(ids), (reps, len(ids)))].mean(axis=1))
        delta, ci, n = float(diff.mean()), (float(means[int(0.025 * reps)]), float(means[int(0.975 * reps) - 1])), len(ids)
    return {"base": sum(a[i] for i in ids) / len(ids) if ids else None,
            "distilled": sum(b[i] for i in ids) / len(ids) if ids else None,
            "delta": delta, "delta_ci95": list(ci), "n": n}


def broader(cfg: RunConfig) -> dict[str, Any]:
    """`s2d broader`: the harness suite (eval.broader, or its defaults) on the base model and on
    the distilled model of output_dir, paired per document; writes broader/ and updates the
    run's report when it has one."""
    import ray

    from s2d_ray.evaluation.report import format_harness, plot_harness, write_report
    from s2d_ray.outputs import OutputDir
    from s2d_ray.runtime import init_ray

    out = OutputDir(cfg.output_dir)
    if not out.exists("model", "config.json") or not out.exists("model", "s2d_train.json"):
        raise S2DError(f"broader: no trained model at {out.uri('model')}; run `s2d train` first")
    b = cfg.eval.broader or BroaderConfig()
    import lm_eval

    settings = {**content(b), "seed": cfg.data.seed, "lm_eval": lm_eval.__version__, "bigbench": BIGBENCH[1],
                "results": RESULTS_VERSION}
    models = {"base": (cfg.model, cfg.model), "distilled": (out.uri("model"), out.read_json("model", "s2d_train.json")["config_hash"])}
    init_ray(cfg.locations("output_dir", "model"))
    actors = cfg.sample.actors
    run = ray.remote(evaluate_model).options(num_cpus=actors.num_cpus, num_gpus=actors.num_gpus, max_retries=0)
    results = {}
    for which, (model, identity) in models.items():  # one after another: each holds an engine
        key = hashlib.sha256(json.dumps({"model": identity, **settings}, sort_keys=True).encode()).hexdigest()[:12]
        if out.exists("broader", f"{which}.json") and (done := out.read_json("broader", f"{which}.json")).get("key") == key:
            results[which] = done["tasks"]
            continue
        console.say(f"broader: lm-evaluation-harness {lm_eval.__version__}, {len(b.tasks)} tasks, {which} model {model}")
        results[which] = ray.get(run.remote(model, cfg.sample.engine.model_dump(), b.model_dump(), cfg.data.seed))
        out.write_text(json.dumps({"key": key, "model": model, "settings": settings, "tasks": results[which]}), "broader", f"{which}.json")
    table = {task: {"metric": results["base"][task]["metric"],
                    **_paired(results["base"][task]["docs"], results["distilled"][task]["docs"], cfg.data.seed),
                    **_choice_shape(results["base"][task]["picks"], results["distilled"][task]["picks"])}
             for task in b.tasks}
    summary = {"model": cfg.model, "distilled": out.uri("model"), "settings": settings, "tasks": table}
    out.write_text(json.dumps(summary, indent=2), "broader", "report.json")
    out.write_text("\n".join(format_harness(table, settings)), "broader", "report.md")
    with out.fs.open_output_stream(out.path("broader", "report.png")) as f:
        f.write(plot_harness(table, f"broader performance: {cfg.model}, base vs distilled"))
    if out.exists("report.json"):  # the run's report gains the table
        report = out.read_json("report.json")
        report["harness"] = {"settings": settings, "tasks": table}
        write_report(out, report)
    return summary
