"""Ray Data readers and writers of a run's files: stage results written by the workers as
atomic Parquet files, written files read back in parallel, and the derived sets (distill/,
rejected/) built from samples/ by a Ray Data job. The driver gets figures, never rows."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasink, Datasource, ReadTask

from s2d_ray.outputs import (KEPT_COLUMNS, REJECTED_COLUMNS, OutputDir, new_run_id, read_manifest, run_files,
                             write_manifest)
from s2d_ray.runtime import LIGHT_CPUS, write_options

if TYPE_CHECKING:
    from s2d_ray.answers import AnswerSpec
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


@dataclass(frozen=True)
class Refilter:
    """An engine-free ``sample.filter`` (programs.filters.ENGINE_FREE) applied to samples/ rows
    when what derives from them is built: a sampled row (kept or dropped) gets this filter's
    decision, so samples taken under one filter serve another (a rejected row stays rejected)."""

    kind: str
    min_agreement: float
    answers: "AnswerSpec"

    @property
    def key(self) -> str:
        return f"{self.kind}>={self.min_agreement}"


DECISION_COLUMNS = ("status", "target", "agreement", "reason")


def _refilter(batch: pa.Table, refilter: Refilter) -> pa.Table:
    """Ray Data map_batches over samples/ rows: their decisions under ``refilter``."""
    from s2d_ray.programs.base import Sample
    from s2d_ray.programs.filters import decide

    decided = {c: batch[c].to_pylist() for c in DECISION_COLUMNS}
    for i, (status, samples, question) in enumerate(zip(decided["status"], batch["samples"].to_pylist(),
                                                        batch["input"].to_pylist())):
        if status not in ("kept", "dropped"):
            continue
        chains = [Sample(s["answer"], [s["text"]] if s["text"] else [], s["tokens"] or 0, s["view"] or "original")
                  for s in samples or []]
        d = decide(refilter.kind, chains, refilter.min_agreement, question, refilter.answers)
        for c, v in zip(DECISION_COLUMNS, ("kept" if d.kept else "dropped", d.target, d.agreement, d.reason)):
            decided[c][i] = v
    for c, values in decided.items():
        i = batch.schema.get_field_index(c)
        batch = batch.set_column(i, c, pa.array(values, batch.schema.field(i).type))
    return batch


def read_samples(out: OutputDir, files: list[str], columns: list[str], refilter: Refilter | None = None):
    """samples/ ``files`` as a Ray Dataset of (at least) ``columns``, decided by ``refilter``
    (without one: as stored, the decision of the filter they were sampled with)."""
    if refilter is None:
        return read_results(out, files, columns)
    need = sorted({*columns, *DECISION_COLUMNS, "samples", "input"})
    return read_results(out, files, need).map_batches(_refilter, fn_kwargs={"refilter": refilter},
                                                      batch_format="pyarrow", num_cpus=LIGHT_CPUS)


def files_digest(files: list[str]) -> str:
    """A fingerprint of a directory's file names: a derived set records the one it was built from."""
    return hashlib.sha256("\n".join(f.rsplit("/", 1)[-1] for f in sorted(files)).encode()).hexdigest()[:16]


_DERIVED_COLUMNS = sorted({"status", "system1_input", "input", "answer", "meta", *KEPT_COLUMNS, *REJECTED_COLUMNS})


class DerivedSink(Datasink):
    """Ray Data datasink over samples/ rows: each write task writes its kept rows to distill/
    and its rejected rows to rejected/ (one atomic file each) and returns its rows per status
    and, with a task, its kept targets per label (closed answer sets) and how many match ground
    truth (for the report only)."""

    def __init__(self, out: OutputDir, run_id: str, task: "TaskSpec | None", thresholds: dict[str, int] | None = None) -> None:
        # sample.filter.balance: per capped label, the highest id rank it keeps
        self.out, self.run_id, self.task, self.thresholds = out, run_id, task, thresholds or {}
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
        if self.thresholds and kept.num_rows:  # sample.filter.balance: a capped label's surplus stays out
            over = [label in self.thresholds and rank > self.thresholds[label]
                    for label, rank in zip(kept["target"].to_pylist(), id_ranks(kept["id"].to_pylist()).tolist())]
            counts["capped"] = sum(over)
            kept = kept.filter(pa.array([not o for o in over]))
        name = f"part-{self.run_id}-{ctx.task_idx:06d}.parquet"
        if kept.num_rows:
            distill = kept.select(["id", "system1_input", *KEPT_COLUMNS[2:]]).rename_columns(KEPT_COLUMNS)
            distill = distill.append_column("view_of", pa.nulls(distill.num_rows, pa.string()))
            self.out.write_table(distill, "distill", name)
        if rejected.num_rows:
            self.out.write_table(rejected.select(REJECTED_COLUMNS), "rejected", name)
        if self.task is not None and self.task.answers.closed_set is not None and kept.num_rows:
            counts["kept_labels"] = {v["values"]: v["counts"] for v in pc.value_counts(kept["target"]).to_pylist()
                                     if v["values"] is not None}
        if self.task is not None:
            labelled = kept.filter(pc.is_valid(kept["answer"])).select(["input", "target", "answer", "meta"]).to_pylist()
            counts["kept_with_answer"] = len(labelled)
            counts["kept_correct"] = sum(bool(self.task.is_correct(r["target"], {**json.loads(r["meta"] or "{}"),
                                                                               "input": r["input"], "answer": r["answer"]}))
                                         for r in labelled)
        return counts

    def on_write_complete(self, write_result: Any) -> None:
        self.summaries = list(write_result.write_returns)


