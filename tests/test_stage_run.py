"""Resume screening and stage statistics of s2d_ray.stage.run, without Ray."""

import pyarrow as pa
import pytest

from s2d_ray.errors import S2DError
from s2d_ray.outputs import RESULT_SCHEMA, OutputDir, ShardWriter
from s2d_ray.stage.run import StageStats, _scan_ids, _screen, done_ids


def inputs(rows):
    """A batch as it reaches _screen: (id, source, reject_reason) tuples."""
    ids, sources, reasons = zip(*rows)
    return pa.table({"id": list(ids), "source": list(sources), "reject_reason": pa.array(reasons, pa.string())})


def test_screen_drops_done_and_marks_later_duplicates():
    batch = inputs([("a", "in.jsonl:1", None), ("done", "in.jsonl:2", None), ("b", "in.jsonl:3", None),
                    ("a", "in.jsonl:4", None), ("c", "in.jsonl:5", "bad json")])
    out = _screen(batch, {"done"}, {"a": "in.jsonl:1"})
    assert out.column_names == ["id", "source", "reject_reason"]
    assert out.to_pylist() == [
        {"id": "a", "source": "in.jsonl:1", "reject_reason": None},
        {"id": "b", "source": "in.jsonl:3", "reject_reason": None},
        {"id": "a", "source": "in.jsonl:4", "reject_reason": "duplicate id 'a' (first at in.jsonl:1)"},
        {"id": "c", "source": "in.jsonl:5", "reject_reason": "bad json"},
    ]


def test_screen_keeps_existing_reason_of_a_duplicate():
    batch = inputs([("a", "in.jsonl:7", "missing field 'question'")])
    assert _screen(batch, set(), {"a": "in.jsonl:1"})["reject_reason"].to_pylist() == ["missing field 'question'"]


class FakeDataset:
    """Just what _scan_ids uses of a Ray Dataset: select_columns(...).iter_batches(...)."""

    def __init__(self, batches):
        self.batches = batches
        self.calls = []

    def select_columns(self, cols):
        self.calls.append(("select_columns", cols))
        return self

    def iter_batches(self, batch_size, batch_format):
        self.calls.append(("iter_batches", batch_format))
        for rows in self.batches:
            yield pa.table({"id": [r[0] for r in rows], "source": [r[1] for r in rows], "extra": [0] * len(rows)})


def test_scan_ids_first_occurrence_by_path_and_line():
    ds = FakeDataset([
        [("x", "in.jsonl:10"), ("y", "in.jsonl:2")],
        [("x", "in.jsonl:9"), ("z", "in.jsonl:3")],  # line 9 precedes line 10 though it streams later
        [("y", "in.jsonl:20"), ("done", "in.jsonl:1"), ("x", "in.jsonl:100")],
    ])
    first, todo = _scan_ids(ds, {"done"})
    assert first == {"x": "in.jsonl:9", "y": "in.jsonl:2"}
    assert todo == 6
    assert ds.calls == [("select_columns", ["id", "source"]), ("iter_batches", "pyarrow")]


def test_scan_ids_orders_by_path_then_line():
    ds = FakeDataset([[("x", "b.jsonl:1")], [("x", "a.jsonl:50")], [("y", "a.jsonl:5")]])
    assert _scan_ids(ds, set()) == ({"x": "a.jsonl:50"}, 3)


def test_scan_ids_everything_done():
    ds = FakeDataset([[("a", "in.jsonl:1"), ("b", "in.jsonl:2")]])
    assert _scan_ids(ds, {"a", "b"}) == ({}, 0)


def result_row(rid, status="kept", config_hash="h1", **kw):
    row = {name: None for name in RESULT_SCHEMA.names}
    row.update(id=rid, status=status, config_hash=config_hash, samples=[], source=f"in.jsonl:{rid}")
    row.update(kw)
    return row


def table(*rows):
    return pa.Table.from_pylist(list(rows), schema=RESULT_SCHEMA)


def test_done_ids_reads_every_shard(tmp_path):
    out = OutputDir(str(tmp_path))
    w = ShardWriter(out, "samples", "R")
    w.add(table(result_row("1"), result_row("2", status="rejected")))
    w.add(table(result_row("3", status="dropped")))
    assert done_ids(out, "samples", "h1") == {"1", "2", "3"}


def test_done_ids_nothing_written(tmp_path):
    assert done_ids(OutputDir(str(tmp_path)), "samples", "h1") == set()


def test_done_ids_refuses_another_config(tmp_path):
    out = OutputDir(str(tmp_path))
    out.write_table(table(result_row("1", config_hash="old")), "samples", "part-x-00000.parquet")
    with pytest.raises(S2DError, match="another config") as e:
        done_ids(out, "samples", "new")
    assert "old" in str(e.value) and "new" in str(e.value)


def test_stage_stats():
    stats = StageStats()
    stats.update(table(
        result_row("1", generated_tokens=40, busy_s=1.0, agreement=1.0, samples=[{"view": "a", "text": "t", "answer": "1", "tokens": 20}] * 2),
        result_row("2", generated_tokens=20, busy_s=1.0, agreement=0.55),
        result_row("3", status="dropped", generated_tokens=20, busy_s=2.0, agreement=0.5, reason="no majority: 2 vs 2"),
        result_row("4", status="rejected", reason="invalid JSON: Expecting value (column 1)"),
        result_row("5", status="rejected", reason="invalid JSON: Extra data (column 9)"),
    ))
    stats.update(table(result_row("6", status="kept", reason="ignored: kept rows have no reason", agreement=0.05)))
    assert (stats.rows, stats.kept, stats.dropped, stats.rejected) == (6, 3, 1, 2)
    assert stats.samples == 2
    assert stats.generated_tokens == 80
    assert stats.busy_s == pytest.approx(4.0)
    d = stats.as_dict()
    assert d["tokens_per_s"] == 20.0
    assert d["agreement"] == {"0.0-0.1": 1, "0.5-0.6": 2, "0.9-1.0": 1}  # 1.0 falls in the top bucket
    assert d["reasons"] == {"invalid JSON": 2, "no majority": 1}


def test_stage_stats_groups_duplicate_id_reasons():
    stats = StageStats()
    stats.update(table(*(result_row(str(i), status="rejected", reason=f"duplicate id '{i}' (first at in.jsonl:{i})")
                         for i in range(12))))
    assert stats.as_dict()["reasons"] == {"duplicate id": 12}


def test_stage_stats_empty():
    d = StageStats().as_dict()
    assert d["tokens_per_s"] == 0.0 and d["agreement"] == {} and d["reasons"] == {} and d["rows"] == 0
