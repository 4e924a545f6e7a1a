"""Output layout of a run and atomic Parquet writes (local paths or pyarrow filesystem URIs).

Every file is written under a temporary name and renamed when complete, so a crash never
leaves a half-written file that a resumed run would trust.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pyarrow as pa
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
        ("status", pa.string()),  # kept | dropped | rejected (and "answered" in evaluation); with
        # reason, target and agreement: the filter's decision as sampled (datasets.Refilter decides again)
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
# A kept input's row in distill/; a paraphrased view's row adds view_of, the id of the kept input it
# rewords (null for the kept inputs themselves).
KEPT_COLUMNS = ["id", "input", "target", "method", "n_samples", "agreement", "model", "config_hash", "source"]
DISTILL_COLUMNS = [*KEPT_COLUMNS, "view_of"]
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
        return sorted(i.path for i in infos if i.is_file and i.base_name.endswith(suffix) and not i.base_name.startswith((".", "_")))

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
        return self.write_bytes(text.encode("utf-8"), *parts)

    def write_bytes(self, data: bytes, *parts: str) -> str:
        """Write ``data`` at ``parts`` atomically (temp name, then rename)."""
        final = self.path(*parts)
        parent = final.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, final)
        return final

    def copy_from(self, src: "OutputDir", subdir: str) -> None:
        """Copy ``src/subdir``'s files (not hidden ones) into ``subdir`` here, each atomically and
        its manifest last, so a copy cut short reads as an unfinished stage, never a torn file."""
        infos = src.fs.get_file_info(pafs.FileSelector(src.path(subdir), recursive=False))
        names = sorted((i.base_name for i in infos if i.is_file and not i.base_name.startswith(".")),
                       key=lambda n: n == MANIFEST)
        for name in names:
            with src.fs.open_input_stream(src.path(subdir, name)) as f:
                self.write_bytes(f.read(), subdir, name)

    def read_text(self, *parts: str) -> str:
        with self.fs.open_input_stream(self.path(*parts)) as f:
            return f.read().decode("utf-8")

    def read_json(self, *parts: str) -> Any:
        return json.loads(self.read_text(*parts))

    def remove(self, *parts: str) -> None:
        """Delete the directory ``parts`` and all it holds (nothing if absent)."""
        if self.exists(*parts):
            self.fs.delete_dir(self.path(*parts))

    def is_empty(self, *parts: str) -> bool:
        """Whether the directory ``parts`` holds nothing (or is absent)."""
        return not self.fs.get_file_info(pafs.FileSelector(self.path(*parts), allow_not_found=True))


MANIFEST = "_manifest.json"  # "_": skipped by pyarrow, Spark and Ray when they read the directory


def read_manifest(out: OutputDir, subdir: str) -> dict[str, Any] | None:
    """The manifest a stage wrote beside its output (None if it has none)."""
    return out.read_json(subdir, MANIFEST) if out.exists(subdir, MANIFEST) else None


def write_manifest(out: OutputDir, subdir: str, **fields: Any) -> dict[str, Any]:
    """A stage's lineage beside its output: its config hash, its parent's, counts, its files."""
    manifest = {"stage": subdir, **fields, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out.write_text(json.dumps(manifest, indent=2), subdir, MANIFEST)
    return manifest


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"


def run_files(out: OutputDir, subdir: str, run_id: str) -> list[str]:
    return [f for f in out.files(subdir) if f.rsplit("/", 1)[-1].startswith(f"part-{run_id}-")]


def manifest_files(out: OutputDir, subdir: str) -> list[str]:
    """The files of a derived directory's current version (its manifest names them)."""
    manifest = read_manifest(out, subdir)
    if manifest is None:
        return []
    return [out.path(subdir, name) for name in manifest["files"]]
