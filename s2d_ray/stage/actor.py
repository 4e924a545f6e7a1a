"""The Ray Data actor UDF: one async vLLM engine per actor, every row its own coroutine.

Ray Data calls ``__call__`` for up to ``max_concurrent_batches`` batches at once on the actor's
event loop; their rows all share the engine's continuous batching. ``__call__`` yields rows as
they finish (aligned by ``id``, as ray.data.llm's vLLM stage yields rows by index). Ray Data
2.60 collects an async UDF's yields per batch before passing them on (plan_udf_map_op.py:
"Async generator is unrolled inside the task"), so a batch leaves the actor when its slowest
row is done, and the other batches on the actor are not held back by it: keep batches small
and the concurrent batches many.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any, AsyncIterator

import pyarrow as pa

from s2d_ray.config import EngineConfig
from s2d_ray.engine import Engine
from s2d_ray.errors import EngineDead
from s2d_ray.outputs import RESULT_SCHEMA
from s2d_ray.programs.base import user
from s2d_ray.stage.rows import BusyClock, stream_rows
from s2d_ray.stage.spec import StageSpec


class ProgramStage:
    """``specs`` maps job names to specs that share the model and engine settings, so one engine
    start serves e.g. System 1 and System 2 evaluation; rows name their job in ``job``."""

    def __init__(self, specs: dict[str, dict[str, Any]], progress: Any = None) -> None:
        """``progress``: the driver's s2d_ray.progress board (counts of finished rows), or None."""
        self.progress = progress
        self.specs = {name: StageSpec(**s) for name, s in specs.items()}
        first = next(iter(self.specs.values()))
        cfg = EngineConfig(**first.engine)
        self.engine = Engine(first.model, cfg)
        self.programs = {name: s.program() for name, s in self.specs.items()}
        self.max_model_len = cfg.max_model_len
        self.clock = BusyClock()

    def _prompt_tokens(self, text: str) -> int:
        return len(self.engine.chat_ids(user(text)))

    async def __call__(self, batch: pa.Table) -> AsyncIterator[pa.Table]:
        jobs: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        try:
            async for done in stream_rows(batch.to_pylist(), self.specs, self.programs, self.engine.complete,
                                          self._prompt_tokens, self.max_model_len, self.clock):
                rows = [row for _, row in done]
                for r in rows:
                    counts = jobs[r["job"] or next(iter(self.specs))]
                    counts[0], counts[1] = counts[0] + 1, counts[1] + r["generated_tokens"]
                if self.progress is not None:
                    kept = sum(r["status"] == "kept" for r in rows)  # evaluation's rows are never kept
                    self.progress.add.remote({"rows": len(rows), "tokens": sum(r["generated_tokens"] for r in rows),
                                              **({"kept": kept} if kept else {})})
                yield pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
        except EngineDead as e:
            # Every row on this engine would fail: end the actor, so Ray Data starts a new one and
            # retries its batches there (as after a lost node), and nothing finished is lost.
            print(f"[s2d] WARNING: {e}; restarting this engine actor", flush=True)
            os._exit(1)
        for job, (n, tokens) in jobs.items():
            print(f"[s2d] {job}: {n} rows, {tokens} tokens", flush=True)
