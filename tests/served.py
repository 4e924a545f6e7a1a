"""`s2d serve` as a test starts it: a process group on a port, healthy before the test talks to it,
stopped with Ctrl-C (SIGINT to the group, as a terminal sends it) or SIGTERM (to the process, as
kill, systemd and Kubernetes send it), killed if it does not stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

S2D = str(Path(sys.executable).parent / "s2d")


def start(model: str, port: int, log: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`s2d serve MODEL --port PORT ARGS...`, its output in ``log``; returns once /health is 200."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        proc = subprocess.Popen([S2D, "serve", model, "--port", str(port), *args], stdout=f, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    deadline = time.time() + 300
    while True:
        assert proc.poll() is None, f"s2d serve exited early:\n{log.read_text()[-3000:]}"
        assert time.time() < deadline, f"s2d serve not healthy in 300 s:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(2)


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT) -> int | None:
    """Stop the server; its exit status, or None where it had to be killed after 60 s."""
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None
