"""Output layout of a run and atomic Parquet writes (local paths or pyarrow filesystem URIs).

Every file is written under a temporary name and renamed when complete, so a crash never
leaves a half-written file that a resumed run would trust.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from s2d_ray import storage

SAMPLE_STRUCT = pa.struct([("view", pa.string()), ("text", pa.string()), ("answer", pa.string()), ("tokens", pa.int64())])
RESULT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("job", pa.string()),  # which StageSpec produced the row (one engine can serve several)
        ("input", pa.string()),
        ("system1_input", pa.string()),
        ("answer", pa.string()),
        ("meta", pa.string()),
        ("source", pa.string()),
        ("status", pa.string()),  # kept | dropped | rejected (and "answered" in evaluation)
        ("reason", pa.string()),
        ("target", pa.string()),
        ("agreement", pa.float64()),
        ("method", pa.string()),
        ("model", pa.string()),
        ("n_samples", pa.int64()),
        ("config_hash", pa.string()),
        ("generated_tokens", pa.int64()),
        ("latency_s", pa.float64()),  # the row's wall time, its first engine request to its answer
        ("busy_s", pa.float64()),  # its share of the engine actor's busy time (sums to the stage's)
        ("samples", pa.list_(SAMPLE_STRUCT)),
    ]
)
DISTILL_COLUMNS = ["id", "input", "target", "method", "n_samples", "agreement", "model", "config_hash", "source"]
REJECTED_COLUMNS = ["id", "input", "source", "reason", "method", "config_hash"]


class OutputDir:
    """A run's output directory on any pyarrow filesystem.

    ``path()`` is a path inside ``fs`` (for pyarrow calls that take the filesystem too);
    ``uri()`` keeps the scheme, for anything handed on without ``fs`` (Ray Train's
    storage_path, a model to load on another node, what users read)."""

    def __init__(self, location: str) -> None:
        self.fs, self.root = storage.filesystem(location)
        self.location = location

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def uri(self, *parts: str) -> str:
        return storage.join(self.location, *parts)

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def files(self, subdir: str, suffix: str = ".parquet") -> list[str]:
        if not self.exists(subdir):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path(subdir), recursive=False))
        return sorted(i.path for i in infos if i.is_file and i.base_name.endswith(suffix) and not i.base_name.startswith("."))

    def write_table(self, table: pa.Table, *parts: str) -> str:
        """Write ``table`` as Parquet at ``parts`` atomically (temp name, then rename)."""
        final = self.path(*parts)
        parent = final.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}.parquet"
        with self.fs.open_output_stream(tmp) as f:
            pq.write_table(table, f)
        self.fs.move(tmp, final)
        return final

    def write_text(self, text: str, *parts: str) -> str:
        final = self.path(*parts)
        parent = final.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(text.encode("utf-8"))
        self.fs.move(tmp, final)
        return final

    def read_text(self, *parts: str) -> str:
        with self.fs.open_input_stream(self.path(*parts)) as f:
            return f.read().decode("utf-8")

    def read_json(self, *parts: str) -> Any:
        return json.loads(self.read_text(*parts))

    def read_tables(self, subdir: str, columns: list[str] | None = None) -> pa.Table:
        """All Parquet files in ``subdir`` concatenated (empty table with the schema if none)."""
        tables = [pq.read_table(p, filesystem=self.fs, columns=columns) for p in self.files(subdir)]
        if not tables:
            schema = RESULT_SCHEMA if columns is None else pa.schema([RESULT_SCHEMA.field(c) for c in columns])
            return schema.empty_table()
        return pa.concat_tables(tables, promote_options="default")

    def remove(self, subdir: str) -> None:
        if self.exists(subdir):
            self.fs.delete_dir(self.path(subdir))


class ShardWriter:
    """Writes result rows as numbered atomic Parquet shards (by default one per engine batch,
    so an interrupted run keeps every finished batch)."""

    def __init__(self, out: OutputDir, subdir: str, run_id: str, flush_rows: int = 1) -> None:
        self.out, self.subdir, self.run_id, self.flush_rows = out, subdir, run_id, flush_rows
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.shards = 0

    def add(self, table: pa.Table) -> None:
        self.buffer.append(table)
        self.buffered += table.num_rows
        if self.buffered >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if not self.buffered:
            return
        table = pa.concat_tables(self.buffer)
        self.out.write_table(table, self.subdir, f"part-{self.run_id}-{self.shards:05d}.parquet")
        self.shards += 1
        self.buffer, self.buffered = [], 0


def write_derived(out: OutputDir, tables: Iterable[pa.Table] | None = None) -> tuple[int, int]:
    """Rebuild distill/ and rejected/ from every file in samples/. Returns their row counts."""
    results = out.read_tables("samples") if tables is None else pa.concat_tables(list(tables))
    kept = results.filter(pc.equal(results["status"], "kept"))
    kept = kept.select(DISTILL_COLUMNS).set_column(
        DISTILL_COLUMNS.index("input"), "input", kept["system1_input"]
    )
    rejected = results.filter(pc.equal(results["status"], "rejected")).select(REJECTED_COLUMNS)
    out.write_table(kept, "distill", "part-00000.parquet")
    out.write_table(rejected, "rejected", "part-00000.parquet")
    return kept.num_rows, rejected.num_rows
