"""Shared entry for `ray job submit` scripts: parse --config/--set, join the cluster, run a stage."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

# Run from the job's working_dir: make the repository's package importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Load torch (and its OpenMP/oneMKL) before Ray Data starts pyarrow's thread pools: a job
# driver that imported torch only at the train stage died in oneMKL's loader on this CPU.
import torch  # noqa: E402,F401


def main(stage: str, run: Callable[[Any], Any], describe: Callable[[Any], str]) -> int:
    parser = argparse.ArgumentParser(description=f"s2d {stage} as a Ray job (joins the cluster from RAY_ADDRESS)")
    parser.add_argument("--config", required=True, help="YAML config (paths and URIs as seen from the cluster)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    from s2d_ray.config import load_config
    from s2d_ray.errors import S2DError

    try:
        cfg = load_config(args.config, args.overrides)
        print(describe(run(cfg)), flush=True)
    except S2DError as e:
        print(f"s2d job {stage}: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # noqa: BLE001 - a job fails with one clear line (Ray keeps the traceback in its logs)
        print(f"s2d job {stage} failed: {type(e).__name__}: {e}", file=sys.stderr)
        raise
    return 0
