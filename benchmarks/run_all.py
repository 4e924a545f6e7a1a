"""`make bench`: run each benchmark in its own process and merge their figures into bench.json.

Each benchmark writes its ratios to runs/bench/<name>.json (benchmarks/results.py); one that
fails, or writes nothing, is reported and left out of bench.json, never faked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import ROOT, path_of  # noqa: E402

BENCHMARKS = ["sampling", "training", "serving", "scale"]


def main() -> int:
    results: dict[str, float] = {}
    failed = []
    for name in BENCHMARKS:
        print(f"=== benchmarks/{name}.py", flush=True)
        path_of(name).unlink(missing_ok=True)
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py")], capture_output=True, text=True, cwd=ROOT)
        subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True)
        for line in proc.stdout.splitlines():
            if line.startswith(("P", "  ")):
                print(line)
        if proc.returncode != 0 or not path_of(name).exists():
            failed.append(name)
            print(f"{name} failed (exit {proc.returncode}):\n{proc.stdout[-1500:]}\n{proc.stderr[-2500:]}", flush=True)
            continue
        results.update(json.loads(path_of(name).read_text()))
    (ROOT / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"bench.json: {results}" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