def id_ranks(ids: list[str | None]) -> Any:
    """A stable pseudo-random rank of each id (uint64): which of a capped label's rows stay."""
    import numpy as np

    raw = b"".join(hashlib.blake2b((i or "").encode("utf-8"), digest_size=8).digest() for i in ids)
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64)


def balance_caps(counts: dict[str, int], share: float) -> dict[str, int]:
    """The most rows each label may keep so that none is over ``share`` of the kept set:
    the largest cap C with C <= share * sum(min(n, C)), labels under it untouched (where even
    equal shares are over ``share``, every label keeps as many as the smallest has)."""
    cap = max(counts.values())
    while True:
        allowed = int(share * sum(min(n, cap) for n in counts.values()))
        if allowed >= cap:
            break
        cap = allowed
        if cap <= min(counts.values()):
            cap = min(counts.values())
            break
    return {label: cap for label, n in counts.items() if n > cap}


def _label_ranks(batch: pa.Table) -> pa.Table:
    kept = batch.filter(pc.equal(batch["status"], "kept"))
    return pa.table({"target": kept["target"], "rank": pa.array(id_ranks(kept["id"].to_pylist()), pa.uint64())})


def _rank_thresholds(caps: dict[str, int], *tables: pa.Table) -> dict[str, int]:
    """For each capped label, the rank of the last row it keeps (its ``cap`` lowest ranks)."""
    import numpy as np

    table = pa.concat_tables(tables)  # a capped label has kept rows, so there are some
    out = {}
    for label, cap in caps.items():
        ranks = np.sort(table.filter(pc.equal(table["target"], label))["rank"].to_numpy())
        out[label] = int(ranks[cap - 1]) if cap else -1
    return out


def _caps(out: OutputDir, files: list[str], share: float, refilter: Refilter | None) -> tuple[dict[str, int], dict[str, int]]:
    """(label -> most rows it keeps, label -> rank threshold) for ``sample.filter.balance``:
    the kept targets' labels counted by a Ray Data groupby, their ranks sorted by one task."""
    import ray

    kept = read_samples(out, files, ["status", "target", "id"], refilter).map_batches(
        _label_ranks, batch_format="pyarrow", num_cpus=LIGHT_CPUS).materialize()
    counts = {r["target"]: r["count()"] for r in kept.groupby("target").count().take_all() if r["target"] is not None}
    caps = balance_caps(counts, share) if counts else {}
    if not caps:
        return {}, {}
    thresholds = ray.get(ray.remote(_rank_thresholds).options(num_cpus=LIGHT_CPUS).remote(caps, *kept.to_arrow_refs()))
    return caps, thresholds


def derived_hash(parent: str, balance: float | None, refilter: Refilter | None = None) -> str:
    """distill/'s config hash: the samples' it is built from, the filter that decides (when it
    is engine-free) and the cap on a label's share."""
    if balance is None and refilter is None:
        return parent
    return hashlib.sha256(f"{parent}|balance={balance}|filter={refilter.key if refilter else None}".encode()).hexdigest()[:12]


def write_derived(out: OutputDir, parent: str, task: "TaskSpec | None" = None, balance: float | None = None,
                  refilter: Refilter | None = None) -> dict[str, Any]:
    """Rebuild distill/ and rejected/ from every file in samples/ (one Ray Data job, written by
    its workers), decided by ``refilter`` (read_samples), unless their manifests already derive
    from exactly those files and settings.
    Returns the rows of samples/ per status, ``kept_correct``/``kept_with_answer`` and
    ``kept_labels`` with a task, ``capped`` with ``balance``. New files are complete, and named
    in the manifests (what readers read), before old ones are deleted (a rebuilt distill/ has
    no paraphrased views: ``write_views`` adds them). ``originals_hash`` is the hash of the
    kept inputs' rows; distill/'s ``config_hash`` also covers its views when it has some."""
    files = out.files("samples")
    digest, config_hash = files_digest(files), derived_hash(parent, balance, refilter)
    manifests = [read_manifest(out, d) for d in ("distill", "rejected")]
    if all(m and m.get("source_files") == digest and m.get("originals_hash") == config_hash and "counts" in m for m in manifests):
        return manifests[0]["counts"]
    caps, thresholds = _caps(out, files, balance, refilter) if balance and files and task is not None and task.answers.closed_set else ({}, {})
    before = {d: out.files(d) for d in ("distill", "rejected")}
    run_id = new_run_id()
    sink = DerivedSink(out, run_id, task, thresholds)
    if files:
        read_samples(out, files, _DERIVED_COLUMNS, refilter).write_datasink(sink, **write_options())
    counts: dict[str, Any] = {}
    for summary in sink.summaries:
        for k, v in summary.items():
            if isinstance(v, dict):  # kept targets per label
                for label, n in v.items():
                    counts.setdefault(k, {})[label] = counts.get(k, {}).get(label, 0) + n
            else:
                counts[k] = counts.get(k, 0) + v
    if caps:
        counts["caps"] = caps
    rows = {"distill": counts.get("kept", 0) - counts.get("capped", 0), "rejected": counts.get("rejected", 0)}
    for subdir in ("distill", "rejected"):
        new = run_files(out, subdir, run_id)
        write_manifest(out, subdir, config_hash=config_hash, originals_hash=config_hash, parent=parent, rows=rows[subdir],
                       counts=counts, source_files=digest, files=[f.rsplit("/", 1)[-1] for f in new])
        for old in set(before[subdir]) - set(new):
            out.fs.delete_file(old)
    return counts


