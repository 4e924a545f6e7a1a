"""Row validation and JSONL parsing (s2d_ray.inputs), without Ray."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from s2d_ray.errors import S2DError
from s2d_ray.inputs import (
    DEFAULT_TASK_ROWS,
    INPUT_SCHEMA,
    parse_jsonl,
    read_inputs,
    stable_id,
    task_rows,
    validate_record,
    validate_table,
)
from s2d_ray.tasks import parse_task_source

SRC = "data/in.jsonl:7"
# The documented row fields (rows may carry more columns, e.g. bookkeeping added downstream).
KEYS = {"id", "input", "answer", "meta", "source", "reject_reason"}


def _ok(row):
    assert KEYS <= set(row)
    assert row["reject_reason"] is None, row
    return row


def _rejected(row, *words):
    assert KEYS <= set(row)
    assert row["reject_reason"], row
    for w in words:
        assert w in row["reject_reason"], (w, row["reject_reason"])
    return row


# --------------------------------------------------------------------------- validate_record


def test_good_row():
    row = _ok(validate_record({"id": "q1", "input": "What is 2+2?", "answer": "4"}, SRC))
    assert {k: row[k] for k in KEYS} == {
        "id": "q1", "input": "What is 2+2?", "answer": "4", "meta": "{}", "source": SRC, "reject_reason": None,
    }


def test_good_row_without_answer():
    row = _ok(validate_record({"id": "q1", "input": "Tell me a joke."}, SRC))
    assert row["answer"] is None


@pytest.mark.parametrize("answer, expected", [(4, "4"), (2.5, "2.5"), (True, "True"), ("", "")])
def test_scalar_answers_become_strings(answer, expected):
    assert _ok(validate_record({"id": "a", "input": "q", "answer": answer}, SRC))["answer"] == expected


def test_missing_input():
    row = _rejected(validate_record({"id": "q1", "answer": "4"}, SRC), "'input'", "missing")
    assert row["source"] == SRC
    assert row["input"] is None


def test_null_input_is_missing():
    _rejected(validate_record({"id": "q1", "input": None}, SRC), "'input'", "missing")


@pytest.mark.parametrize("value, typename", [(42, "int"), (["a"], "list"), ({"t": "x"}, "dict"), (True, "bool")])
def test_non_string_input(value, typename):
    row = _rejected(validate_record({"id": "q1", "input": value}, SRC), "'input'", "must be a string", typename)
    assert row["input"] is None


@pytest.mark.parametrize("text", ["", "   ", "\n\t  \n"])
def test_whitespace_input(text):
    _rejected(validate_record({"id": "q1", "input": text}, SRC), "'input'", "empty")


def test_int_id_becomes_string():
    row = _ok(validate_record({"id": 17, "input": "q"}, SRC))
    assert row["id"] == "17"
    assert isinstance(row["id"], str)


@pytest.mark.parametrize("rid, typename", [({"x": 1}, "dict"), ([1], "list"), (True, "bool"), (1.5, "float")])
def test_bad_id_types_rejected(rid, typename):
    row = _rejected(validate_record({"id": rid, "input": "q"}, SRC), "'id'", typename)
    assert row["id"] is None


def test_missing_id_gets_a_stable_derived_id():
    a = _ok(validate_record({"input": "What is the capital of France?"}, "a.jsonl:1"))
    b = _ok(validate_record({"input": "What is the capital of France?", "answer": "Paris"}, "b.jsonl:9"))
    c = _ok(validate_record({"input": "What is the capital of Spain?"}, "a.jsonl:2"))
    assert a["id"] == b["id"] == stable_id("What is the capital of France?")
    assert a["id"] != c["id"]
    assert a["id"].startswith("h") and len(a["id"]) == 17
    # Known value: the id is a content hash, stable across processes and versions of Python.
    assert stable_id("q") == "h8e35c2cd3bf6641b"


@pytest.mark.parametrize("rid", [None, "", "   "])
def test_null_or_blank_id_gets_a_derived_id(rid):
    assert _ok(validate_record({"id": rid, "input": "q"}, SRC))["id"] == stable_id("q")


@pytest.mark.parametrize("answer, typename", [(["Paris", "paris"], "list"), ({"a": 1}, "dict")])
def test_non_scalar_answer_rejected(answer, typename):
    _rejected(validate_record({"id": "q", "input": "Capital of France?", "answer": answer}, SRC), "'answer'", typename)


def test_extra_fields_kept_in_meta_json():
    obj = {
        "id": "q1", "input": "Which is better?", "answer": "A",
        "response_a": "Paris.", "response_b": "Lyon, I think.", "tags": ["geo", "fr"], "score": 0.5,
        "nested": {"k": [1, 2]}, "note": "café",
    }
    row = _ok(validate_record(obj, SRC))
    meta = json.loads(row["meta"])
    assert meta == {
        "response_a": "Paris.", "response_b": "Lyon, I think.", "tags": ["geo", "fr"], "score": 0.5,
        "nested": {"k": [1, 2]}, "note": "café",
    }
    assert "café" in row["meta"]  # not \u-escaped
    for k in ("id", "input", "answer"):
        assert k not in meta


def test_meta_tolerates_non_json_values():
    import datetime

    row = _ok(validate_record({"input": "q", "when": datetime.date(2024, 1, 2)}, SRC))
    assert json.loads(row["meta"]) == {"when": "2024-01-02"}


@pytest.mark.parametrize("obj, typename", [([1, 2], "list"), ("text", "str"), (3, "int")])
def test_non_object_rows(obj, typename):
    _rejected(validate_record(obj, SRC), typename, "not an object")


# --------------------------------------------------------------------------- parse_jsonl_file


def _parse(data: bytes, path: str = "/data/in.jsonl"):
    return parse_jsonl(data, path)


def test_parse_good_file():
    data = b"".join(
        json.dumps(r, ensure_ascii=False).encode() + b"\n"
        for r in [{"id": "a", "input": "Qu'est-ce que c'est ?"}, {"id": 2, "input": "q2", "answer": "x", "lang": "en"}]
    )
    rows = _parse(data)
    assert [r["id"] for r in rows] == ["a", "2"]
    assert rows[0]["input"] == "Qu'est-ce que c'est ?"
    assert json.loads(rows[1]["meta"]) == {"lang": "en"}
    assert [r["source"] for r in rows] == ["/data/in.jsonl:1", "/data/in.jsonl:2"]
    assert all(r["reject_reason"] is None for r in rows)


def test_parse_mixed_file_line_numbers_and_reasons():
    lines = [
        b'{"id": "a", "input": "q1"}',  # 1 ok
        b"",  # 2 blank: skipped
        b"   \t",  # 3 whitespace only: skipped
        b'{"input": "q2"}',  # 4 ok, derived id
        b'\xff\xfe{"input": "bad bytes"}',  # 5 invalid UTF-8
        b'{"input": ',  # 6 broken JSON
        b"[1, 2, 3]",  # 7 JSON array
        b'{"id": "b"}',  # 8 missing input
        b'{"id": "c", "input": 5}',  # 9 non-string input
        b'{"id": "d", "input": "  "}',  # 10 whitespace input
        b'{"id": {"x": 1}, "input": "q"}',  # 11 dict id
        b'{"id": "e", "input": "q", "answer": ["x"]}',  # 12 list answer
        b'{"id": 12, "input": "q3", "extra": true}\r',  # 13 ok, CRLF
        b"",  # trailing newline
    ]
    rows = _parse(b"\n".join(lines), path="s3://bucket/in.jsonl")
    by_line = {int(r["source"].rsplit(":", 1)[1]): r for r in rows}
    assert sorted(by_line) == [1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    assert all(r["source"] == f"s3://bucket/in.jsonl:{n}" for n, r in by_line.items())
    assert all(KEYS <= set(r) for r in rows)

    kept = {n for n, r in by_line.items() if r["reject_reason"] is None}
    assert kept == {1, 4, 13}
    assert by_line[4]["id"] == stable_id("q2")
    assert by_line[13]["id"] == "12" and json.loads(by_line[13]["meta"]) == {"extra": True}

    assert "UTF-8" in by_line[5]["reject_reason"] and "byte 0" in by_line[5]["reject_reason"]
    assert by_line[6]["reject_reason"].startswith("invalid JSON")
    assert "column" in by_line[6]["reject_reason"]
    assert "list" in by_line[7]["reject_reason"] and "not an object" in by_line[7]["reject_reason"]
    assert "'input'" in by_line[8]["reject_reason"] and "missing" in by_line[8]["reject_reason"]
    assert "'input'" in by_line[9]["reject_reason"] and "int" in by_line[9]["reject_reason"]
    assert "'input'" in by_line[10]["reject_reason"] and "empty" in by_line[10]["reject_reason"]
    assert "'id'" in by_line[11]["reject_reason"] and "dict" in by_line[11]["reject_reason"]
    assert "'answer'" in by_line[12]["reject_reason"] and "list" in by_line[12]["reject_reason"]
    for n in (5, 6, 7):
        assert by_line[n]["id"] is None and by_line[n]["input"] is None


def test_invalid_utf8_byte_offset():
    rows = _parse('{"input": "caf'.encode() + b"\xe9" + b'"}\n')
    assert len(rows) == 1
    assert rows[0]["reject_reason"] == "invalid UTF-8 at byte 14"  # len(b'{"input": "caf') == 14


def test_only_blank_lines_give_no_rows():
    assert _parse(b"\n\n   \n\r\n") == []
    assert _parse(b"") == []


def test_validated_rows_fit_the_input_schema():
    rows = _parse(b'{"id":"a","input":"q"}\n{"input": 3}\nnot json\n')
    table = pa.Table.from_pylist(rows, schema=INPUT_SCHEMA)
    assert table.num_rows == 3
    assert table.column("reject_reason").null_count == 1


# --------------------------------------------------------------------------- parquet batches and tasks


def test_validate_table_sources_and_rejects():
    batch = pa.Table.from_pylist(
        [
            {"id": "a", "input": "q1", "answer": "x"},
            {"id": "b", "input": "", "answer": None},
        ]
    )
    out = validate_table(batch, "/d/f.parquet", first_row=7)
    assert out.schema == INPUT_SCHEMA
    rows = out.to_pylist()
    assert [r["source"] for r in rows] == ["/d/f.parquet#7", "/d/f.parquet#8"]
    assert rows[0]["reject_reason"] is None
    assert "'input'" in rows[1]["reject_reason"]
    assert json.loads(rows[0]["meta"]) == {}  # the path column is not user metadata


def test_parse_task_source():
    assert parse_task_source("task:biased_qa") == ("biased_qa", {})
    assert parse_task_source("task:coin_flip?k=3") == ("coin_flip", {"k": "3"})
    assert parse_task_source("task:biased_qa?variants=unbiased") == ("biased_qa", {"variants": ["unbiased"]})
    assert parse_task_source("task:biased_qa?variants=unbiased,suggest_wrong&x=1") == (
        "biased_qa", {"variants": ["unbiased", "suggest_wrong"], "x": "1"},
    )


def test_task_rows_are_validated_with_meta():
    rows = task_rows("task:coin_flip?k=2", 5, seed=0, split="test")
    assert len(rows) == 5
    for r in rows:
        assert r["reject_reason"] is None
        assert r["source"] == "task:coin_flip"
        assert r["id"].startswith("coin_flip-")
        assert r["answer"] in ("yes", "no")
        assert json.loads(r["meta"]) == {"split": "test"}


def test_task_rows_default_to_a_fixed_count():
    assert len(task_rows("task:biased_qa", None, seed=0, split="train")) == DEFAULT_TASK_ROWS


# --------------------------------------------------------------------------- parallel reads (Ray Data)

MIXED = [b'{"id": "a", "input": "q1"}', b"", b"   \t", b'{"input": "q2"}', b'\xff\xfe{"input": "bad"}', b'{"input": ',
         b"[1, 2, 3]", b'{"id": "b"}', b'{"id": 12, "input": "q3 ' + b"x" * 50 + b'", "extra": true}\r',
         b'{"id": "a", "input": "a duplicate"}', b'{"input": "no newline at the end"}']


@pytest.mark.parametrize("chunk", [1, 3, 7, 16, 50, 10_000])
def test_jsonl_split_across_read_tasks_reads_every_line_once_with_its_number(tmp_path, local_ray, chunk):
    path = tmp_path / "in.jsonl"
    data = b"\n".join(MIXED)
    path.write_bytes(data)
    whole = parse_jsonl(data, str(path))
    rows = sorted(read_inputs(str(path), chunk_bytes=chunk).take_all(), key=lambda r: r["seq"])
    assert rows == whole and len(rows) == 9
    for n in (1, 4, 9, 20):  # data.n_train: the same first n rows however the file is split
        first = sorted(read_inputs(str(path), n=n, chunk_bytes=chunk).take_all(), key=lambda r: r["seq"])
        assert first == whole[:n]


def test_parquet_split_by_row_group_names_each_row(tmp_path, local_ray):
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{"id": str(i), "input": f"q{i}" if i % 5 else ""} for i in range(100)])
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=7)
    rows = sorted(read_inputs(str(tmp_path / "in.parquet")).take_all(), key=lambda r: r["seq"])
    assert [r["source"] for r in rows] == [f"{tmp_path}/in.parquet#{i}" for i in range(100)]
    assert sum(r["reject_reason"] is not None for r in rows) == 20
    assert [r["id"] for r in sorted(read_inputs(str(tmp_path / "in.parquet"), n=10).take_all(), key=lambda r: r["seq"])] == [
        str(i) for i in range(10)]


def test_a_directory_of_files_is_read_in_path_order(tmp_path, local_ray):
    (tmp_path / "b.jsonl").write_text('{"id": "x", "input": "from b"}\n')
    (tmp_path / "a.jsonl").write_text('{"id": "x", "input": "from a"}\n')
    rows = sorted(read_inputs(str(tmp_path)).take_all(), key=lambda r: r["seq"])
    assert [r["source"] for r in rows] == [f"{tmp_path}/a.jsonl:1", f"{tmp_path}/b.jsonl:1"]
