"""A two-node Ray cluster on this machine (head + worker on 127.0.0.1) runs the whole loop
submitted with `ray job submit --working-dir .`, as a user does on a real cluster."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Ray's token authentication stays on: every node and the job client share this cluster's token.
TOKEN = secrets.token_hex(32)


def _ray(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([str(BIN / "ray"), *args], capture_output=True, text=True, env=env, **kw)


def test_job_submit_on_two_node_cluster(tmp_path):
    _ray("stop", "--force")
    head = _ray("start", "--head", "--node-ip-address=127.0.0.1", "--port=6390", "--dashboard-host=127.0.0.1",
                "--dashboard-port=8275", "--num-cpus=1", "--include-dashboard=true", timeout=180)
    assert head.returncode == 0, head.stderr
    try:
        worker = _ray("start", "--address=127.0.0.1:6390", "--node-ip-address=127.0.0.1", "--num-cpus=1", timeout=180)
        assert worker.returncode == 0, worker.stderr
        deadline = time.time() + 60
        while time.time() < deadline:
            status = _ray("status", "--address=127.0.0.1:6390")
            if status.stdout.count("node_") >= 2:
                break
            time.sleep(2)
        assert status.stdout.count("node_") >= 2, status.stdout
        out = tmp_path / "run"
        submit = _ray("job", "submit", "--address=http://127.0.0.1:8275", f"--working-dir={ROOT}",
                      "--runtime-env-json", json.dumps({"excludes": [".venv", "runs", ".git"]}), "--",
                      sys.executable, "jobs/distill.py", "--config", "configs/smoke.yaml", "--set", f"output_dir={out}",
                      timeout=2400, cwd=ROOT)
        assert submit.returncode == 0, submit.stdout[-4000:] + submit.stderr[-2000:]
        assert "succeeded" in (submit.stdout + submit.stderr).lower()
        report = json.loads((out / "report.json").read_text())
        assert set(report["systems"]) == {"system1", "system2", "distilled"}
        for sub in ("samples", "distill", "rejected", "model", "adapter"):
            assert (out / sub).is_dir(), sub
        assert (out / "report.md").exists() and (out / "report.png").exists()
    finally:
        _ray("stop", "--force")
