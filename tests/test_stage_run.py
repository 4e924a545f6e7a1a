"""Resume and duplicate screening (s2d_ray.stage.screen) and stage figures (StageStats), on a
local Ray: the arrays a worker reads come from the object store, as in a run."""

import numpy as np
import pyarrow as pa
import pytest

from s2d_ray.errors import S2DError
from s2d_ray.inputs import INPUT_SCHEMA
from s2d_ray.outputs import RESULT_SCHEMA, OutputDir, write_manifest
from s2d_ray.stage.run import StageStats, check_config
from s2d_ray.stage.screen import Screen, _plan, done_keys, mark_keys, member, row_keys, screen_rows


def inputs(rows):
    """Input rows: (id, source, seq, reject_reason) tuples."""
    return pa.Table.from_pylist([{"id": i, "input": "q", "answer": None, "meta": "{}", "source": src, "reject_reason": r,
                                  "job": None, "seq": seq} for i, src, seq, r in rows], schema=INPUT_SCHEMA)


def test_keys_are_16_bytes_stable_and_distinct():
    a = row_keys(["x", "y", None, None], ["f:1", "f:2", "f:3", "f:4"])
    assert a.dtype == np.dtype("S16") and len(set(a.tolist())) == 4
    assert (row_keys(["x"], ["elsewhere"]) == a[:1]).all()  # an id's key is the id's alone
    assert row_keys([None], ["f:3"], ["system1"]) != row_keys([None], ["f:3"], ["system2"])  # id-less rows: job and source


def test_member_finds_keys_by_binary_search():
    known = np.sort(row_keys([f"k{i}" for i in range(100)], [""] * 100))
    probe = row_keys(["k5", "nope", "k99", "k0"], [""] * 4)
    hit, pos = member(known, probe)
    assert hit.tolist() == [True, False, True, True]
    assert (known[pos[hit]] == probe[hit]).all()
    assert member(known[:0], probe)[0].tolist() == [False] * 4


def _screen(local_ray, batches, done_ids=()):
    done = local_ray.put(np.sort(row_keys(list(done_ids), [""] * len(done_ids)))) if done_ids else None
    keys = [mark_keys(b, Screen(done=done)) for b in batches]
    todo, dup_keys, dup_first = _plan(*keys)
    return todo, Screen(done=done, dup_keys=local_ray.put(dup_keys), dup_first=local_ray.put(dup_first))


def test_screen_drops_done_rows_and_rejects_later_duplicates(local_ray):
    first = inputs([("a", "in.jsonl:10", 10, None), ("b", "in.jsonl:2", 2, None), ("done", "in.jsonl:3", 3, None)])
    second = inputs([("a", "in.jsonl:9", 9, None), ("a", "in.jsonl:100", 100, None), ("c", "in.jsonl:5", 5, "bad json")])
    todo, screen = _screen(local_ray, [first, second], done_ids=["done"])
    assert todo == 5
    out = [r for b in (first, second) for r in screen_rows(b, screen).to_pylist()]
    reasons = {(r["id"], r["source"]): r["reject_reason"] for r in out}
    assert ("done", "in.jsonl:3") not in reasons
    # line 9 precedes line 10 though it streams later: it is the first occurrence
    assert reasons[("a", "in.jsonl:9")] is None
    assert reasons[("a", "in.jsonl:10")] == "duplicate id 'a' (first at in.jsonl:9)"
    assert reasons[("a", "in.jsonl:100")] == "duplicate id 'a' (first at in.jsonl:9)"
    assert reasons[("b", "in.jsonl:2")] is None and reasons[("c", "in.jsonl:5")] == "bad json"


def test_a_later_duplicate_keeps_its_own_reason_after_the_duplicate_one(local_ray):
    batch = inputs([("a", "in.jsonl:1", 1, None), ("a", "in.jsonl:2", 2, "field 'input' is empty")])
    _, screen = _screen(local_ray, [batch])
    assert [r["reject_reason"] for r in screen_rows(batch, screen).to_pylist()] == [
        None, "duplicate id 'a' (first at in.jsonl:1); field 'input' is empty"]


def test_a_done_first_occurrence_leaves_its_later_duplicates_to_do(local_ray):
    """Resumed after the first occurrence of an id was written, its duplicates are still
    rejected (and written) once: each occurrence is done as itself."""
    batch = inputs([("a", "in.jsonl:1", 1, None), ("a", "in.jsonl:2", 2, None), ("b", "in.jsonl:3", 3, None)])
    todo, screen = _screen(local_ray, [batch], done_ids=["a"])
    assert todo == 2
    assert [(r["source"], r["reject_reason"]) for r in screen_rows(batch, screen).to_pylist()] == [
        ("in.jsonl:2", "duplicate id 'a' (first at in.jsonl:1)"), ("in.jsonl:3", None)]


def test_screen_orders_duplicates_by_file_then_line(local_ray):
    batch = inputs([("x", "b.jsonl:1", (1 << 40) | 1, None), ("x", "a.jsonl:50", 50, None)])
    _, screen = _screen(local_ray, [batch])
    assert [r["reject_reason"] for r in screen_rows(batch, screen).to_pylist()] == [
        "duplicate id 'x' (first at a.jsonl:50)", None]


