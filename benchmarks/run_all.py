"""`make bench`: run each benchmark in its own process and write their ratios to bench.json.

Each benchmark prints its measurements and, on its last line, a JSON object of ratios
({"P1": ...}). A benchmark that fails is reported and left out of bench.json, never faked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ["sampling.py", "training.py", "serving.py"]


def main() -> int:
    results: dict[str, float] = {}
    failed = []
    for name in BENCHMARKS:
        print(f"=== benchmarks/{name}", flush=True)
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name)], capture_output=True, text=True, cwd=ROOT)
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        for ln in lines[:-1]:
            if ln.startswith(("P", "  ")):
                print(ln)
        try:
            results.update(json.loads(lines[-1]))
        except (IndexError, json.JSONDecodeError):
            failed.append(name)
            print(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}", flush=True)
            continue
        subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True)
    (ROOT / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"bench.json: {results}" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
