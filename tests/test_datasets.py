"""Atomic result files and the derived distill/ and rejected/ sets (s2d_ray.outputs, s2d_ray.datasets), written by
Ray Data workers on a local Ray."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from s2d_ray.answers import AnswerSpec
from s2d_ray.datasets import Refilter, ShardSink, write_derived
from s2d_ray.outputs import DISTILL_COLUMNS, REJECTED_COLUMNS, RESULT_SCHEMA, OutputDir, manifest_files, read_manifest
from s2d_ray.tasks import get_task


def result_row(rid, status="kept", **kw):
    row = {
        "id": rid, "job": None, "input": f"q {rid} (system 2 prompt)", "system1_input": f"q {rid}", "answer": "4",
        "meta": "{}", "source": f"in.jsonl:{rid}", "status": status, "reason": None, "target": f"t {rid}",
        "agreement": 1.0, "method": "rar", "model": "m", "n_samples": 2, "config_hash": "h1",
        "generated_tokens": 12, "latency_s": 0.5, "busy_s": 0.25,
        "samples": [{"view": "a", "text": "x", "answer": "4", "tokens": 6}],
    }
    row.update(kw)
    return row


def table(*rows):
    return pa.Table.from_pylist(list(rows), schema=RESULT_SCHEMA)


def names(out, subdir):
    return [os.path.basename(p) for p in out.files(subdir)]


def read(out, subdir, files=None):
    files = files if files is not None else out.files(subdir)
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else None


def test_write_table_is_atomic_and_leaves_no_temp_files(tmp_path):
    out = OutputDir(str(tmp_path))
    out.write_table(table(result_row("1")), "samples", "part-a.parquet")
    assert names(out, "samples") == ["part-a.parquet"]
    assert not [f for f in os.listdir(tmp_path / "samples") if f.startswith(".tmp")]
    assert read(out, "samples").to_pylist() == [result_row("1")]


def test_files_ignore_temp_and_other_files(tmp_path):
    out = OutputDir(str(tmp_path))
    out.write_table(table(result_row("1")), "samples", "part-a.parquet")
    (tmp_path / "samples" / ".tmp-123.parquet").write_bytes(b"half a file")
    (tmp_path / "samples" / "_manifest.json").write_text("{}")
    assert names(out, "samples") == ["part-a.parquet"]


def test_shard_sink_writes_one_file_per_write_task_with_its_summary(tmp_path, local_ray):
    import ray.data

    out = OutputDir(str(tmp_path))
    blocks = [table(*(result_row(f"{b}-{i}") for i in range(3))) for b in range(4)]
    sink = ShardSink(out, "samples", "RUN", summarize=lambda t: {"rows": t.num_rows, "ids": sorted(t["id"].to_pylist())})
    ray.data.from_arrow(blocks).write_datasink(sink)
    assert len(names(out, "samples")) == 4 and all(n.startswith("part-RUN-") for n in names(out, "samples"))
    summaries = [json.loads(s) for s in sink.summaries]
    assert sum(s["rows"] for s in summaries) == 12
    assert sorted(i for s in summaries for i in s["ids"]) == sorted(f"{b}-{i}" for b in range(4) for i in range(3))
    back = read(out, "samples")
    assert back.schema.equals(RESULT_SCHEMA) and back.num_rows == 12


def test_shard_sink_rows_per_file_groups_batches(tmp_path, local_ray):
    import ray.data

    out = OutputDir(str(tmp_path))
    blocks = [table(result_row(f"{b}")) for b in range(10)]
    ray.data.from_arrow(blocks).write_datasink(ShardSink(out, "samples", "RUN", rows_per_file=5))
    files = out.files("samples")
    assert len(files) <= 2 and read(out, "samples").num_rows == 10


def _mixed(out, run_id, start):
    out.write_table(table(result_row(str(start)), result_row(str(start + 1), status="rejected", reason="duplicate id"),
                          result_row(str(start + 2), status="dropped", reason="no majority")),
                    "samples", f"part-{run_id}-000000.parquet")


def test_write_derived(tmp_path, local_ray):
    out = OutputDir(str(tmp_path))
    _mixed(out, "A", 0)
    counts = write_derived(out, "h1")
    assert (counts["kept"], counts["rejected"], counts["dropped"]) == (1, 1, 1)
    distill = read(out, "distill", manifest_files(out, "distill"))
    assert distill.column_names == DISTILL_COLUMNS
    assert distill.to_pylist() == [{
        "id": "0", "input": "q 0", "target": "t 0", "method": "rar", "n_samples": 2, "agreement": 1.0,
        "model": "m", "config_hash": "h1", "source": "in.jsonl:0", "view_of": None}]
    rejected = read(out, "rejected", manifest_files(out, "rejected"))
    assert rejected.column_names == REJECTED_COLUMNS
    assert rejected.to_pylist() == [{
        "id": "1", "input": "q 1 (system 2 prompt)", "source": "in.jsonl:1", "reason": "duplicate id",
        "method": "rar", "config_hash": "h1"}]
    manifest = read_manifest(out, "distill")
    assert manifest["config_hash"] == "h1" and manifest["rows"] == 1 and manifest["counts"] == counts


def test_write_derived_rebuilds_from_all_files_and_drops_the_old_version(tmp_path, local_ray):
    out = OutputDir(str(tmp_path))
    _mixed(out, "A", 0)
    write_derived(out, "h1")
    first = names(out, "distill")
    _mixed(out, "B", 10)
    counts = write_derived(out, "h1")
    assert (counts["kept"], counts["rejected"]) == (2, 2)
    assert sorted(read(out, "distill")["id"].to_pylist()) == ["0", "10"]  # only the new version is left
    assert len(names(out, "distill")) == 1  # small files are read by one task: one file, not one per split
    assert sorted(read(out, "rejected")["id"].to_pylist()) == ["1", "11"]
    assert not set(first) & set(names(out, "distill"))


def _chains(*answers):
    return [{"view": "original", "text": f"... {a}", "answer": a, "tokens": 3} for a in answers]


def test_write_derived_decides_again_by_an_engine_free_filter(tmp_path, local_ray):
    """The same samples under another filter (what sample.filter.kind/min_agreement change without
    sampling again): each sampled row gets that filter's decision, a rejected row stays rejected,
    and distill/'s hash names the filter."""
    out = OutputDir(str(tmp_path))
    out.write_table(table(result_row("0", samples=_chains("4", "4", "5"), target="4", agreement=2 / 3),
                          result_row("1", status="rejected", reason="duplicate id", samples=[]),
                          result_row("2", status="dropped", reason="tie between answers", target=None, samples=_chains("4", "5")),
                          result_row("3", status="dropped", reason="agreement 0.50 < 0.6", target="7",
                                     samples=_chains(None, "7"))),
                    "samples", "part-A-000000.parquet")
    as_sampled = write_derived(out, "h1")
    assert (as_sampled["kept"], as_sampled["dropped"], as_sampled["rejected"]) == (1, 2, 1)

    strict = write_derived(out, "h1", refilter=Refilter("majority", 1.0, AnswerSpec()))
    assert (strict.get("kept", 0), strict["dropped"], strict["rejected"]) == (0, 3, 1)
    assert read_manifest(out, "distill")["rows"] == 0 and not manifest_files(out, "distill")
    strict_hash = read_manifest(out, "distill")["config_hash"]

    unfiltered = write_derived(out, "h1", refilter=Refilter("none", 0.6, AnswerSpec()))
    assert (unfiltered["kept"], unfiltered.get("dropped", 0), unfiltered["rejected"]) == (3, 0, 1)
    distill = {r["id"]: (r["target"], r["agreement"]) for r in read(out, "distill", manifest_files(out, "distill")).to_pylist()}
    assert distill == {"0": ("4", 2 / 3), "2": ("4", 0.5), "3": ("7", 0.5)}  # the first parseable sample's answer
    assert read(out, "rejected", manifest_files(out, "rejected"))["id"].to_pylist() == ["1"]
    manifest = read_manifest(out, "distill")
    assert manifest["parent"] == "h1" and len({manifest["config_hash"], strict_hash, "h1"}) == 3
    assert write_derived(out, "h1", refilter=Refilter("none", 0.6, AnswerSpec())) == unfiltered  # unchanged: kept as is
    assert read_manifest(out, "distill")["written"] == manifest["written"]


