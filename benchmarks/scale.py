"""P6: the sampling stage at scale, PLUMBING ONLY: an instant fake engine stands in for vLLM
(benchmarks/fake_engine.py), so the figures measure Ray Data, the row coroutines, the writes and
the driver, never a model.

s2a, 8 samples of ~300 characters per input, inputs from one JSONL file (default 1,000,000 rows).
P6_rows_per_s     inputs / wall of a fresh `sample()` (Ray start included)
P6_driver_rss_mb  peak RSS of this (the driver) process over the whole benchmark
P6_resume_s       wall of `sample()` again with everything done (nothing to sample)
P6_resume_half_s  wall of `sample()` after half of samples/ was deleted (the other half is run)
P6_files          files in samples/ after the fresh run
Settings: configs/smoke.yaml with scale_settings() below (--set overrides them).

    python benchmarks/scale.py --rows 10000        # one size per process (peak RSS is per process)
    python benchmarks/scale.py --ray-checkpoint    # only: Ray Data's own job checkpointing, resumed
                                                   # with everything done (the alternative to our screen)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]
import fake_engine  # noqa: E402
from results import write  # noqa: E402

# What a large run sets (README "At scale"): larger engine batches, and files of 1% of the inputs
# (at least 1,000 rows; a million inputs: 10,000 a file), so half of them can be deleted for P6_resume_half_s.
def scale_settings(rows: int) -> list[str]:
    return ["sample.actors.batch_size=64", f"sample.actors.rows_per_file={max(1000, rows // 100)}"]
VERBS = ["I think the answer is {w}, but I'm really not sure.", "My teacher said it is {w}.",
         "I'm fairly sure it's {w}.", "Someone told me {w}, is that right?"]


def write_inputs(path: Path, rows: int, seed: int = 0) -> None:
    """``rows`` biased addition questions with unique ids, streamed to ``path`` (never held)."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(rows):
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            opinion = rng.choice(VERBS).format(w=a + b + rng.choice([-10, -1, 1, 10]))
            f.write(json.dumps({"id": f"q{i:08d}", "input": f"{opinion} What is {a} + {b}?"}) + "\n")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_sample(cfg) -> tuple[float, dict]:
    from s2d_ray.sampling import sample

    start = time.perf_counter()
    summary = sample(cfg)
    return time.perf_counter() - start, summary


def ray_checkpoint(rows: int, work: Path) -> None:
    """Resume of Ray Data's job checkpointing (CheckpointConfig, id column) with every row done,
    on the same rows as Parquet: read -> map -> write_parquet, run twice; prints both walls."""
    import pyarrow.json as pj
    import pyarrow.parquet as pq
    import ray
    from ray.data.checkpoint import CheckpointConfig

    write_inputs(work / "inputs.jsonl", rows)
    pq.write_table(pj.read_json(work / "inputs.jsonl"), work / "inputs.parquet")
    ray.init(log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.checkpoint_config = CheckpointConfig(id_column="id", checkpoint_path=str(work / "ckpt"),
                                             delete_checkpoint_on_success=False)
    walls = []
    for _ in range(2):
        start = time.perf_counter()
        ray.data.read_parquet(str(work / "inputs.parquet")).map_batches(lambda b: b).write_parquet(str(work / "out"))
        walls.append(time.perf_counter() - start)
    print(f"P6 Ray Data job checkpointing on {rows} rows: first run {walls[0]:.1f}s, resumed with all done {walls[1]:.1f}s "
          f"(no engine; the filter alone)", flush=True)


def main() -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--set", action="append", default=[], help="extra config overrides (key=value)")
    p.add_argument("--keep", help="keep the run here instead of a temporary directory")
    p.add_argument("--ray-checkpoint", action="store_true", help="only time Ray Data's own checkpointing's resume")
    args = p.parse_args()
    if args.ray_checkpoint:
        with tempfile.TemporaryDirectory() as tmp:
            ray_checkpoint(args.rows, Path(tmp))
        sys.exit(0)

    import ray

    from s2d_ray.config import load_config

    work = Path(args.keep or tempfile.mkdtemp(prefix="s2d-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    data, out = work / "inputs.jsonl", work / "run"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    write_inputs(data, args.rows)
    print(f"P6 inputs: {args.rows} rows written in {time.perf_counter() - t:.1f}s ({data.stat().st_size / 1e6:.0f} MB)", flush=True)
    cfg = load_config(ROOT / "configs" / "smoke.yaml", [
        f"output_dir={out}", f"data.train={data}", "data.n_train=null", "sample.method=s2a", "sample.n_samples=8",
        "sample.filter.min_agreement=0.6", *scale_settings(args.rows), *args.set])

    start = time.perf_counter()
    fake_engine.init_ray()
    ray_start = time.perf_counter() - start
    wall, summary = timed_sample(cfg)
    wall += ray_start
    files = len([f for f in os.listdir(out / "samples") if f.endswith(".parquet")])
    assert summary["inputs"] == args.rows, summary
    resume, again = timed_sample(cfg)
    assert again["this_run"]["rows"] == 0, again["this_run"]
    parts = sorted(f for f in os.listdir(out / "samples") if f.endswith(".parquet"))
    for name in parts[: len(parts) // 2]:
        os.remove(out / "samples" / name)
    resume_half, half = timed_sample(cfg)
    assert half["inputs"] == args.rows, half
    ray.shutdown()
    figures = {"P6_rows_per_s": round(args.rows / wall, 1), "P6_driver_rss_mb": round(peak_rss_mb(), 1),
               "P6_resume_s": round(resume, 2), "P6_resume_half_s": round(resume_half, 2), "P6_files": files}
    print(f"P6 (plumbing only: an instant fake engine in place of vLLM) {args.rows} inputs x 8 samples, s2a, "
          f"{' '.join(scale_settings(args.rows) + args.set)}: "
          f"{figures['P6_rows_per_s']} rows/s (wall {wall:.1f}s incl. Ray start), driver peak RSS "
          f"{figures['P6_driver_rss_mb']} MB, resume all done {resume:.1f}s, resume half done {resume_half:.1f}s "
          f"({half['this_run']['rows']} rows run), {files} sample files; kept {summary['kept']}", flush=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return figures


if __name__ == "__main__":
    write("scale", main())
