"""Ray Data placement: stream validated rows through an autoscaling pool of engine actors
(shared by sampling and evaluation).

Results are written by the driver as atomic Parquet shards while they stream in, so a
stopped run keeps every finished batch and a re-run skips those ids.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from s2d_ray.config import ActorPoolConfig
from s2d_ray.errors import S2DError
from s2d_ray.outputs import OutputDir, ShardWriter
from s2d_ray.runtime import thread_options
from s2d_ray.stage.spec import StageSpec


@dataclass
class StageStats:
    """What one pass of a program over inputs did."""

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
    agreement: list[float] = field(default_factory=list)
    reasons: Counter = field(default_factory=Counter)

    def update(self, batch: pa.Table) -> None:
        rows = batch.to_pylist()
        self.rows += len(rows)
        for r in rows:
            self.busy_s += r["busy_s"] or 0.0
            setattr(self, r["status"], getattr(self, r["status"]) + 1)
            self.samples += len(r["samples"] or [])
            self.generated_tokens += r["generated_tokens"] or 0
            if r["agreement"] is not None:
                self.agreement.append(r["agreement"])
            if r["status"] in ("rejected", "dropped") and r["reason"]:
                self.reasons[reason_kind(r["reason"])] += 1

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.busy_s if self.busy_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = dict(self.reasons.most_common(10))
        d["tokens_per_s"] = round(self.tokens_per_s, 1)
        hist = Counter(min(int(a * 10), 9) / 10 for a in self.agreement)
        d["agreement"] = {f"{k:.1f}-{k + 0.1:.1f}": hist[k] for k in sorted(hist)}
        return d


def reason_kind(reason: str) -> str:
    """What a drop/reject reason says, without its particulars (an id, a source, details)."""
    return re.split(r"[:'(]", reason, maxsplit=1)[0].strip()[:60]


def _screen(batch: pa.Table, done: set[str], first_source: dict[str, str]) -> pa.Table:
    """Drop rows already done (resume); reject later occurrences of a duplicate id."""
    ids = batch["id"].to_pylist()
    keep = [i not in done for i in ids]
    batch = batch.filter(pa.array(keep, pa.bool_()))
    reasons = batch["reject_reason"].to_pylist()
    for k, (rid, src) in enumerate(zip(batch["id"].to_pylist(), batch["source"].to_pylist())):
        first = first_source.get(rid)
        if reasons[k] is None and first is not None and first != src:
            reasons[k] = f"duplicate id {rid!r} (first at {first})"
    return batch.set_column(batch.schema.get_field_index("reject_reason"), "reject_reason", pa.array(reasons, pa.string()))


def _source_key(source: str) -> tuple[str, int]:
    path, _, line = source.rpartition(":")
    return (path, int(line)) if line.isdigit() else (source, 0)


def _scan_ids(ds, done: set[str]) -> tuple[dict[str, str], int]:
    """(id -> source of its first occurrence for ids seen more than once, rows still to do)."""
    first: dict[str, str] = {}
    dups: set[str] = set()
    todo = 0
    for batch in ds.select_columns(["id", "source"]).iter_batches(batch_size=8192, batch_format="pyarrow"):
        for rid, src in zip(batch["id"].to_pylist(), batch["source"].to_pylist()):
            todo += rid not in done
            if rid is None:
                continue
            if rid in first:
                dups.add(rid)
                if _source_key(src) < _source_key(first[rid]):
                    first[rid] = src
            else:
                first[rid] = src
    return {rid: first[rid] for rid in dups}, todo


def done_ids(out: OutputDir, subdir: str, config_hash: str) -> set[str]:
    """Ids already in ``subdir``; refuses to mix results of a different config."""
    table = out.read_tables(subdir, columns=["id", "config_hash"])
    hashes = set(pc.unique(table["config_hash"]).to_pylist()) - {None}
    if hashes - {config_hash}:
        raise S2DError(
            f"output_dir: {out.uri(subdir)} holds results of another config ({', '.join(sorted(hashes))}, "
            f"now {config_hash}); use a new output_dir or delete that directory"
        )
    return set(table["id"].to_pylist())


def run_stage(ds, specs: dict[str, StageSpec], actors: ActorPoolConfig, out: OutputDir, subdir: str) -> StageStats:
    """Run ``specs`` (rows pick theirs by ``job``) over ``ds``; append results to ``out/subdir``.

    Resumable: ids already in ``out/subdir`` are skipped. All specs share one config hash."""
    import ray.data

    from s2d_ray.stage.actor import ProgramStage

    stats = StageStats()
    config_hash = next(iter(specs.values())).config_hash
    done = done_ids(out, subdir, config_hash)
    stats.skipped_done = len(done)
    first_source, todo = _scan_ids(ds, done)
    if todo == 0:  # everything is done: do not start an engine
        return stats
    ds = ds.map_batches(_screen, fn_kwargs={"done": done, "first_source": first_source}, batch_format="pyarrow")
    # One block per engine batch: each batch's results reach the driver, and its shard, as soon
    # as it is done (a larger block would hold them until the whole block is through).
    ds = ds.repartition(target_num_rows_per_block=actors.batch_size)
    results = ds.map_batches(
        ProgramStage,
        fn_constructor_kwargs={"specs": {name: asdict(s) for name, s in specs.items()}},
        batch_size=actors.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=actors.min_actors, max_size=actors.max_actors,
                                           max_concurrent_calls_per_actor=actors.max_concurrent_batches),
        num_cpus=actors.num_cpus,
        num_gpus=actors.num_gpus,
        **thread_options(actors.cpu_threads),
    )
    writer = ShardWriter(out, subdir, f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}")
    start = time.perf_counter()
    for batch in results.iter_batches(batch_size=None, batch_format="pyarrow"):
        if batch.num_rows:
            writer.add(batch)
            stats.update(batch)
    writer.flush()
    stats.wall_s = time.perf_counter() - start
    return stats
