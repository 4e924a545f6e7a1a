"""Resume and duplicate screening, done by Ray workers: the driver holds object refs and counts,
never the ids.

Each row is known by a 16-byte key: the blake2b hash of its id (a row without one, rejected at
read, by its job and source). Keys travel as NumPy ``S16`` arrays, 16 bytes an id, which every
worker on a node reads zero-copy from Ray's shared object store:

- done: the sorted keys of every row already in the stage's output (built by a task over the
  written files' id columns). A row whose key is in it is skipped, found by binary search.
- duplicates: one task sorts the keys of every input row (16 bytes a row; on this machine
  0.2 s for a million, where a Ray Data groupby took 5-8 s); the first occurrence of an id
  (lowest ``seq``: file, then line) is processed, the later ones are rejected as "duplicate id
  'x' (first at FILE:LINE)".

Why not Ray Data's own job checkpointing (``ray.data.checkpoint.CheckpointConfig``)? Its filter
runs right after the read, so the id must exist at read time, but a row's id is derived by
validation (from its input when it has none) and evaluation tags ids with their job after the
read; it keeps the ids as a NumPy object array of Python strings (~70 bytes an id, copied into
every filter actor, each reserving 1 GiB and a CPU: on a 2-core node that starves the engine);
and it writes a second copy of every id beside samples/, which already holds them; duplicate ids
would still need the pass below. Measured on this 2-core machine (benchmarks/scale.py, 2026-12-01):
a fully done run of 1,000,000 inputs resumes in 14.4 s, the whole `sample()` call with Ray's start,
the read, the plan and the derived-set check; Ray's filter alone, in its simplest setting (ids
present at read, one id column, no engine; `scale.py --ray-checkpoint`), took 6.5 s for the same
rows. Both fit the 30 s a resume may take; the reasons above decide.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from s2d_ray.runtime import LIGHT_CPUS

KEY_BYTES = 16
_cache: dict[str, Any] = {}  # per worker process: arrays fetched from the object store


def row_keys(ids: list[str | None], sources: list[str | None], jobs: list[str | None] | None = None) -> np.ndarray:
    """The 16-byte key of each row (``S16``; compared in NumPy only, never decoded)."""
    jobs = jobs or [None] * len(ids)
    raw = b"".join(
        hashlib.blake2b((i if i is not None else f"\0{j or ''}\0{s}").encode("utf-8"), digest_size=KEY_BYTES).digest()
        for i, s, j in zip(ids, sources, jobs))
    return np.frombuffer(raw, dtype=f"S{KEY_BYTES}")


def table_keys(table: pa.Table, by_source: np.ndarray | None = None) -> np.ndarray:
    """Each row's key: its id's, or (where ``by_source``, and for rows without an id) its job's
    and source's. A later occurrence of a duplicated id is known by its source, so that it and
    the first occurrence are each done once."""
    jobs = table["job"].to_pylist() if "job" in table.column_names else None
    ids = table["id"].to_pylist()
    if by_source is not None:
        ids = [None if s else i for i, s in zip(ids, by_source.tolist())]
    return row_keys(ids, table["source"].to_pylist(), jobs)


DUPLICATE = "duplicate id "  # how the reason of a later occurrence of an id begins


def key_column(keys: np.ndarray) -> pa.Array:
    """Keys as an Arrow fixed-size binary column (for Ray Data's groupby)."""
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(KEY_BYTES), len(keys), [None, pa.py_buffer(keys.tobytes())])


