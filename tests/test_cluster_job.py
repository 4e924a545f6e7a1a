"""Where users run it: a Ray cluster of two nodes, with the run's output in S3 (a local
S3-compatible server on 127.0.0.1), the whole loop submitted with `ray job submit
--working-dir .`, and the result served from the bucket. A second test stands a node on
another loopback address (another "host") and checks that a local output_dir is refused."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

import served

from conftest import BIN, S3Server, free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
# Ray's token authentication stays on: every node and the job client share this cluster's token.
TOKEN = secrets.token_hex(32)
GCS_PORT, DASHBOARD_PORT = 6390, 8275  # outside Ray's worker port range (10002-19999)


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN, **(extra or {})}
    env.pop("RAY_ADDRESS", None)
    return env


def _ray(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], capture_output=True, text=True, env=env or _env(), **kw)


def _start_cluster(worker_ip: str, env: dict[str, str]) -> None:
    """Head (no dashboard needed unless jobs are submitted) + one worker node, 1 CPU each."""
    _ray("stop", "--force")
    head = _ray("start", "--head", "--node-ip-address=127.0.0.1", f"--port={GCS_PORT}", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={DASHBOARD_PORT}", "--num-cpus=1", "--include-dashboard=true", env=env, timeout=180)
    assert head.returncode == 0, head.stderr
    worker = _ray("start", f"--address=127.0.0.1:{GCS_PORT}", f"--node-ip-address={worker_ip}", "--num-cpus=1",
                  env=env, timeout=180)
    assert worker.returncode == 0, worker.stderr
    deadline = time.time() + 60
    while time.time() < deadline:
        status = _ray("status", f"--address=127.0.0.1:{GCS_PORT}", env=env)
        if status.stdout.count("node_") >= 2:
            return
        time.sleep(2)
    pytest.fail(f"second node did not join: {status.stdout}")


def _serve_answers(model_uri: str, env: dict[str, str], log: Path) -> str:
    """`s2d serve MODEL_URI` on a fresh local Ray; the first chat answer through the openai client."""
    from openai import OpenAI

    port = free_port()
    proc = served.start(model_uri, port, log, "--api-key", "k", env=env)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0, timeout=120)
        reply = client.chat.completions.create(model="run", messages=[{"role": "user", "content": "What is 2 + 3?"}],
                                               max_tokens=8)
        return reply.choices[0].message.content
    finally:
        served.stop(proc)
        _ray("stop", "--force")


def test_job_on_two_node_cluster_writes_to_s3_and_serves_from_it(s3_server: S3Server, tmp_path):
    bucket = s3_server.new_bucket()
    env = _env(s3_server.env)  # the endpoint and credentials on every node and the client
    _start_cluster("127.0.0.1", env)
    try:
        submit = _ray("job", "submit", f"--address=http://127.0.0.1:{DASHBOARD_PORT}", f"--working-dir={ROOT}",
                      "--runtime-env-json", json.dumps({"excludes": [".venv", "runs", ".git"]}), "--",
                      sys.executable, "jobs/distill.py", "--config", "configs/smoke.yaml",
                      "--set", f"output_dir=s3://{bucket}/run", env=env, timeout=2400, cwd=ROOT)
        assert submit.returncode == 0, submit.stdout[-4000:] + submit.stderr[-2000:]
        assert "succeeded" in (submit.stdout + submit.stderr).lower()
    finally:
        _ray("stop", "--force", env=env)
    keys = s3_server.keys(bucket, "run/")
    for prefix in ("samples/", "distill/", "rejected/", "model/", "adapter/"):
        assert any(k.startswith(f"run/{prefix}") and not k.endswith("/") for k in keys), prefix
    assert not [k for k in keys if k.startswith("run/checkpoints/")]  # Ray Train's, deleted once model/ is written
    for name in ("report.json", "report.md", "report.png", "model/config.json", "model/model.safetensors",
                 "adapter/adapter_config.json"):
        assert f"run/{name}" in keys, name
    report = json.loads(s3_server.client().get_object(Bucket=bucket, Key="run/report.json")["Body"].read())
    assert set(report["systems"]) == {"system1", "system2", "distilled"}
    assert report["output_dir"] == f"s3://{bucket}/run"
    assert report["systems"]["distilled"]["n"] == 8  # the distilled model, fetched from the bucket, answered

    answer = _serve_answers(f"s3://{bucket}/run/model", env, tmp_path / "serve.log")
    assert answer.strip()


def test_local_output_dir_is_refused_when_a_node_is_on_another_host(tmp_path):
    env = _env()
    _start_cluster("127.0.0.2", env)  # a second loopback address stands in for another host
    try:
        out = tmp_path / "run"
        run = subprocess.run([str(BIN / "s2d"), "sample", str(ROOT / "configs" / "smoke.yaml"), "--set", f"output_dir={out}"],
                             capture_output=True, text=True, env={**env, "RAY_ADDRESS": f"127.0.0.1:{GCS_PORT}"}, timeout=300)
    finally:
        _ray("stop", "--force", env=env)
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"s2d: output_dir: {out} is a local path") and "2 hosts" in last and "s3://" in last, last
    assert not out.exists()  # refused before anything was written
