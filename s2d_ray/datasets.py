"""Ray Data readers and writers of a run's files: stage results written by the workers as
atomic Parquet files, written files read back in parallel, and the derived sets (distill/,
rejected/) built from samples/ by a Ray Data job. The driver gets figures, never rows."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasink, Datasource, ReadTask

from s2d_ray.outputs import (DISTILL_COLUMNS, REJECTED_COLUMNS, OutputDir, new_run_id, read_manifest, run_files,
                             write_manifest)
from s2d_ray.runtime import LIGHT_CPUS, write_options

if TYPE_CHECKING:
    from s2d_ray.tasks.spec import TaskSpec


class ShardSink(Datasink):
    """Ray Data datasink: each write task writes its rows as one atomic Parquet file
    (``part-RUN-TASK.parquet``, temp name then rename) and returns the JSON of ``summarize``
    over them, so the driver learns a stage's figures without its rows."""

    def __init__(self, out: OutputDir, subdir: str, run_id: str, rows_per_file: int | None = None,
                 summarize: Callable[[pa.Table], dict[str, Any]] | None = None) -> None:
        self.out, self.subdir, self.run_id, self.rows_per_file = out, subdir, run_id, rows_per_file
        self.summarize = summarize or (lambda table: {"rows": table.num_rows})
        self.summaries: list[str] = []

    def get_name(self) -> str:
        return f"Write{self.subdir.replace('/', '_').title()}"

    @property
    def min_rows_per_write(self) -> int | None:
        return self.rows_per_file

    def write(self, blocks: Iterable[Any], ctx: Any) -> str:
        tables = [b for b in blocks if b.num_rows]
        if not tables:
            return json.dumps({})
        table = pa.concat_tables(tables, promote_options="default")
        self.out.write_table(table, self.subdir, f"part-{self.run_id}-{ctx.task_idx:06d}.parquet")
        return json.dumps(self.summarize(table))

    def on_write_complete(self, write_result: Any) -> None:
        self.summaries = list(write_result.write_returns)


FILE_GROUP_BYTES = 64 << 20


class ResultFiles(Datasource):
    """Ray Data datasource over written Parquet files (``columns`` of them), files grouped into
    read tasks by size; on this machine it read 157 small files in ~2 s where ``read_parquet``
    took ~9 s."""

    def __init__(self, fs: Any, files: list[str], columns: list[str] | None = None) -> None:
        self.fs, self.files, self.columns = fs, files, columns
        size = sum(i.size or 0 for i in fs.get_file_info(files)) if files else 0
        # a task per ~FILE_GROUP_BYTES (each task costs Ray a worker's time), however many files
        self.tasks = max(1, min(len(files), -(-size // FILE_GROUP_BYTES)))

    def get_name(self) -> str:
        return "ResultFiles"

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None) -> list[ReadTask]:
        fs, columns, n = self.fs, self.columns, self.tasks
        groups = [self.files[i::n] for i in range(n)]

        def read(paths: list[str]) -> Iterator[pa.Table]:
            for path in paths:
                yield pq.read_table(path, filesystem=fs, columns=columns)

        return [ReadTask(lambda g=g: read(g), BlockMetadata(num_rows=None, size_bytes=None, input_files=g, exec_stats=None),
                         per_task_row_limit=per_task_row_limit) for g in groups if g]


def read_results(out: OutputDir, files: list[str], columns: list[str] | None = None):
    """``files`` (written by a stage) as a Ray Dataset, one block per read task (Ray would
    otherwise split them into 200, and a derived set into 200 tiny files)."""
    import ray.data

    source = ResultFiles(out.fs, files, columns)
    return ray.data.read_datasource(source, num_cpus=LIGHT_CPUS, override_num_blocks=source.tasks)


def files_digest(files: list[str]) -> str:
    """A fingerprint of a directory's file names: a derived set records the one it was built from."""
    return hashlib.sha256("\n".join(f.rsplit("/", 1)[-1] for f in sorted(files)).encode()).hexdigest()[:16]


_DERIVED_COLUMNS = sorted({"status", "system1_input", "input", "answer", "meta", *DISTILL_COLUMNS, *REJECTED_COLUMNS})


class DerivedSink(Datasink):
    """Ray Data datasink over samples/ rows: each write task writes its kept rows to distill/
    and its rejected rows to rejected/ (one atomic file each) and returns its rows per status
    and, with a task, how many kept targets match ground truth (for the report only)."""

    def __init__(self, out: OutputDir, run_id: str, task: "TaskSpec | None") -> None:
        self.out, self.run_id, self.task = out, run_id, task
        self.summaries: list[dict[str, int]] = []

    def get_name(self) -> str:
        return "WriteDistillAndRejected"

    def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, int]:
        blocks = [b for b in blocks if b.num_rows]
        counts: dict[str, int] = {}
        if not blocks:
            return counts
        batch = pa.concat_tables(blocks, promote_options="default")
        for value in pc.value_counts(batch["status"]).to_pylist():
            counts[value["values"]] = value["counts"]
        kept = batch.filter(pc.equal(batch["status"], "kept"))
        rejected = batch.filter(pc.equal(batch["status"], "rejected"))
        name = f"part-{self.run_id}-{ctx.task_idx:06d}.parquet"
        if kept.num_rows:
            distill = kept.select(["id", "system1_input", *DISTILL_COLUMNS[2:]]).rename_columns(DISTILL_COLUMNS)
            self.out.write_table(distill, "distill", name)
        if rejected.num_rows:
            self.out.write_table(rejected.select(REJECTED_COLUMNS), "rejected", name)
        if self.task is not None:
            labelled = kept.filter(pc.is_valid(kept["answer"])).select(["input", "target", "answer", "meta"]).to_pylist()
            counts["kept_with_answer"] = len(labelled)
            counts["kept_correct"] = sum(bool(self.task.is_correct(r["target"], {**json.loads(r["meta"] or "{}"),
                                                                               "input": r["input"], "answer": r["answer"]}))
                                         for r in labelled)
        return counts

    def on_write_complete(self, write_result: Any) -> None:
        self.summaries = list(write_result.write_returns)


def write_derived(out: OutputDir, parent: str, task: "TaskSpec | None" = None) -> dict[str, int]:
    """Rebuild distill/ and rejected/ from every file in samples/ (one Ray Data job, written by
    its workers) unless their manifests already derive from exactly those files. Returns the
    rows of samples/ per status, ``kept_correct``/``kept_with_answer`` with a task. New files
    are complete, and named in the manifests (what readers read), before old ones are deleted."""
    files = out.files("samples")
    digest = files_digest(files)
    manifests = [read_manifest(out, d) for d in ("distill", "rejected")]
    if all(m and m.get("source_files") == digest and m.get("config_hash") == parent and "counts" in m for m in manifests):
        return manifests[0]["counts"]
    before = {d: out.files(d) for d in ("distill", "rejected")}
    run_id = new_run_id()
    sink = DerivedSink(out, run_id, task)
    if files:
        read_results(out, files, _DERIVED_COLUMNS).write_datasink(sink, **write_options())
    counts: dict[str, int] = {}
    for summary in sink.summaries:
        for k, v in summary.items():
            counts[k] = counts.get(k, 0) + v
    for subdir, status in (("distill", "kept"), ("rejected", "rejected")):
        new = run_files(out, subdir, run_id)
        write_manifest(out, subdir, config_hash=parent, parent=parent, rows=counts.get(status, 0), counts=counts,
                       source_files=digest, files=[f.rsplit("/", 1)[-1] for f in new])
        for old in set(before[subdir]) - set(new):
            out.fs.delete_file(old)
    return counts