def column_keys(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(column) == 0:
        return np.empty(0, dtype=f"S{KEY_BYTES}")
    buf = column.buffers()[1]
    return np.frombuffer(buf, dtype=f"S{KEY_BYTES}", count=len(column), offset=column.offset * KEY_BYTES)


def member(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(whether each of ``keys`` is in ``sorted_keys``, its position there)."""
    if len(sorted_keys) == 0 or len(keys) == 0:
        return np.zeros(len(keys), dtype=bool), np.zeros(len(keys), dtype=np.int64)
    pos = np.searchsorted(sorted_keys, keys)
    inside = pos < len(sorted_keys)
    hit = np.zeros(len(keys), dtype=bool)
    hit[inside] = sorted_keys[pos[inside]] == keys[inside]
    return hit, np.minimum(pos, len(sorted_keys) - 1)


@dataclass
class Screen:
    """What a screening worker needs, as object refs (picklable; fetched once per process)."""

    done: Any = None  # ObjectRef of sorted done keys
    dup_keys: Any = None  # ObjectRef of sorted keys of ids seen more than once
    dup_first: Any = None  # ObjectRef of (first seq, first source) arrays aligned with dup_keys

    def get(self, name: str) -> Any:
        ref = getattr(self, name)
        if ref is None:
            return None
        import ray

        key = ref.hex()
        if key not in _cache:
            if len(_cache) > 16:  # refs of earlier stages in this worker
                _cache.clear()
            _cache[key] = ray.get(ref)
        return _cache[key]


def _done(screen: Screen, keys: np.ndarray) -> np.ndarray:
    done = screen.get("done")
    return member(done, keys)[0] if done is not None else np.zeros(len(keys), dtype=bool)


def mark_keys(batch: pa.Table, screen: Screen) -> pa.Table:
    """Ray Data map_batches (the planning pass): each input row's key, its ``first`` (seq and
    source, sortable) and whether it is done as a first occurrence (by id) or as a later one
    (by source)."""
    keys = table_keys(batch)
    first = [f"{seq:016x}\t{src}" for seq, src in zip(batch["seq"].to_pylist(), batch["source"].to_pylist())]
    by_source = table_keys(batch, np.ones(batch.num_rows, dtype=bool))
    return pa.table({"key": key_column(keys), "first": pa.array(first, pa.string()),
                     "done": pa.array(_done(screen, keys)), "done_later": pa.array(_done(screen, by_source))})


def screen_rows(batch: pa.Table, screen: Screen) -> pa.Table:
    """Ray Data map_batches: reject later occurrences of a duplicate id (their own reason, if
    any, follows); drop rows already done."""
    if batch.num_rows == 0:
        return batch
    keys = table_keys(batch)
    later = np.zeros(batch.num_rows, dtype=bool)
    dup_keys = screen.get("dup_keys")
    if dup_keys is not None and len(dup_keys):
        hit, pos = member(dup_keys, keys)
        if hit.any():
            first_seq, first_source = screen.get("dup_first")
            reasons = batch["reject_reason"].to_pylist()
            seqs, ids = batch["seq"].to_pylist(), batch["id"].to_pylist()
            for k in np.flatnonzero(hit):
                if seqs[k] != first_seq[pos[k]]:
                    later[k] = True
                    own = f"; {reasons[k]}" if reasons[k] else ""
                    reasons[k] = f"{DUPLICATE}{ids[k]!r} (first at {first_source[pos[k]]}){own}"
            batch = batch.set_column(batch.schema.get_field_index("reject_reason"), "reject_reason",
                                     pa.array(reasons, pa.string()))
            if later.any():
                keys = table_keys(batch, later)
    return batch.filter(pa.array(~_done(screen, keys), pa.bool_()))


# --------------------------------------------------------------------------- building the refs (Ray tasks)


def _sorted_keys(*tables: pa.Table) -> np.ndarray:
    keys = [column_keys(t["key"]) for t in tables if t.num_rows]
    return np.sort(np.concatenate(keys)) if keys else np.empty(0, dtype=f"S{KEY_BYTES}")


def _file_keys(batch: pa.Table) -> pa.Table:
    """Ray Data map_batches over written result files: the key of every row (a later
    occurrence of a duplicated id by its source, as the screen knows it)."""
    later = pc.fill_null(pc.starts_with(batch["reason"], DUPLICATE), False).to_numpy(zero_copy_only=False)
    return pa.table({"key": key_column(table_keys(batch, later))})


def _plan(*tables: pa.Table) -> tuple[int, np.ndarray | None, tuple[np.ndarray, list[str]] | None]:
    """A task over the planning pass's blocks: (rows to do, sorted keys of ids seen more than
    once, their first occurrence's seq and source), sorting 16 bytes a row."""
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return 0, None, None
    done = np.concatenate([t["done"].to_numpy(zero_copy_only=False) for t in tables])
    keys = np.concatenate([column_keys(t["key"]) for t in tables])
    order = np.argsort(keys, kind="stable")
    ranked = keys[order]
    same = ranked[1:] == ranked[:-1]
    if not same.any():
        return int((~done).sum()), None, None
    in_dup = np.zeros(len(keys), dtype=bool)
    in_dup[order[1:][same]] = True
    in_dup[order[:-1][same]] = True
    rows = np.flatnonzero(in_dup)
    firsts = pa.chunked_array([t["first"] for t in tables]).take(pa.array(rows)).to_pylist()
    best: dict[bytes, str] = {}
    for key, first in zip(keys[rows].tolist(), firsts):
        if key not in best or first < best[key]:
            best[key] = first
    later = np.zeros(len(keys), dtype=bool)  # later occurrences are done as such (by source)
    later[rows] = [best[k] != f for k, f in zip(keys[rows].tolist(), firsts)]
    done_later = np.concatenate([t["done_later"].to_numpy(zero_copy_only=False) for t in tables])
    todo = int((~np.where(later, done_later, done)).sum())
    dup_keys = np.array(sorted(best), dtype=f"S{KEY_BYTES}")
    first = [best[k].split("\t", 1) for k in dup_keys.tolist()]
    return todo, dup_keys, (np.array([int(q, 16) for q, _ in first], dtype=np.int64), [src for _, src in first])


def done_keys(out: Any, subdir: str):
    """(ObjectRef of the sorted keys of every row already in ``out/subdir``, how many), or
    (None, 0): a Ray Data job over the files' id columns, sorted by one task."""
    from s2d_ray.datasets import read_results

    files = out.files(subdir)
    if not files:
        return None, 0
    import ray

    keys = read_results(out, files, ["id", "source", "job", "reason"]).map_batches(_file_keys, batch_format="pyarrow", num_cpus=LIGHT_CPUS).materialize()
    n = keys.count()
    return ray.remote(_sorted_keys).options(num_cpus=0.5).remote(*keys.to_arrow_refs()), n


def plan_screen(ds, done: Any) -> tuple[int, Screen]:
    """(rows still to do, the screen for the main pass): one planning pass over the input that
    gives every row's key (in workers), then one task that counts what is left and finds the
    duplicate ids by sorting the keys."""
    import ray

    keys = ds.map_batches(mark_keys, fn_kwargs={"screen": Screen(done=done)}, batch_format="pyarrow",
                          num_cpus=LIGHT_CPUS).materialize()
    todo, dup_keys, dup_first = ray.remote(_plan).options(num_returns=3, num_cpus=0.5).remote(*keys.to_arrow_refs())
    return int(ray.get(todo)), Screen(done=done, dup_keys=dup_keys, dup_first=dup_first)
