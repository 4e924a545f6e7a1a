"""Input rows: read JSONL/Parquet (local or any pyarrow filesystem URI) or a built-in task,
validate every row, and send bad rows on with a reason instead of failing the job.

Files are read in parallel by Ray Data read tasks (``InputFiles``): a JSONL file is split into
byte ranges (a line belongs to the range holding its first byte), a Parquet file into row
groups. A small planning pass (one Ray task per range, returning two counts) numbers the lines
of every range, so each read task names its rows ``path:line`` without reading what precedes
it, and ``data.n_train`` takes the same first N rows however the file is split.

A validated row has: ``id`` (str), ``input`` (str), ``answer`` (str|None), ``meta`` (JSON of
the other fields), ``source`` ("file:line", "file#row" or "task:NAME"), ``reject_reason``
(str|None), ``job`` (set by evaluation) and ``seq`` (the row's position in its source, which
orders duplicates: the first occurrence of an id is the one kept).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Any, Iterator

import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from s2d_ray.errors import S2DError
from s2d_ray.runtime import LIGHT_CPUS

INPUT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("input", pa.string()),
        ("answer", pa.string()),
        ("meta", pa.string()),
        ("source", pa.string()),
        ("reject_reason", pa.string()),
        ("job", pa.string()),
        ("seq", pa.int64()),
    ]
)
_JSONL = (".jsonl", ".json", ".ndjson")
_SCALARS = (str, int, float, bool)
TASK_BLOCK_ROWS = 64  # rows per block of a built-in task's rows
DEFAULT_TASK_ROWS = 64  # rows generated from a task: source when data.n_train / n_test is unset
CHUNK_BYTES = 32 << 20  # JSONL bytes per read task
BLOCK_ROWS = 8192  # rows per block a read task yields
_FILE_SHIFT = 40  # seq = file index << 40 | line (or row) in that file


def stable_id(text: str) -> str:
    """The id of a row that has none: derived from its input, stable across runs."""
    return "h" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def validate_record(obj: Any, source: str, seq: int = 0) -> dict[str, Any]:
    """Turn one parsed record into a validated row (rejected with a reason if invalid)."""
    row: dict[str, Any] = {"id": None, "input": None, "answer": None, "meta": "{}", "source": source,
                           "reject_reason": None, "job": None, "seq": seq}

    def reject(reason: str) -> dict[str, Any]:
        row["reject_reason"] = reason
        return row

    if not isinstance(obj, dict):
        return reject(f"row is a JSON {type(obj).__name__}, not an object")
    text = obj.get("input")
    rid = obj.get("id")
    if isinstance(rid, bool) or (rid is not None and not isinstance(rid, (str, int))):
        return reject(f"field 'id' must be a string, got {type(rid).__name__}")
    row["id"] = None if rid is None else str(rid)
    if "input" not in obj or text is None:
        return reject("missing field 'input'")
    if not isinstance(text, str):
        return reject(f"field 'input' must be a string, got {type(text).__name__}")
    if not text.strip():
        return reject("field 'input' is empty")
    row["input"] = text
    if row["id"] is None or not row["id"].strip():
        row["id"] = stable_id(text)
    answer = obj.get("answer")
    if answer is not None and not isinstance(answer, _SCALARS):
        return reject(f"field 'answer' must be a string, got {type(answer).__name__}")
    row["answer"] = None if answer is None else str(answer)
    extra = {k: v for k, v in obj.items() if k not in ("id", "input", "answer")}
    row["meta"] = json.dumps(extra, ensure_ascii=False, default=str)
    return row


def parse_jsonl(data: bytes, path: str, first_line: int = 1, file_index: int = 0) -> list[dict[str, Any]]:
    """One validated row per non-blank line of ``data``, whose first line is ``first_line``."""
    rows = []
    base = file_index << _FILE_SHIFT
    for lineno, raw in enumerate(data.split(b"\n"), start=first_line):
        if not raw.strip():
            continue
        source, seq = f"{path}:{lineno}", base | lineno
        try:
            line = raw.decode("utf-8").lstrip("\ufeff")
        except UnicodeDecodeError as e:
            rows.append(validate_record(None, source, seq) | {"reject_reason": f"invalid UTF-8 at byte {e.start}"})
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            rows.append(validate_record(None, source, seq) | {"reject_reason": f"invalid JSON: {e.msg} (column {e.colno})"})
            continue
        rows.append(validate_record(obj, source, seq))
    return rows


def validate_table(batch: pa.Table, path: str = "parquet", first_row: int = 0, file_index: int = 0) -> pa.Table:
    """Validated rows of a Parquet batch whose first row is row ``first_row`` of ``path``."""
    records = batch.drop_columns([c for c in ("path",) if c in batch.column_names]).to_pylist()
    base = file_index << _FILE_SHIFT
    out = [validate_record(r, f"{path}#{first_row + i}", base | (first_row + i)) for i, r in enumerate(records)]
    return pa.Table.from_pylist(out, schema=INPUT_SCHEMA)


# --------------------------------------------------------------------------- splitting files


def _owned(f: Any, size: int, start: int, end: int, step: int = 1 << 20) -> bytes:
    """The bytes (newlines included) of the lines that start in [start, end) of an open
    random-access file: a line belongs to the range that holds its first byte."""
    pos = start
    if start > 0 and f.read_at(1, start - 1) != b"\n":  # skip the line begun in the range before
        while True:
            if pos >= end:
                return b""
            piece = f.read_at(min(step, size - pos), pos)
            cut = piece.find(b"\n")
            if cut >= 0:
                pos += cut + 1
                break
            pos += len(piece)
        if pos >= end:
            return b""
    data = f.read_at(end - pos, pos)
    tail = end
    while tail < size and not data.endswith(b"\n"):  # the last line runs past the range
        piece = f.read_at(min(step, size - tail), tail)
        cut = piece.find(b"\n")
        if cut >= 0:
            data += piece[: cut + 1]
            break
        data += piece
        tail += len(piece)
    return data


def _lines(data: bytes) -> tuple[int, int]:
    """(lines, non-blank lines) in owned bytes."""
    parts = data.split(b"\n")
    if data.endswith(b"\n") or not data:
        parts = parts[:-1]
    return len(parts), sum(1 for p in parts if p.strip())


@dataclass(frozen=True)
class Piece:
    """What one read task reads: a byte range of a JSONL file or row groups of a Parquet file,
    with the number of its first line (row) and how many rows to take (None: all)."""

    path: str
    file_index: int
    kind: str
    start: int  # JSONL: first byte; Parquet: first row group
    end: int  # JSONL: end byte; Parquet: row group after the last
    first: int = 1  # JSONL: number of the first line; Parquet: index of the first row
    rows: int = 0  # rows it holds (before any limit)
    take: int | None = None  # read only the first ``take`` rows


def _count_range(fs: Any, path: str, size: int, start: int, end: int) -> tuple[int, int]:
    with fs.open_input_file(path) as f:
        return _lines(_owned(f, size, start, end))


def _plan(fs: Any, kind: str, files: list[tuple[str, int]], limit: int | None, chunk_bytes: int) -> list[Piece]:
    """The pieces of ``files`` (path, size), numbered, cut to the first ``limit`` rows."""
    import pyarrow.parquet as pq
    import ray

    pieces: list[Piece] = []
    if kind == "jsonl":
        ranges = [(i, path, size, s, min(s + chunk_bytes, size)) for i, (path, size) in enumerate(files)
                  for s in range(0, max(size, 1), chunk_bytes)]
        count = ray.remote(num_cpus=0.5)(_count_range)
        counts = ray.get([count.remote(fs, path, size, s, e) for _, path, size, s, e in ranges])
        line, prev = 1, None
        for (i, path, _, s, e), (n_lines, n_rows) in zip(ranges, counts):
            line = 1 if i != prev else line
            pieces.append(Piece(path, i, kind, s, e, line, n_rows))
            line, prev = line + n_lines, i
    else:
        for i, (path, _) in enumerate(files):
            with fs.open_input_file(path) as f:
                meta = pq.ParquetFile(f).metadata
            row = 0
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                pieces.append(Piece(path, i, kind, g, g + 1, row, n))
                row += n
    if limit is None:
        return [p for p in pieces if p.rows]
    cut, seen = [], 0
    for p in pieces:
        if seen >= limit:
            break
        if p.rows:
            cut.append(replace(p, take=min(p.rows, limit - seen)))
            seen += p.rows
    return cut


def _read_piece(fs: Any, piece: Piece, uri_of: dict[str, str]) -> Iterator[pa.Table]:
    import pyarrow.parquet as pq

    name = uri_of[piece.path]
    with fs.open_input_file(piece.path) as f:
        if piece.kind == "jsonl":
            size = f.size()
            rows = parse_jsonl(_owned(f, size, piece.start, piece.end), name, piece.first, piece.file_index)
            rows = rows[: piece.take] if piece.take is not None else rows
            for k in range(0, len(rows), BLOCK_ROWS):
                yield pa.Table.from_pylist(rows[k: k + BLOCK_ROWS], schema=INPUT_SCHEMA)
            return
        pf = pq.ParquetFile(f)
        first, left = piece.first, piece.take
        for batch in pf.iter_batches(batch_size=BLOCK_ROWS, row_groups=list(range(piece.start, piece.end))):
            table = pa.Table.from_batches([batch])
            if left is not None:
                table, left = table.slice(0, left), left - min(left, table.num_rows)
            if table.num_rows:
                yield validate_table(table, name, first, piece.file_index)
            first += table.num_rows
            if left == 0:
                return


class InputFiles(Datasource):
    """A Ray Data datasource over planned ``Piece``s (``read_inputs`` plans them): one read
    task per piece, each validating its own rows."""

    def __init__(self, fs: Any, pieces: list[Piece], uri_of: dict[str, str]) -> None:
        self.fs, self.pieces, self.uri_of = fs, pieces, uri_of

    def get_name(self) -> str:
        return "InputFiles"

    def estimate_inmemory_data_size(self) -> int | None:
        return sum(p.end - p.start for p in self.pieces if p.kind == "jsonl") or None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None) -> list[ReadTask]:
        fs, uri_of = self.fs, self.uri_of
        tasks = []
        for piece in self.pieces:
            meta = BlockMetadata(num_rows=piece.rows if piece.take is None else piece.take,
                                 size_bytes=piece.end - piece.start if piece.kind == "jsonl" else None,
                                 input_files=[uri_of[piece.path]], exec_stats=None)
            tasks.append(ReadTask(lambda p=piece: _read_piece(fs, p, uri_of), meta, schema=INPUT_SCHEMA,
                                  per_task_row_limit=per_task_row_limit))
        return tasks


def _kind(source: str) -> tuple[str, Any, list[tuple[str, int]], dict[str, str]]:
    """(kind, filesystem, [(path, size)], path -> what rows name as their file) of a file or
    directory source."""
    import pyarrow.fs as pafs

    from s2d_ray import storage

    suffix = PurePosixPath(source.rstrip("/")).suffix.lower()
    try:
        fs, path = storage.filesystem(source)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise S2DError(f"data: {source}: no such file or directory")
        infos = [info] if info.type == pafs.FileType.File else [
            i for i in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if i.is_file and not i.base_name.startswith((".", "_"))]
    except S2DError:
        raise
    except Exception as e:  # noqa: BLE001 - surface filesystem errors as one line
        raise S2DError(f"data: {source}: {e}") from None
    for kind, exts in (("parquet", (".parquet",)), ("jsonl", _JSONL)):
        chosen = sorted((i.path, i.size) for i in infos if i.path.lower().endswith(exts))
        if chosen and (info.type == pafs.FileType.Directory or suffix in exts):
            prefix = source.split("://", 1)[0] + "://" if "://" in source else ""
            return kind, fs, chosen, {p: (prefix + p if prefix and not p.startswith(prefix) else p) for p, _ in chosen}
    raise S2DError(f"data: {source}: expected .jsonl/.json or .parquet (file or directory of them)")


def task_rows(source: str, n: int | None, seed: int, split: str) -> list[dict[str, Any]]:
    """Rows of a built-in task source (``n`` of them, DEFAULT_TASK_ROWS when None), with the
    task's metadata kept in ``meta``."""
    from s2d_ray.tasks import get_task, parse_task_source

    name, params = parse_task_source(source)
    rows = get_task(name).generate(DEFAULT_TASK_ROWS if n is None else n, seed, split, **params)
    return [validate_record(r, f"task:{name}", i) for i, r in enumerate(rows)]


def read_inputs(source: str, n: int | None = None, seed: int = 0, split: str = "train", chunk_bytes: int = CHUNK_BYTES):
    """A Ray Dataset of validated rows from a task, a file, a directory or a URI: all of a
    file's rows unless ``n`` is set (then its first ``n``)."""
    import ray.data

    if source.startswith("task:"):
        table = pa.Table.from_pylist(task_rows(source, n, seed, split), schema=INPUT_SCHEMA)
        # Several blocks, so the pool streams and progress moves block by block.
        return ray.data.from_arrow([table.slice(i, TASK_BLOCK_ROWS) for i in range(0, max(table.num_rows, 1), TASK_BLOCK_ROWS)])
    kind, fs, files, uri_of = _kind(source)
    pieces = _plan(fs, kind, files, n, chunk_bytes)
    if not pieces:
        return ray.data.from_arrow(INPUT_SCHEMA.empty_table())
    return ray.data.read_datasource(InputFiles(fs, pieces, uri_of), override_num_blocks=len(pieces), num_cpus=LIGHT_CPUS)
