"""Running programs over rows with Ray Data: the plumbing sampling and evaluation share (the
spec of a job, one coroutine per row, the engine actor, resumable sharded output)."""

from s2d_ray.stage.run import StageStats, run_stage
from s2d_ray.stage.spec import StageSpec, refilter, sample_spec

__all__ = ["StageSpec", "StageStats", "refilter", "run_stage", "sample_spec"]
