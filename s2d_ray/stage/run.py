"""Ray Data placement: one pipeline per stage (shared by sampling and evaluation),

    read (parallel) -> screen (resume, duplicates) -> engine actors -> atomic Parquet files,

written by the workers. The driver plans and holds counts: the rows never pass through it
(``stage.screen`` finds what is done and what is duplicated with worker-side arrays and a
Ray Data groupby; each write task returns the figures of the rows it wrote). A stopped run
keeps every written file, and a re-run skips their ids.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from s2d_ray.config import ActorPoolConfig
from s2d_ray.errors import S2DError
from s2d_ray.datasets import ShardSink, read_results
from s2d_ray.outputs import OutputDir, new_run_id, read_manifest, write_manifest
from s2d_ray.progress import StageProgress
from s2d_ray.runtime import LIGHT_CPUS, engine_actor_options, write_options
from s2d_ray.stage.screen import done_keys, plan_screen, screen_rows
from s2d_ray.stage.spec import StageSpec

_STATUSES = ("kept", "dropped", "rejected", "answered")


@dataclass
class StageStats:
    """What one pass of a program over inputs did: sums that merge (one per write task)."""

    rows: int = 0
    skipped_done: int = 0
    rejected: int = 0
    kept: int = 0
    dropped: int = 0
    answered: int = 0
    samples: int = 0
    generated_tokens: int = 0
    busy_s: float = 0.0
    wall_s: float = 0.0
    agreement: list[int] = field(default_factory=lambda: [0] * 10)  # histogram, buckets of 0.1
    reasons: Counter = field(default_factory=Counter)

    @classmethod
    def of(cls, batch: pa.Table) -> "StageStats":
        """The figures of a table of result rows (computed where the rows are: a write task)."""
        stats = cls(rows=batch.num_rows)
        for value in pc.value_counts(batch["status"]).to_pylist():
            if value["values"] in _STATUSES:
                setattr(stats, value["values"], value["counts"])
        stats.samples = int(pc.sum(pc.list_value_length(batch["samples"])).as_py() or 0)
        stats.generated_tokens = int(pc.sum(batch["generated_tokens"]).as_py() or 0)
        stats.busy_s = float(pc.sum(batch["busy_s"]).as_py() or 0.0)
        for a in batch["agreement"].drop_null().to_pylist():
            stats.agreement[min(int(a * 10), 9)] += 1
        bad = batch.filter(pc.is_in(batch["status"], pa.array(["rejected", "dropped"])))
        stats.reasons.update(reason_kind(r) for r in bad["reason"].drop_null().to_pylist() if r)
        return stats

    def merge(self, other: "StageStats") -> "StageStats":
        for name in ("rows", "rejected", "kept", "dropped", "answered", "samples", "generated_tokens", "busy_s"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.agreement = [a + b for a, b in zip(self.agreement, other.agreement)]
        self.reasons.update(other.reasons)
        return self

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "reasons": dict(self.reasons)})

    @classmethod
    def from_json(cls, text: str) -> "StageStats":
        d = json.loads(text)
        return cls(**{**d, "reasons": Counter(d.get("reasons", {}))}) if d else cls()

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.busy_s if self.busy_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = dict(self.reasons.most_common(10))
        d["tokens_per_s"] = round(self.tokens_per_s, 1)
        d["agreement"] = {f"{k / 10:.1f}-{(k + 1) / 10:.1f}": n for k, n in enumerate(self.agreement) if n}
        return d


def reason_kind(reason: str) -> str:
    """What a drop/reject reason says, without its particulars (an id, a source, details)."""
    return re.split(r"[:'(]", reason, maxsplit=1)[0].strip()[:60]


def _written_stats(batch: pa.Table) -> dict[str, Any]:
    return json.loads(StageStats.of(batch).to_json())


def light_repartition(ds, rows: int):
    """``ds.repartition(target_num_rows_per_block=rows)`` at LIGHT_CPUS. Ray 2.60's public call
    always asks a whole CPU for it (its logical op takes no resources from the API), and so it
    cannot fuse with the light screening task before it; on a 2-core node it and the engine
    actor then held both cores while the writes waited for one, and the pipeline stalled. The
    same logical op with its ``ray_remote_args`` set (tests/test_stage_run.py checks it fuses)."""
    from ray.data._internal.logical.interfaces import LogicalPlan
    from ray.data._internal.logical.operators import StreamingRepartition
    from ray.data.dataset import Dataset

    op = StreamingRepartition(target_num_rows_per_block=rows, input_dependencies=[ds._logical_plan.dag],
                              ray_remote_args={"num_cpus": LIGHT_CPUS})
    return Dataset._from_parent(ds, LogicalPlan(op, ds.context))


def check_config(out: OutputDir, subdir: str, config_hash: str) -> None:
    """Refuse to mix results of another config into ``out/subdir`` (its manifest says which
    config wrote it; a directory without one is asked with an aggregation over its files)."""
    manifest = read_manifest(out, subdir)
    if manifest is not None:
        hashes = {manifest.get("config_hash")} - {None}
    elif files := out.files(subdir):
        hashes = set(read_results(out, files, ["config_hash"]).unique("config_hash")) - {None}
    else:
        hashes = set()
    if hashes - {config_hash}:
        raise S2DError(
            f"output_dir: {out.uri(subdir)} holds results of another config ({', '.join(sorted(hashes))}, "
            f"now {config_hash}); use a new output_dir or delete that directory"
        )


def run_stage(ds, specs: dict[str, StageSpec], actors: ActorPoolConfig, out: OutputDir, subdir: str,
              parent: str | None = None, title: str | None = None) -> StageStats:
    """Run ``specs`` (rows pick theirs by ``job``) over ``ds``; add results to ``out/subdir``.

    ``ds`` (lazy) is read twice: by the planning pass, then by the pipeline, which cuts it into
    blocks of ``actors.batch_size`` rows, each one task on an engine actor whose rows reach the
    writer as soon as that batch is done, however long the actor's other batches take. Resumable: ids already in ``out/subdir`` are skipped. All specs share one config hash;
    ``parent`` is the hash of what the stage reads (recorded in its manifest); ``title`` names
    the stage on the progress display (default: ``subdir``)."""
    import ray.data

    from s2d_ray.stage.actor import ProgramStage

    config_hash = next(iter(specs.values())).config_hash
    check_config(out, subdir, config_hash)
    done, n_done = done_keys(out, subdir)
    todo, screen = plan_screen(ds, done)
    if todo == 0:  # everything is done: do not start an engine
        return StageStats(skipped_done=n_done)
    write_manifest(out, subdir, config_hash=config_hash, parent=parent, complete=False)
    ds = ds.map_batches(screen_rows, fn_kwargs={"screen": screen}, batch_format="pyarrow", num_cpus=LIGHT_CPUS)
    ds = light_repartition(ds, actors.batch_size)
    sampling = any(s.filter is not None for s in specs.values())  # evaluation keeps no rows
    sink = ShardSink(out, subdir, new_run_id(), actors.rows_per_file, summarize=_written_stats)
    start = time.perf_counter()
    with StageProgress(title or subdir, todo, counts=("kept",) if sampling else ()) as board:
        results = ds.map_batches(
            ProgramStage,
            fn_constructor_kwargs={"specs": {name: asdict(s) for name, s in specs.items()}, "progress": board},
            batch_size=actors.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(min_size=actors.min_actors, max_size=actors.max_actors,
                                               max_concurrent_calls_per_actor=actors.max_concurrent_batches),
            num_cpus=actors.num_cpus,
            num_gpus=actors.num_gpus,
            **engine_actor_options(actors.cpu_threads),
        )
        results.write_datasink(sink, **write_options())
    stats = StageStats(skipped_done=n_done)
    for summary in sink.summaries:
        stats.merge(StageStats.from_json(summary))
    stats.wall_s = time.perf_counter() - start
    write_manifest(out, subdir, config_hash=config_hash, parent=parent, complete=True)
    return stats