def test_write_derived_skips_when_samples_are_unchanged(tmp_path, local_ray):
    out = OutputDir(str(tmp_path))
    _mixed(out, "A", 0)
    write_derived(out, "h1")
    before = read_manifest(out, "distill")
    assert write_derived(out, "h1") == before["counts"]
    assert read_manifest(out, "distill")["written"] == before["written"] and names(out, "distill") == before["files"]


def test_write_derived_scores_kept_targets_with_a_task(tmp_path, local_ray):
    out = OutputDir(str(tmp_path))
    rows = [result_row("a", target="4"), result_row("b", target="5"), result_row("c", answer=None, target="4"),
            result_row("d", status="dropped")]
    out.write_table(table(*rows), "samples", "part-A-000000.parquet")
    counts = write_derived(out, "h1", get_task("word_problems").spec)
    assert (counts["kept_correct"], counts["kept_with_answer"]) == (1, 2)


def test_write_derived_of_nothing(tmp_path, local_ray):
    out = OutputDir(str(tmp_path))
    assert write_derived(out, "h1") == {}
    assert read_manifest(out, "distill")["rows"] == 0 and manifest_files(out, "distill") == []


def test_balance_caps_a_labels_share_of_the_distillation_set(tmp_path, local_ray):
    from s2d_ray.datasets import balance_caps, derived_hash
    from s2d_ray.tasks.spec import TaskSpec

    task = TaskSpec(answer="label", labels=["Billing", "Technical", "Account"])
    rows = ([result_row(f"b{i}", target="Billing") for i in range(42)] + [result_row(f"t{i}", target="Technical") for i in range(4)]
            + [result_row(f"a{i}", target="Account") for i in range(2)] + [result_row("x", status="dropped")])
    out = OutputDir(str(tmp_path))
    out.write_table(table(*rows), "samples", "part-A-000000.parquet")
    counts = write_derived(out, "h1", task, balance=0.5)
    distill = read(out, "distill", manifest_files(out, "distill"))
    kept = {label: distill["target"].to_pylist().count(label) for label in ("Billing", "Technical", "Account")}
    assert kept == {"Billing": 6, "Technical": 4, "Account": 2} and counts["capped"] == 36 and counts["caps"] == {"Billing": 6}
    assert counts["kept_labels"] == kept
    manifest = read_manifest(out, "distill")
    assert manifest["rows"] == 12 and manifest["config_hash"] == derived_hash("h1", 0.5) != "h1"  # training follows the cap
    again = write_derived(out, "h1", task, balance=0.5)  # the same rows every time
    assert again == counts and sorted(read(out, "distill")["id"].to_pylist()) == sorted(distill["id"].to_pylist())
    assert balance_caps({"a": 10, "b": 10}, 0.4) == {}  # equal shares cannot go lower
    write_derived(out, "h1", task)
    assert read_manifest(out, "distill")["rows"] == 48  # off: every kept input
