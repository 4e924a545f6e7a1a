"""Where a benchmark leaves its figures: runs/bench/<benchmark>.json, read by run_all.py into
bench.json (never parsed from whatever its stdout happens to end with)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "runs" / "bench"


def path_of(name: str) -> Path:
    return BENCH_DIR / f"{name}.json"


def write(name: str, figures: dict[str, float]) -> None:
    """Record ``figures`` (ratio name -> value) of benchmark ``name`` (its file stem)."""
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path_of(name).write_text(json.dumps(figures, indent=2) + "\n")
    print(f"{name}: {figures} -> {path_of(name)}", flush=True)