def test_screen_everything_done_and_nothing_duplicated(local_ray):
    batch = inputs([("a", "in.jsonl:1", 1, None), ("b", "in.jsonl:2", 2, None)])
    todo, screen = _screen(local_ray, [batch], done_ids=["a", "b"])
    assert todo == 0 and screen_rows(batch, screen).num_rows == 0
    assert _plan() == (0, None, None)


def result_row(rid, status="kept", config_hash="h1", **kw):
    row = {name: None for name in RESULT_SCHEMA.names}
    row.update(id=rid, status=status, config_hash=config_hash, samples=[], source=f"in.jsonl:{rid}")
    row.update(kw)
    return row


def table(*rows):
    return pa.Table.from_pylist(list(rows), schema=RESULT_SCHEMA)


def test_done_keys_read_every_file(tmp_path, local_ray):
    out = OutputDir(str(tmp_path))
    out.write_table(table(result_row("1"), result_row("2", status="rejected")), "samples", "part-a.parquet")
    out.write_table(table(result_row("3", status="dropped"), result_row(None, status="rejected")), "samples", "part-b.parquet")
    ref, n = done_keys(out, "samples")
    assert n == 4
    keys = local_ray.get(ref)
    expected = row_keys(["1", "2", "3", None], ["in.jsonl:1", "in.jsonl:2", "in.jsonl:3", "in.jsonl:None"])
    assert member(keys, expected)[0].all() and (np.sort(keys) == keys).all()
    assert done_keys(OutputDir(str(tmp_path / "nothing")), "samples") == (None, 0)


def test_check_config_refuses_another_config(tmp_path, local_ray):
    out = OutputDir(str(tmp_path))
    out.write_table(table(result_row("1", config_hash="old")), "samples", "part-x.parquet")
    with pytest.raises(S2DError, match="another config") as e:
        check_config(out, "samples", "new")  # no manifest: asked of the files
    assert "old" in str(e.value) and "new" in str(e.value)
    write_manifest(out, "samples", config_hash="old")
    with pytest.raises(S2DError, match="another config"):
        check_config(out, "samples", "new")
    check_config(out, "samples", "old")
    check_config(OutputDir(str(tmp_path / "empty")), "samples", "new")


def test_stage_stats_of_rows_and_merged():
    stats = StageStats.of(table(
        result_row("1", generated_tokens=40, busy_s=1.0, agreement=1.0, samples=[{"view": "a", "text": "t", "answer": "1", "tokens": 20}] * 2),
        result_row("2", generated_tokens=20, busy_s=1.0, agreement=0.55),
        result_row("3", status="dropped", generated_tokens=20, busy_s=2.0, agreement=0.5, reason="no majority: 2 vs 2"),
        result_row("4", status="rejected", reason="invalid JSON: Expecting value (column 1)"),
        result_row("5", status="rejected", reason="invalid JSON: Extra data (column 9)"),
    ))
    stats.merge(StageStats.from_json(StageStats.of(table(
        result_row("6", status="kept", reason="ignored: kept rows have no reason", agreement=0.05))).to_json()))
    assert (stats.rows, stats.kept, stats.dropped, stats.rejected) == (6, 3, 1, 2)
    assert stats.samples == 2
    assert stats.generated_tokens == 80
    assert stats.busy_s == pytest.approx(4.0)
    d = stats.as_dict()
    assert d["tokens_per_s"] == 20.0
    assert d["agreement"] == {"0.0-0.1": 1, "0.5-0.6": 2, "0.9-1.0": 1}  # 1.0 falls in the top bucket
    assert d["reasons"] == {"invalid JSON": 2, "no majority": 1}


def test_stage_stats_groups_duplicate_id_reasons():
    stats = StageStats.of(table(*(result_row(str(i), status="rejected", reason=f"duplicate id '{i}' (first at in.jsonl:{i})")
                                  for i in range(12))))
    assert stats.as_dict()["reasons"] == {"duplicate id": 12}


def test_stage_stats_empty():
    d = StageStats.from_json("{}").as_dict()
    assert d["tokens_per_s"] == 0.0 and d["agreement"] == {} and d["reasons"] == {} and d["rows"] == 0


def test_screened_input_is_cut_into_engine_batches_in_one_light_task(local_ray):
    """The screen and the cut into engine batches run as one fused task at LIGHT_CPUS (Ray's own
    repartition asks a whole CPU, which stalled a 2-core node), and no block exceeds a batch."""
    from s2d_ray.stage.run import light_repartition

    rows = inputs([(f"r{i}", f"in.jsonl:{i}", i, None) for i in range(300)])
    ds = local_ray.data.from_arrow([rows.slice(0, 170), rows.slice(170)])
    ds = light_repartition(ds.map_batches(screen_rows, fn_kwargs={"screen": Screen()}, batch_format="pyarrow",
                                          num_cpus=0.5), 16).materialize()
    assert "MapBatches(screen_rows)->StreamingRepartition[num_rows_per_block=16" in ds.stats()
    sizes = [len(b["id"]) for b in ds.iter_batches(batch_size=None, batch_format="pyarrow")]
    assert sum(sizes) == 300 and max(sizes) <= 16
