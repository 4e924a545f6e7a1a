"""Locations (s2d_ray.storage, s2d_ray.runtime.require_shared) against a real S3-compatible
server on 127.0.0.1: URIs keep their scheme, remote directories are fetched per content
version, and local paths are refused on clusters that span several hosts."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from s2d_ray import storage
from s2d_ray.config import load_config
from s2d_ray.errors import S2DError
from s2d_ray.outputs import OutputDir
from s2d_ray.runtime import require_shared


def test_output_dir_on_s3_keeps_the_scheme_and_round_trips(s3_env):
    bucket = s3_env.new_bucket()
    out = OutputDir(f"s3://{bucket}/run")
    assert out.uri("checkpoints") == f"s3://{bucket}/run/checkpoints"  # what Ray Train gets
    assert out.path("checkpoints") == f"{bucket}/run/checkpoints"  # inside out.fs only
    out.write_table(pa.table({"id": ["a", "b"], "status": ["kept", "dropped"]}), "samples", "part-0.parquet")
    out.write_text('{"x": 1}', "report.json")
    assert out.read_json("report.json") == {"x": 1}
    import pyarrow.parquet as pq

    assert pq.read_table(out.path("samples", "part-0.parquet"), filesystem=out.fs)["id"].to_pylist() == ["a", "b"]
    objects = sorted(k for k in s3_env.keys(bucket) if not k.endswith("/"))  # pyarrow adds directory markers
    assert objects == ["run/report.json", "run/samples/part-0.parquet"]  # no temp files left


def test_local_output_dir_uri_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert OutputDir("runs/x").uri("model") == f"{tmp_path}/runs/x/model"
    assert storage.join("file:///data/run", "model") == "file:///data/run/model"
    assert storage.is_local("file:///data") and storage.is_local("runs/x") and not storage.is_local("s3://b/x")


def test_fetch_dir_from_s3_refetches_when_the_files_change(s3_env, tmp_path):
    bucket = s3_env.new_bucket()
    client = s3_env.client()
    client.put_object(Bucket=bucket, Key="run/model/config.json", Body=b'{"v": 1}')
    client.put_object(Bucket=bucket, Key="run/model/sub/tok.json", Body=b"{}")
    first = storage.fetch_dir(f"s3://{bucket}/run/model", tmp_path / "cache")
    assert (first / "config.json").read_text() == '{"v": 1}' and (first / "sub" / "tok.json").is_file()
    assert storage.fetch_dir(f"s3://{bucket}/run/model", tmp_path / "cache") == first  # cached
    client.put_object(Bucket=bucket, Key="run/model/config.json", Body=b'{"v": 22}')
    second = storage.fetch_dir(f"s3://{bucket}/run/model", tmp_path / "cache")
    assert second != first and (second / "config.json").read_text() == '{"v": 22}'
    with pytest.raises(S2DError, match="no files"):
        storage.fetch_dir(f"s3://{bucket}/nothing-here", tmp_path / "cache")


def test_model_from_s3_resolves_on_this_node(s3_env, tmp_path, monkeypatch):
    from s2d_ray.models import resolve_model

    monkeypatch.setenv("S2D_CACHE", str(tmp_path / "cache"))
    bucket = s3_env.new_bucket()
    s3_env.client().put_object(Bucket=bucket, Key="run/model/config.json", Body=b"{}")
    s3_env.client().put_object(Bucket=bucket, Key="run/adapter/adapter_config.json", Body=b"{}")
    assert Path(resolve_model(f"s3://{bucket}/run/model")).joinpath("config.json").is_file()
    assert Path(resolve_model(f"s3://{bucket}/run/adapter", marker="adapter_config.json")).is_dir()
    with pytest.raises(S2DError, match="no config.json"):
        resolve_model(f"s3://{bucket}/run/adapter")


def _mounts(tmp_path: Path, *lines: str) -> str:
    f = tmp_path / "mounts"
    f.write_text("".join(f"{line}\n" for line in lines))
    return str(f)


def test_shared_mounts_are_recognised_by_the_longest_mount_point(tmp_path):
    mounts = _mounts(tmp_path, "/dev/vda1 / ext4 rw 0 0", "fs-1.efs:/ /mnt/efs nfs4 rw 0 0",
                     "gcsfuse /mnt/gcs fuse.gcsfuse rw 0 0", "tmpfs /mnt/efs/scratch tmpfs rw 0 0")
    assert storage.is_shared_mount("/mnt/efs/runs/a", mounts)
    assert storage.is_shared_mount("/mnt/gcs/x", mounts)
    assert not storage.is_shared_mount("/mnt/efs/scratch/a", mounts)  # a local mount inside the share
    assert not storage.is_shared_mount("/home/me/runs", mounts)
    assert not storage.is_shared_mount("/mnt/efsx", mounts)  # a prefix of a name is not a mount


def test_local_paths_are_refused_only_on_a_multi_host_cluster(tmp_path):
    two_hosts = {"10.0.0.1", "10.0.0.2"}
    with pytest.raises(S2DError, match=r"output_dir: .* local path, but this Ray cluster has nodes on 2 hosts .* s3://"):
        require_shared("output_dir", str(tmp_path), two_hosts)
    with pytest.raises(S2DError, match="2 hosts"):
        require_shared("output_dir", f"file://{tmp_path}", two_hosts)
    require_shared("output_dir", str(tmp_path), {"10.0.0.1"})  # one host (loopback clusters too)
    require_shared("output_dir", "s3://bucket/run", two_hosts)
    require_shared("output_dir", "gs://bucket/run", two_hosts)


def test_config_locations_are_the_paths_a_stage_touches():
    cfg = load_config(None, ["output_dir=s3://b/run", "data.train=task:biased_qa", "data.test=/data/test.jsonl",
                             "model=smollm2-135m-instruct"])
    assert cfg.locations("output_dir", "data.train", "data.test", "model") == [
        ("output_dir", "s3://b/run"), ("data.test", "/data/test.jsonl")]
    cfg = load_config(None, ["model=s3://b/base", "data.train=Qwen/x"])
    assert cfg.locations("model") == [("model", "s3://b/base")]
    assert load_config(None, ["model=Qwen/Qwen2.5-7B-Instruct"]).locations("model") == []


def test_input_rows_read_from_s3(s3_env):
    import ray

    from s2d_ray.inputs import read_inputs

    bucket = s3_env.new_bucket()
    s3_env.client().put_object(Bucket=bucket, Key="data/in.jsonl",
                               Body=b'{"id": "a", "input": "What is 2 + 2?", "answer": "4"}\n{"input": ""}\n')
    ray.init(address="local", num_cpus=1, include_dashboard=False, runtime_env={"env_vars": s3_env.env})
    try:
        rows = sorted(read_inputs(f"s3://{bucket}/data/in.jsonl").take_all(), key=lambda r: r["source"])
    finally:
        ray.shutdown()
    assert [(r["id"], r["input"], r["answer"], r["reject_reason"]) for r in rows] == [
        ("a", "What is 2 + 2?", "4", None), (None, None, None, "field 'input' is empty")]
    assert rows[0]["source"].endswith("data/in.jsonl:1")
