"""The sampling stage on real Ray with an instant fake engine in place of vLLM
(benchmarks/fake_engine.py): a run killed part-way and resumed ends with exactly the rows of an
uninterrupted run (ids, statuses, targets, rejections), duplicates and bad rows reported as
before; the resumed run samples only what the stopped one had not written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
N_GOOD = 120
BAD = [
    b'{"id": "empty", "input": "   "}',
    b'{"id": "missing"}',
    b'{"id": "number", "input": 42}',
    b'{"input": "broken',
    b'\xff\xfe{"input": "bad utf-8"}',
    json.dumps({"id": "huge", "input": "What is 1 + 2? " + "very " * 2000}).encode(),  # longer than the context
    b'{"id": "q7", "input": "a second row with the id of row 7"}',
]


def _inputs(path: Path) -> None:
    lines = [json.dumps({"id": f"q{i}", "input": f"I think it is 3. What is {i} + {i + 1}?"}).encode() for i in range(N_GOOD)]
    for k, bad in enumerate(BAD):  # spread the bad rows over the file
        lines.insert(10 + 15 * k, bad)
    path.write_bytes(b"\n".join(lines) + b"\n")


def _start(out: Path, data: Path, delay: float = 0.0) -> subprocess.Popen:
    sets = [f"output_dir={out}", f"data.train={data}", "data.n_train=null", "sample.n_samples=2",
            "sample.actors.batch_size=4", "sample.actors.max_concurrent_batches=2"]
    env = {**os.environ, "S2D_FAKE_ENGINE_DELAY_S": str(delay)}
    return subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "fake_engine.py"), "sample", str(ROOT / "configs" / "smoke.yaml"),
                             *[a for s in sets for a in ("--set", s)]],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)


def _finish(proc: subprocess.Popen) -> dict:
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-3000:]
    return json.loads(next(line for line in log.splitlines() if line.startswith("SUMMARY "))[8:])


def _rows(out: Path, subdir: str, columns: list[str]) -> Counter:
    files = json.loads((out / subdir / "_manifest.json").read_text())["files"] if subdir != "samples" else sorted(
        f.name for f in (out / subdir).glob("part-*.parquet"))
    return Counter(tuple(r[c] for c in columns) for f in files for r in pq.read_table(out / subdir / f, columns=columns).to_pylist())


def test_a_killed_run_resumed_gives_the_rows_of_an_uninterrupted_run(tmp_path):
    data = tmp_path / "in.jsonl"
    _inputs(data)
    whole = _finish(_start(tmp_path / "whole", data))
    assert whole["inputs"] == N_GOOD + len(BAD) and whole["this_run"]["rows"] == N_GOOD + len(BAD)

    out = tmp_path / "resumed"
    proc = _start(out, data, delay=0.3)
    deadline = time.time() + 300
    while len(list((out / "samples").glob("part-*.parquet"))) < 3:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:] if proc.poll() is not None else "slow"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True)
    written = sum(_rows(out, "samples", ["id"]).values())
    assert 0 < written < N_GOOD, written

    resumed = _finish(_start(out, data))
    assert resumed["this_run"]["rows"] == N_GOOD + len(BAD) - written  # finished rows are not sampled again
    assert resumed["this_run"]["skipped_done"] == written

    columns = ["id", "source", "status", "target", "reason"]
    assert _rows(out, "samples", columns) == _rows(tmp_path / "whole", "samples", columns)
    assert _rows(out, "distill", ["id", "input", "target"]) == _rows(tmp_path / "whole", "distill", ["id", "input", "target"])
    rejected = _rows(out, "rejected", ["id", "source", "reason"])
    assert rejected == _rows(tmp_path / "whole", "rejected", ["id", "source", "reason"])
    reasons = sorted(reason for (_, _, reason) in rejected)
    expected = ["duplicate id 'q7' (first at " + f"{data}:8)", "field 'input' is empty", "field 'input' must be a string, got int",
                "input too long: ", "invalid JSON: Unterminated string", "invalid UTF-8 at byte 0", "missing field 'input'"]
    assert len(reasons) == len(expected) and all(r.startswith(e) for r, e in zip(reasons, expected)), reasons
    assert resumed["rejected"] == len(BAD) and resumed["inputs"] == whole["inputs"]
