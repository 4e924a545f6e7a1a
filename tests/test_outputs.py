"""Atomic result shards and the derived distill/ and rejected/ tables (s2d_ray.outputs)."""

import os

import pyarrow as pa

from s2d_ray.outputs import DISTILL_COLUMNS, REJECTED_COLUMNS, RESULT_SCHEMA, OutputDir, ShardWriter, write_derived


def result_row(rid, status="kept", **kw):
    row = {
        "id": rid, "job": "sample", "input": f"q {rid} (system 2 prompt)", "system1_input": f"q {rid}", "answer": "4",
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


def test_one_shard_per_add(tmp_path):
    out = OutputDir(str(tmp_path))
    w = ShardWriter(out, "samples", "RUN")
    w.add(table(result_row("1")))
    assert names(out, "samples") == ["part-RUN-00000.parquet"]
    w.add(table(result_row("2"), result_row("3")))
    assert names(out, "samples") == ["part-RUN-00000.parquet", "part-RUN-00001.parquet"]
    assert w.shards == 2 and w.buffered == 0


def test_buffered_until_flush_rows(tmp_path):
    out = OutputDir(str(tmp_path))
    w = ShardWriter(out, "samples", "RUN", flush_rows=5)
    w.add(table(*(result_row(str(i)) for i in range(3))))
    assert names(out, "samples") == []
    w.add(table(*(result_row(str(i)) for i in range(3, 5))))
    assert names(out, "samples") == ["part-RUN-00000.parquet"]
    assert out.read_tables("samples")["id"].to_pylist() == ["0", "1", "2", "3", "4"]


def test_flush_writes_the_rest_and_nothing_when_empty(tmp_path):
    out = OutputDir(str(tmp_path))
    w = ShardWriter(out, "samples", "RUN", flush_rows=5)
    w.flush()
    assert not out.exists("samples")
    w.add(table(result_row("a")))
    w.flush()
    w.flush()
    assert names(out, "samples") == ["part-RUN-00000.parquet"]


def test_shards_read_back_equal_rows_written(tmp_path):
    out = OutputDir(str(tmp_path))
    rows = [result_row("1"), result_row("2", status="rejected", reason="bad: x", samples=[], agreement=None),
            result_row("3", status="dropped", reason="no majority")]
    w = ShardWriter(out, "samples", "RUN")
    for r in rows:
        w.add(table(r))
    back = out.read_tables("samples")
    assert back.schema.equals(RESULT_SCHEMA)
    assert back.to_pylist() == rows
    assert not [f for f in os.listdir(tmp_path / "samples") if f.startswith(".tmp")]


def test_read_tables_of_missing_dir_is_empty_with_schema(tmp_path):
    out = OutputDir(str(tmp_path))
    assert out.read_tables("samples").schema.equals(RESULT_SCHEMA)
    assert out.read_tables("samples", columns=["id", "config_hash"]).column_names == ["id", "config_hash"]


def _write_mixed(out, run_id, start):
    w = ShardWriter(out, "samples", run_id)
    w.add(table(result_row(str(start)), result_row(str(start + 1), status="rejected", reason="duplicate id")))
    w.add(table(result_row(str(start + 2), status="dropped", reason="no majority")))


def test_write_derived(tmp_path):
    out = OutputDir(str(tmp_path))
    _write_mixed(out, "A", 0)
    assert write_derived(out) == (1, 1)
    distill = out.read_tables("distill")
    assert distill.column_names == DISTILL_COLUMNS
    assert distill.to_pylist() == [{
        "id": "0", "input": "q 0", "target": "t 0", "method": "rar", "n_samples": 2, "agreement": 1.0,
        "model": "m", "config_hash": "h1", "source": "in.jsonl:0"}]
    rejected = out.read_tables("rejected")
    assert rejected.column_names == REJECTED_COLUMNS
    assert rejected.to_pylist() == [{
        "id": "1", "input": "q 1 (system 2 prompt)", "source": "in.jsonl:1", "reason": "duplicate id",
        "method": "rar", "config_hash": "h1"}]


def test_write_derived_rebuilds_from_all_shards(tmp_path):
    out = OutputDir(str(tmp_path))
    _write_mixed(out, "A", 0)
    write_derived(out)
    _write_mixed(out, "B", 10)
    assert write_derived(out) == (2, 2)
    assert sorted(out.read_tables("distill")["id"].to_pylist()) == ["0", "10"]
    assert sorted(out.read_tables("rejected")["id"].to_pylist()) == ["1", "11"]
    assert names(out, "distill") == ["part-00000.parquet"]


def test_write_derived_from_given_tables(tmp_path):
    out = OutputDir(str(tmp_path))
    assert write_derived(out, [table(result_row("x")), table(result_row("y"))]) == (2, 0)
    assert out.read_tables("distill")["input"].to_pylist() == ["q x", "q y"]
    assert not out.exists("samples")
