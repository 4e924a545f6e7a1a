"""Property-based: whatever bytes a JSONL input file holds, parsing never crashes; every
non-blank line becomes exactly one row, good rows are complete, bad rows carry a reason."""

from __future__ import annotations

import json

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from s2d_ray.inputs import INPUT_SCHEMA, parse_jsonl, validate_table

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=6)
records = st.dictionaries(st.sampled_from(["id", "input", "answer", "extra", "response_a"]), values, max_size=5)
good = st.fixed_dictionaries({"input": st.text(min_size=1, max_size=40).filter(str.strip)}, optional={"id": st.text(min_size=1, max_size=10), "answer": st.text(max_size=10)})
lines = st.one_of(
    records.map(lambda r: json.dumps(r).encode()),
    good.map(lambda r: json.dumps(r, ensure_ascii=False).encode()),
    st.binary(max_size=40),  # invalid UTF-8, broken JSON, arrays, numbers
    st.just(b'{"input": "unterminated'),
    st.just(b"   "),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(lines, max_size=12))
def test_any_jsonl_file_parses_without_crashing(file_lines):
    data = b"\n".join(l.replace(b"\n", b" ") for l in file_lines)
    rows = parse_jsonl(data, "f.jsonl")
    expected = [i for i, l in enumerate(data.split(b"\n"), start=1) if l.strip()]
    assert [int(r["source"].rsplit(":", 1)[1]) for r in rows] == expected
    for r in rows:
        if r["reject_reason"] is None:
            assert isinstance(r["input"], str) and r["input"].strip()
            assert isinstance(r["id"], str) and r["id"]
            assert r["answer"] is None or isinstance(r["answer"], str)
            json.loads(r["meta"])
        else:
            assert isinstance(r["reject_reason"], str) and r["reject_reason"]
    pa.Table.from_pylist(rows, schema=INPUT_SCHEMA)  # always fits the schema


@settings(max_examples=100, deadline=None)
@given(st.lists(st.fixed_dictionaries({"input": st.one_of(st.none(), st.text(max_size=20)), "id": st.one_of(st.none(), st.text(max_size=5))}), min_size=1, max_size=8))
def test_parquet_rows_validate_to_schema(recs):
    table = validate_table(pa.Table.from_pylist(recs))
    assert table.schema == INPUT_SCHEMA and table.num_rows == len(recs)
    for rec, row in zip(recs, table.to_pylist()):
        ok = isinstance(rec["input"], str) and rec["input"].strip()
        assert (row["reject_reason"] is None) == bool(ok)


class _File:
    """What _owned reads of a pyarrow random-access file."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read_at(self, n: int, offset: int) -> bytes:
        return self.data[offset: offset + n]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"")), st.integers(min_value=1, max_value=64),
       st.integers(min_value=1, max_value=8))
def test_byte_ranges_own_each_line_once(data, chunk, step):
    """Split anywhere, the ranges' lines put back together are the file, and their line counts
    number every line: a line belongs to the range that holds its first byte."""
    from s2d_ray.inputs import _lines, _owned

    f = _File(data)
    owned = [_owned(f, len(data), s, min(s + chunk, len(data)), step) for s in range(0, max(len(data), 1), chunk)]
    assert b"".join(owned) == data
    lines = [_lines(o) for o in owned]
    expected = data.split(b"\n")[:-1] if data.endswith(b"\n") else (data.split(b"\n") if data else [])
    assert sum(n for n, _ in lines) == len(expected)
    assert sum(r for _, r in lines) == sum(1 for line in expected if line.strip())
