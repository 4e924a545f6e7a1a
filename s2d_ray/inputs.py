"""Input rows: read JSONL/Parquet (local or any pyarrow filesystem URI) or a built-in task,
validate every row, and send bad rows on with a reason instead of failing the job.

A validated row has: ``id`` (str), ``input`` (str), ``answer`` (str|None), ``meta`` (JSON of
the other fields), ``source`` ("file:line" or "task:NAME"), ``reject_reason`` (str|None).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa

from s2d_ray.errors import S2DError

INPUT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("input", pa.string()),
        ("answer", pa.string()),
        ("meta", pa.string()),
        ("source", pa.string()),
        ("reject_reason", pa.string()),
        ("job", pa.string()),
    ]
)
_JSONL = (".jsonl", ".json", ".ndjson")
_SCALARS = (str, int, float, bool)
TASK_BLOCK_ROWS = 64
DEFAULT_TASK_ROWS = 64  # rows generated from a task: source when data.n_train / n_test is unset


def stable_id(text: str) -> str:
    """The id of a row that has none: derived from its input, stable across runs."""
    return "h" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def validate_record(obj: Any, source: str) -> dict[str, Any]:
    """Turn one parsed record into a validated row (rejected with a reason if invalid)."""
    row: dict[str, Any] = {"id": None, "input": None, "answer": None, "meta": "{}", "source": source, "reject_reason": None, "job": None}

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


def parse_jsonl_file(item: dict[str, Any]) -> list[dict[str, Any]]:
    """Ray Data flat_map over read_binary_files rows: one validated row per non-blank line."""
    path = item["path"]
    rows = []
    for lineno, raw in enumerate(item["bytes"].split(b"\n"), start=1):
        if not raw.strip():
            continue
        source = f"{path}:{lineno}"
        try:
            line = raw.decode("utf-8").lstrip("\ufeff")
        except UnicodeDecodeError as e:
            rows.append(validate_record(None, source) | {"reject_reason": f"invalid UTF-8 at byte {e.start}"})
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            rows.append(validate_record(None, source) | {"reject_reason": f"invalid JSON: {e.msg} (column {e.colno})"})
            continue
        rows.append(validate_record(obj, source))
    return rows


def validate_table(batch: pa.Table) -> pa.Table:
    """Ray Data map_batches over Parquet rows."""
    path_col = batch.column("path").to_pylist() if "path" in batch.column_names else None
    records = batch.drop_columns([c for c in ("path",) if c in batch.column_names]).to_pylist()
    out = [validate_record(r, f"{path_col[i] if path_col else 'parquet'}#{i}") for i, r in enumerate(records)]
    return pa.Table.from_pylist(out, schema=INPUT_SCHEMA)


def _kind(source: str) -> str:
    import pyarrow.fs as pafs

    suffix = PurePosixPath(source.rstrip("/")).suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix in _JSONL:
        return "jsonl"
    try:
        fs, path = pafs.FileSystem.from_uri(source) if "://" in source else (pafs.LocalFileSystem(), source)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise S2DError(f"data: {source}: no such file or directory")
        if info.type == pafs.FileType.Directory:
            names = [i.path for i in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if i.is_file]
            for kind, exts in (("parquet", (".parquet",)), ("jsonl", _JSONL)):
                if any(n.lower().endswith(exts) for n in names):
                    return kind
    except S2DError:
        raise
    except Exception as e:  # noqa: BLE001 - surface filesystem errors as one line
        raise S2DError(f"data: {source}: {e}") from None
    raise S2DError(f"data: {source}: expected .jsonl/.json or .parquet (file or directory of them)")


def task_rows(source: str, n: int | None, seed: int, split: str) -> list[dict[str, Any]]:
    """Rows of a built-in task source (``n`` of them, DEFAULT_TASK_ROWS when None), with the
    task's metadata kept in ``meta``."""
    from s2d_ray.tasks import get_task, parse_task_source

    name, params = parse_task_source(source)
    rows = get_task(name).generate(DEFAULT_TASK_ROWS if n is None else n, seed, split, **params)
    return [validate_record(r, f"task:{name}") for r in rows]


def read_inputs(source: str, n: int | None = None, seed: int = 0, split: str = "train"):
    """A Ray Dataset of validated rows from a task, a file, a directory or a URI: all of a
    file's rows unless ``n`` is set."""
    import ray.data

    if source.startswith("task:"):
        table = pa.Table.from_pylist(task_rows(source, n, seed, split), schema=INPUT_SCHEMA)
        # Several blocks, so the pool streams and progress moves block by block.
        return ray.data.from_arrow([table.slice(i, TASK_BLOCK_ROWS) for i in range(0, max(table.num_rows, 1), TASK_BLOCK_ROWS)])
    kind = _kind(source)
    if kind == "jsonl":
        ds = ray.data.read_binary_files(source, include_paths=True, file_extensions=[e[1:] for e in _JSONL])
        ds = ds.flat_map(parse_jsonl_file)
    else:
        ds = ray.data.read_parquet(source, include_paths=True).map_batches(validate_table, batch_format="pyarrow")
    return ds.limit(n) if n is not None else ds
