"""Paraphrased views (``sample.paraphrase.views``): after distill/ is built, the model rewords
each kept input K times (a stage over samples/' kept rows, written to paraphrases/HASH,
resumable like sampling; a capped input of ``sample.filter.balance`` is reworded too, and the
join leaves it out), and a Ray Data job joins the accepted rewordings with distill/ on the input's
id and writes them there as more rows: the rewording in the sampling program's System 1 prompt,
the kept input's target, ``view_of`` its id. The driver plans; the rows never pass through it.

distill/'s manifest keeps ``originals_hash`` (its kept inputs) and, with views, ``views`` (their
stage hash, files and counts); its ``config_hash`` covers both, so training follows a change of
views without sampling again."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from s2d_ray.config import RunConfig, content
from s2d_ray.datasets import Refilter, ShardSink, files_digest, read_results, read_samples
from s2d_ray.inputs import INPUT_SCHEMA
from s2d_ray.outputs import DISTILL_COLUMNS, KEPT_COLUMNS, RESULT_SCHEMA, OutputDir, new_run_id, read_manifest, run_files, write_manifest
from s2d_ray.programs import program_fingerprint
from s2d_ray.runtime import LIGHT_CPUS, write_options
from s2d_ray.stage import StageSpec, StageStats, run_stage, sample_spec
from s2d_ray.tasks import generator_fingerprint

PROGRAM = "s2d_ray.programs.paraphrase:Paraphrase"
_DISTILL_SCHEMA = pa.schema([(c, RESULT_SCHEMA.field(c).type if c in RESULT_SCHEMA.names else pa.string()) for c in DISTILL_COLUMNS])
SUBDIR = "paraphrases"


def paraphrase_dir(spec: StageSpec) -> str:
    """Where a rewording setting's rows live: paraphrases/HASH, so a changed K or temperature
    starts its own directory and a setting tried before is found done."""
    return f"{SUBDIR}/{spec.config_hash}"


def paraphrase_spec(cfg: RunConfig) -> StageSpec:
    """The rewording stage: no task (no system prompt, no format line), filter ``none`` (a row
    is kept when one rewording is accepted). Its hash: the model, the inputs and the rewording
    settings, not the sampling ones (a kept input's rewordings do not depend on how it was kept)."""
    p, s = cfg.sample.paraphrase, cfg.sample
    payload = {"data": {**{k: getattr(cfg.data, k) for k in ("train", "n_train", "seed")},
                        "generator": generator_fingerprint(cfg.data.train)},
               "paraphrase": content(p), "program": program_fingerprint(PROGRAM), "top_p": s.top_p,
               "engine": content(s.engine)}
    return StageSpec(model=cfg.model, method=PROGRAM, n_samples=p.views, temperature=p.temperature, top_p=s.top_p,
                     max_tokens=p.max_tokens, engine=s.engine.model_dump(), filter="none",
                     config_hash=cfg.stage_hash(extra=payload))


def _kept_inputs(batch: pa.Table) -> pa.Table:
    """Ray Data map_batches over samples/: the kept rows as input rows (raw input and meta; no
    target, no ground-truth answer)."""
    kept = batch.filter(pc.equal(batch["status"], "kept"))
    n = kept.num_rows
    return pa.table({"id": kept["id"], "input": kept["input"], "answer": pa.nulls(n, pa.string()), "meta": kept["meta"],
                     "source": kept["source"], "reject_reason": pa.nulls(n, pa.string()), "job": pa.nulls(n, pa.string()),
                     "seq": pa.array(range(n), pa.int64())}, schema=INPUT_SCHEMA)


def paraphrase(cfg: RunConfig, out: OutputDir, parent: str, decide: Refilter | None = None) -> StageStats:
    """Reword the kept inputs of samples/ (as ``decide`` decides them) not yet in paraphrases/
    (``parent``: samples/' hash)."""
    files = out.files("samples")
    if not files:
        return StageStats()
    ds = read_samples(out, files, ["id", "input", "meta", "source", "status"], decide).map_batches(
        _kept_inputs, batch_format="pyarrow", num_cpus=LIGHT_CPUS)
    spec = paraphrase_spec(cfg)
    return run_stage(ds, {"paraphrase": spec}, cfg.sample.actors, out, paraphrase_dir(spec), parent=parent,
                     title=f"paraphrase (x{spec.n_samples})")


def _accepted(batch: pa.Table) -> pa.Table:
    """Ray Data map_batches over paraphrases/: one row per accepted rewording (its kept input's
    ``id``, its number among that input's rewordings in ``k``)."""
    rows: dict[str, list] = {"id": [], "k": [], "rewrite": [], "meta": []}
    for row in batch.select(["id", "meta", "samples"]).to_pylist():
        for k, s in enumerate(row["samples"] or []):
            if s["answer"] is not None:
                for name, value in (("id", row["id"]), ("k", k), ("rewrite", s["answer"]), ("meta", row["meta"])):
                    rows[name].append(value)
    return pa.table({"id": pa.array(rows["id"], pa.string()), "k": pa.array(rows["k"], pa.int64()),
                     "rewrite": pa.array(rows["rewrite"], pa.string()), "meta": pa.array(rows["meta"], pa.string())})


def _view_rows(batch: pa.Table, spec: dict[str, Any]) -> pa.Table:
    """Ray Data map_batches over (accepted rewording JOIN distill/ originals, on the kept input's
    id): distill/ rows, the rewording asked as the sampling program's System 1 prompt, with its
    kept input's target, ``view_of`` its id."""
    program = StageSpec(**spec).program()
    parents = batch["id"].to_pylist()
    inputs = [program.system1_input({"id": i, "input": r, "answer": None, "meta": json.loads(m or "{}")})
              for i, r, m in zip(parents, batch["rewrite"].to_pylist(), batch["meta"].to_pylist())]
    ids = [f"{i}~p{k}" for i, k in zip(parents, batch["k"].to_pylist())]
    columns = {"id": pa.array(ids, pa.string()), "input": pa.array(inputs, pa.string()), "view_of": batch["id"]}
    return pa.table({c: columns[c] if c in columns else batch[c] for c in DISTILL_COLUMNS}).cast(_DISTILL_SCHEMA)  # join: large_string


def views_hash(originals_hash: str, paraphrase_hash: str) -> str:
    return hashlib.sha256(f"{originals_hash}|views={paraphrase_hash}".encode()).hexdigest()[:12]


def _rewordings(out: OutputDir, files: list[str]) -> dict[str, int]:
    """paraphrases/' rewordings per outcome: ``accepted``, or why one was dropped ("numbers
    changed", "names dropped", ...), counted by a Ray Data groupby."""
    schema = pa.schema([("outcome", pa.string()), ("n", pa.int64())])

    def count(batch: pa.Table) -> pa.Table:
        views = pc.list_flatten(batch["samples"].combine_chunks()).field("view").to_pylist()
        kinds = Counter((v.split(":", 2)[1] if v.startswith("dropped:") else v).strip() for v in views if v)
        return pa.table({"outcome": list(kinds), "n": list(kinds.values())}, schema=schema)

    ds = read_results(out, files, ["samples"]).map_batches(count, batch_format="pyarrow", num_cpus=LIGHT_CPUS)
    counts = {r["outcome"]: r["sum(n)"] for r in ds.groupby("outcome").sum("n").take_all()}
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def write_views(cfg: RunConfig, out: OutputDir) -> dict[str, Any] | None:
    """Make distill/ hold the views ``sample.paraphrase`` asks for: none (any earlier ones
    removed) or the accepted rewordings of paraphrases/ (rebuilt unless its manifest already
    names them for these files and settings). Returns the views' counts (None when off)."""
    manifest = read_manifest(out, "distill")
    if manifest is None:
        return None
    old = manifest.get("views")
    originals = [f for f in manifest["files"] if not old or f not in old["files"]]
    if cfg.sample.paraphrase.views == 0:
        if old:
            _set_views(out, manifest, originals, None)
        return None
    spec = paraphrase_spec(cfg)
    pfiles = out.files(paraphrase_dir(spec))
    config_hash, digest = views_hash(manifest["originals_hash"], spec.config_hash), files_digest(pfiles)
    if old and old["config_hash"] == config_hash and old["source_files"] == digest:
        return old["counts"]
    run_id = new_run_id()
    sink = ShardSink(out, "distill", run_id)
    if pfiles and originals:
        accepted = read_results(out, pfiles, ["id", "meta", "samples"]).map_batches(
            _accepted, batch_format="pyarrow", num_cpus=LIGHT_CPUS)
        kept = read_results(out, [out.path("distill", f) for f in originals],
                            [c for c in KEPT_COLUMNS if c != "input"])
        joined = accepted.join(kept, "inner", num_partitions=max(1, min(len(pfiles), 16)), on=("id",),
                               aggregator_ray_remote_args={"num_cpus": LIGHT_CPUS})
        rows = joined.map_batches(_view_rows, fn_kwargs={"spec": asdict(sample_spec(cfg))}, batch_format="pyarrow",
                                  num_cpus=LIGHT_CPUS)
        rows.write_datasink(sink, **write_options())
    new = [f.rsplit("/", 1)[-1] for f in run_files(out, "distill", run_id)]
    n_views = sum(json.loads(s).get("rows", 0) for s in sink.summaries)
    counts = {"views": n_views, "rewordings": _rewordings(out, pfiles) if pfiles else {}}
    _set_views(out, manifest, originals, {"config_hash": config_hash, "paraphrase_hash": spec.config_hash,
                                          "source_files": digest, "rows": n_views, "files": new, "counts": counts})
    return counts


def _set_views(out: OutputDir, manifest: dict[str, Any], originals: list[str], views: dict[str, Any] | None) -> None:
    """Rewrite distill/'s manifest to name ``originals`` and ``views``' files (then delete the
    files it no longer names)."""
    old = manifest.get("views")
    n_originals = manifest["rows"] - (old["rows"] if old else 0)
    fields = {k: v for k, v in manifest.items() if k not in ("stage", "written", "views")}
    fields.update(config_hash=views["config_hash"] if views else manifest["originals_hash"],
                  rows=n_originals + (views["rows"] if views else 0), files=originals + (views["files"] if views else []),
                  **({"views": views} if views else {}))
    write_manifest(out, "distill", **fields)
    for name in set(manifest["files"]) - set(fields["files"]):
        out.fs.delete_file(out.path("distill", name))
